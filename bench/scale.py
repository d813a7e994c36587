"""Aggregate fps of a batch: ``--jobs 1`` against ``--jobs N`` and a local Ray, side by side.

    python bench/scale.py [--clips 4] [--frames 25] [--size 360x640] [--jobs 2] [--rounds 2]
                          [--device cpu|cuda] [--json bench/results/scale-cpu.json]

Four short clips of real footage (the shared 360x640 clip, each from another offset) are
converted by the real command, ``nvpipe run CLIPS OUT --quiet``, as whole processes (start-up,
weights and worker start included, as a user sees it): ``--jobs 1``, ``--jobs N``, and
``--cluster auto`` (a Ray started by the command on this machine, loopback only), in
interleaved rounds so that load from other processes falls on every mode alike. Aggregate
fps = all frames / wall time. The median of the rounds is reported, with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NVPIPE_SHARED", REPO.parent / "shared"))


def make_clips(folder: Path, count: int, frames: int, size: tuple[int, int]) -> int:
    """The clips; returns the frames written (the source has 50)."""
    import av

    written = 0
    source = SHARED / "footage" / "person_fullbody_360x640.mp4"
    step = 8
    for number in range(count):
        start = (number * step) % 25
        with av.open(str(source)) as inp, av.open(str(folder / f"clip{number}.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=24, options={"crf": "16", "preset": "fast"})
            stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
            for index, frame in enumerate(inp.decode(video=0)):
                if index >= start + frames:
                    break
                if index >= start:
                    small = frame.reformat(width=size[0], height=size[1], format="yuv420p")
                    small.pts = None
                    out.mux(stream.encode(small))
                    written += 1
            out.mux(stream.encode())
    return written


def run_mode(mode: list[str], clips: Path, work: Path, device: str, ratio: str) -> dict:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, NVPIPE_DEVICE=device, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nvpipe.app.cli", "run", str(clips), str(out),
                           "--ratio", ratio, "--quiet", *mode],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(mode)} failed:\n{done.stderr}")
    return {"wall_s": round(wall, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--size", default="360x640", help="WxH of the clips")
    parser.add_argument("--ratio", default="0.5")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray mode")
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "scale-cpu.json"))
    args = parser.parse_args()
    size = tuple(int(part) for part in args.size.lower().split("x"))
    modes = {"jobs 1": ["--jobs", "1"], f"jobs {args.jobs}": ["--jobs", str(args.jobs)]}
    ray = None
    if not args.no_ray:
        # A Ray already running, as on a cluster: started here (loopback, its processes
        # ours, shut down at the end); the command connects to it.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        import logging

        import ray

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 logging_level=logging.WARNING)
        modes["ray (running already)"] = ["--cluster", ray.get_runtime_context().gcs_address]
    try:
        report = measure(args, modes, size)
    finally:
        if ray is not None:
            ray.shutdown()
    if not args.no_ray:
        # `--cluster auto` starting its own Ray: measured after, alone (with the Ray above
        # running, auto would join it), so not interleaved with the others.
        auto = measure(args, {"jobs 1": modes["jobs 1"],
                              "ray (local, started by the command)": ["--cluster", "auto"]}, size)
        report["separately: --cluster auto starting its own Ray"] = {
            key: auto[key] for key in ("aggregate_fps_median", "speed_up_vs_jobs_1", "runs")}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["aggregate_fps_median"]), json.dumps(report["speed_up_vs_jobs_1"]))
    return 0


def measure(args, modes: dict, size) -> dict:
    with tempfile.TemporaryDirectory(prefix="nvpipe-scale-") as temporary:
        work = Path(temporary)
        clips = work / "clips"
        clips.mkdir()
        frames = make_clips(clips, args.clips, args.frames, size)
        runs: dict[str, list] = {name: [] for name in modes}
        for round_number in range(args.rounds):
            order = list(modes) if round_number % 2 == 0 else list(reversed(modes))
            for name in order:
                result = run_mode(modes[name], clips, work, args.device, args.ratio)
                result["fps"] = round(frames / result["wall_s"], 2)
                runs[name].append(result)
                print(f"round {round_number + 1} {name}: {result['wall_s']} s, "
                      f"{result['fps']} fps", flush=True)
    medians = {name: statistics.median(r["fps"] for r in results) for name, results in runs.items()}
    base = medians["jobs 1"]
    return {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "clips": args.clips, "frames_per_clip": args.frames, "size": args.size,
        "ratio": args.ratio, "device": args.device, "total_frames": frames,
        "aggregate_fps_median": {name: round(fps, 2) for name, fps in medians.items()},
        "speed_up_vs_jobs_1": {name: round(fps / base, 2) for name, fps in medians.items()},
        "runs": runs,
        "note": "whole processes (start-up, weights, worker start included); rounds "
                "interleaved, order reversed every other round; other processes shared the "
                "machine while this ran",
    }


if __name__ == "__main__":
    sys.exit(main())
