"""nvpipe against the plain loop a user would write, at 360p, 720p, 1080p and 4K (issue 19).

    python bench/throughput.py [--sizes 360p,720p,1080p,4k] [--pairs 3] [--quick]
                               [--ratio rvm|auto] [--device cpu|cuda] [CLIP]

Clips: the shared real footage (``four_people_1080p.mp4``, looped where short) scaled to
each size (bicubic) and encoded once with libx264 crf 16, cached under ``--cache`` (default
``~/.cache/nvpipe/bench-clips``). Frames per size: ``FRAMES`` (``--quick``: a quarter).

Ratios: RVM's for each size by default (0.75, 0.375, 0.25, 0.125: the network sees
480x270 at every size), or with ``--ratio auto`` nvpipe's automatic ratio
(``min(512 / max(W, H), 1)``); the plain loop is given the same ratio.

Before the first size, nvpipe's modules and the plain loop are compiled to bytecode, as an
installed package is (``compile_bytecode``). Each size: one untimed nvpipe run first (it
fills nvpipe's caches as any first run on a machine does: the ONNX export of the network
and the engine timing, like ``cudnn.benchmark``), then ``--pairs`` interleaved
WHOLE-PROCESS pairs (plain loop, nvpipe, plain loop, nvpipe...; start-up and weights
loading included, as a user sees it), then one nvpipe run with ``--profile`` (per stage ms
per frame, cores busy, queue waits, network GFLOP/s), then ``--pairs`` pairs on a
``STARTUP_FRAMES``-frame clip of the same size: each tool's fixed cost per process
(``startup_seconds``). Reported: each run's fps and cores busy (the child's user+system CPU
over wall time, from ``getrusage(RUSAGE_CHILDREN)``), the median fps of each side, the
ratio of medians and the median of the per-pair ratios (a pair's runs are seconds apart: on
a shared machine their ratio is steadier than either).

The plain loop is ``bench/plain_loop.py``: PyAV decode to rgb24, the official ONNX in ONNX
Runtime with its default threads, composite in NumPy, PyAV libx264 at its defaults.
nvpipe runs ``python -m nvpipe run CLIP OUT --device cpu --ratio R --weights ONNX -y -q``
with everything else at its defaults.

Writes ``throughput-<device>-<N>core.json`` (the command, load averages, machine, every
run) and a PNG plot beside it in ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import numpy as np  # noqa: E402

from rvm import cache_dir  # noqa: E402

DEFAULT_CLIP = REPO.parent / "shared" / "footage" / "four_people_1080p.mp4"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "rvm_mobilenetv3_fp32.onnx"
DEFAULT_CACHE = cache_dir() / "bench-clips"
# name: (width, height, RVM's ratio); every ratio gives the network a 480x270 input.
SIZES = {"360p": (640, 360, 0.75), "720p": (1280, 720, 0.375), "1080p": (1920, 1080, 0.25),
         "4k": (3840, 2160, 0.125)}
# Frames per size: each plain-loop process runs 15-30 s on a quiet 2-core machine (the
# held-out clip the issue names is 237 frames, 38 s at 720p), so a start-up that costs
# nvpipe ~2 s more than the plain loop (torch's import: STARTUP_FRAMES below measures it)
# weighs as it does on a real clip; and the default run (3 pairs, 4 sizes) ends in ~15 min.
FRAMES = {"360p": 240, "720p": 150, "1080p": 80, "4k": 36}
STARTUP_FRAMES = 4  # the fixed cost: whole processes on a clip this short, per size
STAGES = ("decode", "convert", "network", "tail", "encode")
PLAIN, NVPIPE = "plain_loop", "nvpipe"


# ----------------------------------------------------------------------------- clips

def make_clip(source: str, path: str, width: int, height: int, frames: int) -> str:
    """``frames`` frames of ``source`` (looped from its start where it is shorter), scaled
    to ``width x height``, as H.264 yuv420p (libx264 crf 16 ultrafast) at the source's rate."""
    with av.open(source) as inp:
        stream_in = inp.streams.video[0]
        rate = stream_in.average_rate or Fraction(30)
    written = 0
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "16", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        while written < frames:
            with av.open(source) as inp:
                for frame in inp.decode(video=0):
                    scaled = frame.reformat(width=width, height=height, format="yuv420p",
                                            interpolation="BICUBIC")
                    scaled.pts, scaled.time_base = written, Fraction(1) / rate
                    out.mux(stream.encode(scaled))
                    written += 1
                    if written == frames:
                        break
        out.mux(stream.encode())
    return path


def cached_clip(source: str, cache: Path, size: str, frames: int) -> str:
    """``make_clip`` once per (source, size, frames), kept under ``cache``."""
    width, height, _ = SIZES[size]
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{Path(source).stem}-{width}x{height}-{frames}f.mp4"
    if not path.exists():
        partial = path.with_name(f".{path.stem}.{os.getpid()}.mp4")
        make_clip(source, str(partial), width, height, frames)
        os.replace(partial, path)
    return str(path)


# ----------------------------------------------------------------------------- runs

def _environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def command_for(kind: str, clip: str, out: str, ratio: float, weights: str, device: str,
                profile: bool = False) -> list[str]:
    if kind == PLAIN:
        return [sys.executable, str(REPO / "bench" / "plain_loop.py"), clip, out,
                "--ratio", str(ratio), "--weights", weights]
    if profile:  # in one process, to read the figures as JSON
        return [sys.executable, __file__, "--one-profile", clip, "--one-out", out,
                "--one-ratio", str(ratio), "--weights", weights, "--device", device]
    return [sys.executable, "-m", "nvpipe", "run", clip, out, "--device", device,
            "--ratio", str(ratio), "--weights", weights, "-y", "-q"]


def timed_process(command: list[str], frames: int) -> dict:
    """One whole process: wall seconds, fps, and cores busy (its user+system CPU / wall)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=_environment())
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail[:300], "returncode": done.returncode}
    cpu_user = after.ru_utime - before.ru_utime
    cpu_sys = after.ru_stime - before.ru_stime
    result = {"seconds": round(wall, 3), "fps": round(frames / wall, 3),
              "cpu_user_s": round(cpu_user, 2), "cpu_sys_s": round(cpu_sys, 2),
              "cores_busy": round((cpu_user + cpu_sys) / wall, 2),
              "load_1min_after": round(os.getloadavg()[0], 2)}
    lines = done.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        result["reported"] = json.loads(lines[-1])
    return result


def startup_seconds(clip: str, ratio: float, weights: str, device: str, pairs: int,
                    scratch: str) -> dict:
    """Each tool's median whole-process seconds on a ``STARTUP_FRAMES``-frame clip
    (interleaved): start-up, weights, first frames and closing, what a clip of any length
    pays once."""
    out = os.path.join(scratch, "startup.mp4")
    seconds: dict[str, list] = {PLAIN: [], NVPIPE: []}
    for _ in range(pairs):
        for kind in (PLAIN, NVPIPE):
            run = timed_process(command_for(kind, clip, out, ratio, weights, device),
                                STARTUP_FRAMES)
            if "seconds" in run:
                seconds[kind].append(run["seconds"])
    return {kind: round(statistics.median(values), 3) if values else None
            for kind, values in seconds.items()}


def bench_size(clip: str, frames: int, ratio: float, weights: str, device: str, pairs: int,
               scratch: str) -> dict:
    out = os.path.join(scratch, "out.mp4")
    warm = timed_process(command_for(NVPIPE, clip, out, ratio, weights, device), frames)
    runs: dict[str, list] = {PLAIN: [], NVPIPE: []}
    for _ in range(pairs):
        for kind in (PLAIN, NVPIPE):
            runs[kind].append(timed_process(command_for(kind, clip, out, ratio, weights, device),
                                            frames))
    profiled = timed_process(command_for(NVPIPE, clip, out, ratio, weights, device, profile=True),
                             frames)
    result = summarise_pairs(runs)
    result["first_nvpipe_run"] = warm
    result["profile"] = profiled.get("reported", profiled)
    return result


def summarise_pairs(runs: dict[str, list]) -> dict:
    """Medians of each side's fps and cores busy, their ratio, and each pair's ratio."""
    result: dict = {}
    for kind, values in runs.items():
        good = [v for v in values if "fps" in v]
        result[kind] = {
            "fps": round(statistics.median(v["fps"] for v in good), 3) if good else None,
            "cores_busy": round(statistics.median(v["cores_busy"] for v in good), 2) if good else None,
            "runs": values}
    if result[NVPIPE]["fps"] and result[PLAIN]["fps"]:
        result["nvpipe_over_plain"] = round(result[NVPIPE]["fps"] / result[PLAIN]["fps"], 3)
        pairs = [round(ours["fps"] / theirs["fps"], 3)
                 for ours, theirs in zip(runs[NVPIPE], runs[PLAIN])
                 if "fps" in ours and "fps" in theirs]
        result["pair_ratios"] = pairs
        result["median_pair_ratio"] = statistics.median(pairs) if pairs else None
    return result


def one_profile(clip: str, out: str, ratio: float, weights: str, device: str) -> dict:
    """What ``--one-profile`` runs in its own process: nvpipe's defaults plus the profile."""
    from nvpipe.platform.threads import tune_for_pipeline

    tune_for_pipeline()
    from nvpipe import Job, OutputSpec, run

    result = run(Job(input=clip, outputs=[OutputSpec(out)], ratio=ratio, device=device,
                     weights=weights, overwrite=True), profile=True)
    return {"frames": result.frames, "engine": result.engine, "encoders": result.encoders,
            "profile": result.profile}


# ----------------------------------------------------------------------------- report

def machine(device: str) -> dict:
    import onnxruntime
    import torch

    from nvpipe.engine.matting.engines import cpu_model

    facts = {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
             "python": platform.python_version(), "torch": torch.__version__,
             "onnxruntime": onnxruntime.__version__, "pyav": av.__version__, "device": device,
             "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}
    return facts


def plot(report: dict, target: str) -> str:
    """Left: fps of each side per size (median of the pairs), with the ratio. Right: the
    profiled nvpipe run's ms per frame per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(report["sizes"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), dpi=110)
    positions = np.arange(len(sizes))
    for offset, (kind, label, colour) in enumerate(((PLAIN, "plain PyAV + ORT loop", "tab:gray"),
                                                    (NVPIPE, "nvpipe (defaults)", "tab:green"))):
        values = []
        for size in sizes:
            fps = report["sizes"][size].get("end_to_end", {}).get(kind, {}).get("fps")
            values.append(fps if isinstance(fps, (int, float)) else np.nan)
        bars = left.bar(positions + (offset - 0.5) * 0.4, values, 0.4, label=label, color=colour)
        for bar, value in zip(bars, values):
            if not np.isnan(value):
                left.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value),
                              ha="center", va="bottom", fontsize=8)
    labels = []
    for size in sizes:
        row = report["sizes"][size]
        ratio = row.get("end_to_end", {}).get("median_pair_ratio")
        labels.append(f"{size}\n{row['width']}x{row['height']} r={row['ratio']}"
                      + (f"\nnvpipe/plain {ratio:.2f}x" if ratio else ""))
    left.set_xticks(positions, labels, fontsize=8)
    left.set_ylabel("frames per second (whole process)")
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)
    bottom = np.zeros(len(sizes))
    colours = plt.get_cmap("tab10").colors
    for index, stage in enumerate(STAGES):
        values = []
        for size in sizes:
            profile = report["sizes"][size].get("end_to_end", {}).get("profile", {})
            figures = (profile.get("profile") or {}).get("stages", {}).get(stage, {})
            values.append(figures.get("ms_per_frame", 0.0) if isinstance(figures, dict) else 0.0)
        right.bar(positions, values, 0.6, bottom=bottom, label=stage, color=colours[index])
        bottom += np.array(values)
    right.set_xticks(positions, sizes)
    right.set_ylabel("ms per frame, wall, per stage (stages overlap on their threads)")
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)
    facts = report["machine"]
    figure.suptitle(f"nvpipe vs the plain loop ({report['device']}; {facts['cpu']}, "
                    f"{facts['cores']} cores; load {report.get('load_before')}); median of "
                    f"{report['pairs']} interleaved whole-process pairs", fontsize=10)
    figure.tight_layout()
    figure.savefig(target)
    plt.close(figure)
    return target


def _table(report: dict) -> str:
    header = ["size", "ratio", "frames", "plain fps", "nvpipe fps", "pairs", "median", "busy p/n",
              "start p/n s"]
    lines = ["  ".join(f"{h:>10}" for h in header)]
    for size, row in report["sizes"].items():
        e2e = row.get("end_to_end", {})
        cells = [size, row["ratio"], row["frames"], e2e.get(PLAIN, {}).get("fps"),
                 e2e.get(NVPIPE, {}).get("fps"),
                 ",".join(str(r) for r in e2e.get("pair_ratios", [])) or None,
                 e2e.get("median_pair_ratio"),
                 f"{e2e.get(PLAIN, {}).get('cores_busy')}/{e2e.get(NVPIPE, {}).get('cores_busy')}",
                 "/".join(str(s) for s in row.get("startup_seconds", {}).values()) or None]
        lines.append("  ".join(f"{'-' if c is None else c:>10}" for c in cells))
    return "\n".join(lines)


def compile_bytecode() -> None:
    """Both tools' Python as an installed package has it: compiled to bytecode. ``pip
    install`` compiles a package's modules; an editable checkout under
    ``PYTHONDONTWRITEBYTECODE=1`` (this VM's environment) never writes them, so every
    process compiled the changed ones from source again (29 of nvpipe's 72 modules
    here: 0.08 s a run, 7 interleaved pairs)."""
    import compileall

    for folder in ("nvpipe", "kernels", "rvm"):
        compileall.compile_dir(str(REPO / folder), quiet=1)
    compileall.compile_file(str(REPO / "bench" / "plain_loop.py"), quiet=1)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", nargs="?", default=str(DEFAULT_CLIP), help="real footage to scale")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"some of {','.join(SIZES)}")
    parser.add_argument("--frames", type=int, help="frames of every size's clip (default: "
                        + ", ".join(f"{k} {v}" for k, v in FRAMES.items()) + ")")
    parser.add_argument("--pairs", type=int, default=3, help="whole-process pairs per size")
    parser.add_argument("--quick", action="store_true",
                        help="a quarter of the frames and 1 pair (a smoke run, not a measurement)")
    parser.add_argument("--ratio", choices=("rvm", "auto"), default="rvm",
                        help="rvm: 0.75/0.375/0.25/0.125 (default); auto: nvpipe's automatic")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                        help="the official ONNX (the plain loop runs it; nvpipe loads it)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="where scaled clips are kept")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--one-profile", metavar="CLIP", help=argparse.SUPPRESS)
    parser.add_argument("--one-out", help=argparse.SUPPRESS)
    parser.add_argument("--one-ratio", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_profile:  # a child process
        print(json.dumps(one_profile(args.one_profile, args.one_out, args.one_ratio,
                                     args.weights, args.device), default=str))
        return 0
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("throughput: no CUDA GPU is available here (torch.cuda.is_available() is "
                  "False); nothing measured", file=sys.stderr)
            return 2
    for needed, what in ((args.clip, "clip"), (args.weights, "weights")):
        if not os.path.exists(needed):
            print(f"throughput: no {what} at {needed}", file=sys.stderr)
            return 2
    pairs = 1 if args.quick else args.pairs
    command = "python " + " ".join([os.path.relpath(__file__, REPO),
                                    *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "device": args.device, "clip": os.path.basename(args.clip), "pairs": pairs,
              "quick": args.quick, "ratio_policy": args.ratio,
              "load_before": [round(x, 2) for x in os.getloadavg()],
              "machine": machine(args.device), "sizes": {}}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"throughput-{args.device}-{os.cpu_count()}core"
                        + ("-quick" if args.quick else ""))

    def save() -> None:  # after every size: an interrupted run keeps what it measured
        report["load_after"] = [round(x, 2) for x in os.getloadavg()]
        with open(stem + ".json", "w") as handle:
            json.dump(report, handle, indent=2, default=str)

    from nvpipe.job import auto_ratio

    compile_bytecode()
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            width, height, rvm_ratio = SIZES[size]
            ratio = rvm_ratio if args.ratio == "rvm" else round(auto_ratio(width, height), 6)
            frames = args.frames or (max(8, FRAMES[size] // 4) if args.quick else FRAMES[size])
            row = report["sizes"][size] = {"width": width, "height": height, "ratio": ratio,
                                           "frames": frames}
            started = time.perf_counter()
            try:
                clip = cached_clip(args.clip, Path(args.cache), size, frames)
                row["end_to_end"] = bench_size(clip, frames, ratio, args.weights, args.device,
                                               pairs, scratch)
                short = cached_clip(args.clip, Path(args.cache), size, STARTUP_FRAMES)
                row["startup_seconds"] = startup_seconds(short, ratio, args.weights,
                                                         args.device, pairs, scratch)
            except Exception as error:  # noqa: BLE001 - recorded; the rest goes on
                row["end_to_end"] = {"error": f"{type(error).__name__}: {error}"}
            row["seconds"] = round(time.perf_counter() - started, 1)
            e2e = row["end_to_end"]
            print(f"throughput: {size} ({row['seconds']:.0f} s): plain "
                  f"{e2e.get(PLAIN, {}).get('fps')} fps, nvpipe {e2e.get(NVPIPE, {}).get('fps')} "
                  f"fps, pairs {e2e.get('pair_ratios')}", flush=True)
            save()
    print(_table(report))
    try:
        print(f"plot: {os.path.relpath(plot(report, stem + '.png'), REPO)}")
    except ImportError:
        print("throughput: no plot (pip install matplotlib, or the bench extra)", file=sys.stderr)
    print(f"written {os.path.relpath(stem + '.json', REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
