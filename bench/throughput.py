"""Throughput of nvpipe by stage and size, against a plain PyAV + ONNX Runtime loop.

    python bench/throughput.py [--device cpu|cuda] [--sizes 360p,720p,1080p,4k] [--frames 30]
                               [--pairs 3] [CLIP]

For each size the shared 1080p clip (real footage, looped where short) is scaled and
encoded once (libx264, crf 16), then measured on the same frames:

- per stage, in this process on frames held in memory: decode (PyAV on the CPU, NVDEC on
  CUDA), convert (NV12 -> RGB + downsample), the network (``MattingStage``: FP32 eager on
  the CPU, FP16 under CUDA graphs on CUDA), the tail (composite over green straight to NV12),
  the CPU encoder (libx264 at the sink's default preset, crf and thread count);
- end to end, file to file, as interleaved WHOLE-PROCESS pairs (start-up and weights
  loading included, as a user sees it): ``nvpipe.run`` vs the plain loop (PyAV decode ->
  ONNX Runtime, the official export -> composite -> PyAV encode, same encoder settings).
  The median of the pairs is reported, with every run.

The network input is 480x270 at every size (ratios 0.75, 0.375, 0.25, 0.125), so the sizes
differ only in their full-resolution work. Writes ``throughput-<device>-<N>core.json`` (the
command, machine, GPU name and driver, every figure) and a PNG plot of fps per stage and
size beside it. On a machine without CUDA, ``--device cuda`` exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from nvpipe.platform.threads import tune_for_pipeline  # noqa: E402

tune_for_pipeline()  # the same threading environment `nvpipe run` uses, before torch loads

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_CLIP = REPO.parent / "shared" / "footage" / "four_people_1080p.mp4"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "rvm_mobilenetv3_fp32.onnx"
# name: (width, height, ratio); every ratio gives the network a 480x270 input.
SIZES = {"360p": (640, 360, 0.75), "720p": (1280, 720, 0.375), "1080p": (1920, 1080, 0.25),
         "4k": (3840, 2160, 0.125)}
STAGES = ("decode", "convert", "network", "tail", "encode")


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


# ----------------------------------------------------------------------------- stages

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fps(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def _open_source(path: str, device: torch.device):
    """NVDEC on CUDA (PyAV where it cannot run, said in ``decoder``), PyAV on the CPU."""
    from nvpipe.sources.pyav import PyAVSource

    if device.type == "cuda":
        try:
            from nvpipe.sources.nvdec import NvdecSource

            return NvdecSource(path), "nvdec"
        except Exception as error:  # noqa: BLE001 - measured on the CPU decoder instead
            return PyAVSource(path), f"pyav (NVDEC unavailable: {str(error).splitlines()[0][:120]})"
    return PyAVSource(path), "pyav"


def bench_stages(path: str, ratio: float, device: torch.device, frames: int,
                 weights: Optional[str]) -> dict:
    """fps of each stage alone, on the first ``frames`` frames of ``path``."""
    import rvm
    from nvpipe import kernels
    from nvpipe.engine.convert import Converter
    from nvpipe.engine.matting import MattingStage
    from nvpipe.engine.runner import default_dtype
    from nvpipe.sinks.pyav import DEFAULT_QUALITY, encoder_threads

    dtype = default_dtype(device.type)
    result: dict = {}
    source, result["decoder"] = _open_source(path, device)
    info = source.info
    decoded, keep = 0, []
    with source, torch.inference_mode():
        converter = Converter(info, ratio=ratio, device=device, dtype=dtype, ring_size=2 * frames + 4)  # two buffers a frame
        started = time.perf_counter()
        for frame in source:
            # NVDEC frames are borrowed: keep converted copies (the convert stage is re-timed below).
            keep.append(frame if frame.release is None else None)
            if frame.release is not None:
                keep[-1] = converter(frame)
                frame.release()
            decoded += 1
            if decoded == frames:
                break
        _sync(device)
        decode_seconds = time.perf_counter() - started
    # NVDEC's timing above includes the conversion (its frames cannot be held); noted.
    result["decode"] = _fps(decoded, decode_seconds)
    if result["decoder"] == "nvdec":
        result["decode_note"] = "NVDEC + convert (borrowed frames)"
        converted = keep
        result["convert"] = None
    else:
        started = time.perf_counter()
        with torch.inference_mode():
            converted = [converter(frame) for frame in keep]
        _sync(device)
        result["convert"] = _fps(len(converted), time.perf_counter() - started)

    network = rvm.load(weights, device=device.type, dtype=dtype) if weights else \
        rvm.fuse(rvm.MattingNetwork("mobilenetv3").eval()).to(device=device, dtype=dtype)
    if device.type == "cpu":
        network = rvm.optimize_for_cpu(network)
    stage = MattingStage(network, ratio=ratio, device=device, dtype=dtype)
    small_shape = (1, *converted[0][1].shape)
    stage.prepare(small_shape)
    coefficients = []
    with torch.inference_mode():
        stage(converted[0][1][None])  # warm-up (allocator, cuDNN)
        stage.reset()
        _sync(device)
        started = time.perf_counter()
        for _, src_sm in converted:
            coeff_a, coeff_b = stage(src_sm[None])
            coefficients.append((coeff_a[0].clone(), coeff_b[0].clone()))
        _sync(device)
        result["network"] = _fps(len(converted), time.perf_counter() - started)

        out = torch.empty(info.height + (info.height + 1) // 2, 2 * ((info.width + 1) // 2),
                          dtype=torch.uint8, device=device)
        nv12 = []
        started = time.perf_counter()
        for (src, _), (coeff_a, coeff_b) in zip(converted, coefficients):
            kernels.matting_tail_nv12(coeff_a, coeff_b, src, output="composite",
                                      background=(0.0, 1.0, 0.0), out=out)
            nv12.append(out.cpu().numpy() if device.type == "cuda" else out.numpy().copy())
        _sync(device)
        result["tail"] = _fps(len(converted), time.perf_counter() - started)

    preset, crf = DEFAULT_QUALITY["h264"]
    threads = encoder_threads(shares_cores_with_network=device.type == "cpu")
    result["encoder"] = {"codec": "libx264", "preset": preset, "crf": crf, "threads": threads}
    yuv = [av.VideoFrame.from_ndarray(plane, format="nv12").reformat(format="yuv420p")
           for plane in nv12]
    with tempfile.TemporaryDirectory() as scratch, \
            av.open(os.path.join(scratch, "e.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": preset, "crf": str(crf)})
        stream.codec_context.thread_count = threads
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, "yuv420p"
        started = time.perf_counter()
        for index, frame in enumerate(yuv):
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        result["encode"] = _fps(len(yuv), time.perf_counter() - started)
    return result


# ----------------------------------------------------------------------------- end to end

def ort_session(weights: str):
    import onnxruntime

    return onnxruntime.InferenceSession(weights, providers=["CPUExecutionProvider"])


def baseline_loop(path: str, out: str, weights: str, ratio: float, encoder: dict) -> int:
    """The plain way: PyAV decode -> ONNX Runtime -> composite -> PyAV encode, one loop."""
    session = ort_session(weights)
    state = [np.zeros((1, 1, 1, 1), dtype=np.float32)] * 4
    green = np.array([0, 1, 0], dtype=np.float32).reshape(1, 3, 1, 1)
    frames = 0
    with av.open(path) as inp, av.open(out, "w") as container:
        video = inp.streams.video[0]
        stream = container.add_stream(encoder["codec"], rate=video.average_rate,
                                      options=encoder["options"])
        stream.codec_context.thread_count = encoder["threads"]
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for frame in inp.decode(video):
            src = frame.to_ndarray(format="rgb24").transpose(2, 0, 1)[None].astype(np.float32)
            src /= 255
            fgr, pha, *state = session.run(None, {
                "src": src, "r1i": state[0], "r2i": state[1], "r3i": state[2], "r4i": state[3],
                "downsample_ratio": np.array([ratio], dtype=np.float32)})
            composite = fgr * pha + green * (1 - pha)
            rgb = (composite[0].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
            out_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            out_frame.pts, out_frame.time_base = frame.pts, frame.time_base
            container.mux(stream.encode(out_frame))
            frames += 1
        container.mux(stream.encode())
    return frames


def one_process(kind: str, path: str, out: str, ratio: float, device: str, weights: str) -> dict:
    """What a child process runs (``--one KIND``): one whole conversion; returns its figures."""
    started = time.perf_counter()
    if kind == "nvpipe":
        from nvpipe import Job, OutputSpec, run

        result = run(Job(input=path, outputs=[OutputSpec(out)], ratio=ratio, device=device,
                         weights=weights, overwrite=True))
        frames, encoders = result.frames, result.encoders
    else:
        from nvpipe.sinks.pyav import DEFAULT_QUALITY, encoder_threads

        preset, crf = DEFAULT_QUALITY["h264"]
        encoders = {"codec": "libx264", "options": {"preset": preset, "crf": str(crf)},
                    "threads": encoder_threads(shares_cores_with_network=True)}
        frames = baseline_loop(path, out, weights, ratio, encoders)
    return {"frames": frames, "seconds_in_process": round(time.perf_counter() - started, 3),
            "encoders": encoders}


def bench_pairs(path: str, ratio: float, device: str, weights: str, pairs: int) -> dict:
    """Interleaved whole-process pairs: nvpipe, then the plain loop, ``pairs`` times."""
    runs: dict[str, list] = {"nvpipe": [], "pyav_onnxruntime_loop": []}
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in range(pairs):
            for kind in runs:
                out = os.path.join(scratch, f"{kind}{attempt}.mp4")
                command = [sys.executable, __file__, "--one", kind, path, "--one-out", out,
                           "--ratio", str(ratio), "--device", device, "--weights", weights]
                started = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                wall = time.perf_counter() - started
                if done.returncode != 0:
                    tail = (done.stderr.strip().splitlines() or ["?"])[-1]
                    runs[kind].append({"error": tail[:300]})
                    continue
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                figures["process_seconds"] = round(wall, 3)
                figures["fps"] = _fps(figures["frames"], wall)
                runs[kind].append(figures)
    return summarise_pairs(runs)


def summarise_pairs(runs: dict[str, list]) -> dict:
    """Medians of each side's fps, their ratio, and the ratio within each pair (the two runs
    of a pair are seconds apart: on a shared machine their ratio is steadier than either)."""
    result: dict = {}
    for kind, values in runs.items():
        good = [v["fps"] for v in values if "fps" in v]
        result[kind] = {"fps": round(statistics.median(good), 2) if good else None, "runs": values}
    if result["nvpipe"]["fps"] and result["pyav_onnxruntime_loop"]["fps"]:
        result["nvpipe_over_loop"] = round(result["nvpipe"]["fps"]
                                           / result["pyav_onnxruntime_loop"]["fps"], 2)
        pairs = [round(ours["fps"] / theirs["fps"], 2)
                 for ours, theirs in zip(runs["nvpipe"], runs["pyav_onnxruntime_loop"])
                 if "fps" in ours and "fps" in theirs]
        result["pair_ratios"] = pairs
        result["median_pair_ratio"] = statistics.median(pairs) if pairs else None
    return result


# ----------------------------------------------------------------------------- report

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    from nvpipe.platform.telemetry import nvml_driver_version

    facts = {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
             "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
             "torch": torch.__version__, "pyav": av.__version__, "device": device,
             "gpu": None, "driver": None}
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["driver"] = nvml_driver_version()
    return facts


def plot(report: dict, target: str) -> str:
    """A grouped bar chart: fps (log scale) per stage and end to end, one group per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(report["sizes"])
    series = [(stage, stage) for stage in STAGES] + [
        ("nvpipe end to end", "nvpipe"), ("PyAV + ORT loop end to end", "pyav_onnxruntime_loop")]
    figure, axes = plt.subplots(figsize=(11, 5.5), dpi=110)
    width = 0.8 / len(series)
    colours = plt.get_cmap("tab10").colors
    for index, (label, key) in enumerate(series):
        values = []
        for size in sizes:
            row = report["sizes"][size]
            value = row.get("stages", {}).get(key) if key in STAGES else \
                row.get("end_to_end", {}).get(key, {}).get("fps")
            values.append(value if isinstance(value, (int, float)) and value > 0 else np.nan)
        positions = np.arange(len(sizes)) + (index - (len(series) - 1) / 2) * width
        hatch = "//" if key in ("nvpipe", "pyav_onnxruntime_loop") else None
        bars = axes.bar(positions, values, width, label=label, color=colours[index % 10],
                        hatch=hatch, edgecolor="white" if hatch else None)
        for bar, value in zip(bars, values):
            if not np.isnan(value):
                axes.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, value),
                              ha="center", va="bottom", fontsize=6.5, rotation=90,
                              xytext=(0, 2), textcoords="offset points")
    labels = []
    for size in sizes:
        row = report["sizes"][size]
        ratio = row.get("end_to_end", {}).get("nvpipe_over_loop")
        labels.append(f"{size} ({row['width']}x{row['height']}, r={row['ratio']})"
                      + (f"\nnvpipe/loop {ratio:.2f}x" if ratio else ""))
    axes.set_xticks(np.arange(len(sizes)), labels)
    axes.set_yscale("log")
    axes.set_ylabel("frames per second (log scale)")
    facts = report["machine"]
    where = (f"{facts['gpu']}, driver {facts['driver']}" if facts.get("gpu")
             else f"CPU only: {facts['cpu']}, {facts['cores']} cores")
    axes.set_title(f"nvpipe throughput by stage and size ({report['device']}; {where})\n"
                   f"{report['clip']}, {report['frames']} frames a size; end to end: median of "
                   f"{report['pairs']} whole-process pair(s)"
                   + (f"\n{report['note'].split(':')[0]}" if report.get("note") else ""), fontsize=10)
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    figure.tight_layout()
    figure.savefig(target)
    plt.close(figure)
    return target


def _table(report: dict) -> str:
    header = ["size", *STAGES, "nvpipe e2e", "loop e2e", "ratio"]
    lines = ["  ".join(f"{h:>10}" for h in header)]
    for size, row in report["sizes"].items():
        stages, e2e = row.get("stages", {}), row.get("end_to_end", {})
        cells = [size, *(stages.get(s) for s in STAGES), e2e.get("nvpipe", {}).get("fps"),
                 e2e.get("pyav_onnxruntime_loop", {}).get("fps"), e2e.get("nvpipe_over_loop")]
        lines.append("  ".join(f"{'-' if c is None else c:>10}" for c in cells))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", nargs="?", default=str(DEFAULT_CLIP), help="real footage to scale")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"some of {','.join(SIZES)}")
    parser.add_argument("--frames", type=int, default=30, help="frames of each size's clip")
    parser.add_argument("--stage-frames", type=int, default=12, help="frames timed per stage")
    parser.add_argument("--pairs", type=int, default=3, help="whole-process pairs per size")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                        help="ONNX weights (the plain loop needs the ONNX export)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--ratio", type=float, help=argparse.SUPPRESS)  # --one only
    parser.add_argument("--one", choices=("nvpipe", "loop", "pyav_onnxruntime_loop"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--one-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind = "nvpipe" if args.one == "nvpipe" else "loop"
        print(json.dumps(one_process(kind, args.clip, args.one_out, args.ratio, args.device,
                                     args.weights), default=str))
        return 0
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("throughput: no CUDA GPU is available here (torch.cuda.is_available() is False); "
              "nothing measured", file=sys.stderr)
        return 2
    for needed, what in ((args.clip, "clip"), (args.weights, "weights")):
        if not os.path.exists(needed):
            print(f"throughput: no {what} at {needed}", file=sys.stderr)
            return 2
    device = torch.device(args.device)
    command = "python " + " ".join([os.path.relpath(__file__, REPO),
                                    *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "device": args.device, "clip": os.path.basename(args.clip), "frames": args.frames,
              "stage_frames": args.stage_frames, "pairs": args.pairs,
              "machine": machine(args.device), "sizes": {}}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"throughput-{args.device}-{os.cpu_count()}core")

    def save() -> None:  # after every size: an interrupted run keeps what it measured
        with open(stem + ".json", "w") as handle:
            json.dump(report, handle, indent=2, default=str)

    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            width, height, ratio = SIZES[size]
            row = report["sizes"][size] = {"width": width, "height": height, "ratio": ratio}
            clip = make_clip(args.clip, os.path.join(scratch, f"{size}.mp4"), width, height,
                             args.frames)
            for key, measure in (
                    ("stages", lambda: bench_stages(clip, ratio, device,
                                                    min(args.stage_frames, args.frames),
                                                    args.weights)),
                    ("end_to_end", lambda: bench_pairs(clip, ratio, args.device, args.weights,
                                                       args.pairs))):
                started = time.perf_counter()
                try:
                    row[key] = measure()
                except Exception as error:  # noqa: BLE001 - recorded; the rest goes on
                    row[key] = {"error": f"{type(error).__name__}: {error}"}
                print(f"throughput: {size} {key} ({time.perf_counter() - started:.0f} s): "
                      f"{json.dumps(row[key], default=str)[:300]}", flush=True)
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
