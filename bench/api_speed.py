"""The Python entry points against the CLI on the same job, side by side in one run.

Each entry point runs in a fresh process (so each gets its own threading set-up, as a user's
script would), interleaved over ``--pairs`` rounds; the median fps of each is reported.

- ``cli``: ``nvpipe run IN OUT.mp4``;
- ``convert_video``: ``import nvpipe; nvpipe.convert_video(...)`` to the same file type;
- ``convert_video_torch_first``: the same after ``import torch`` (OpenMP's wait policy is
  fixed by then: what nvpipe cannot set for a script that imports torch first);
- ``cli_null`` and ``session``: ``nvpipe run IN /dev/null`` against ``MattingSession.process``
  over the same frames decoded beforehand (neither encodes; the session does not decode).

    python bench/api_speed.py --json bench/results/api-speed.json
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOOTAGE = REPO.parent / "shared" / "footage" / "four_people_1080p.mp4"

CONVERT = """
import sys, time
{preamble}
import nvpipe
convert_video = nvpipe.convert_video  # imports torch, PyAV...: outside the timer, as for the CLI
start = time.perf_counter()
result = convert_video(input_source=sys.argv[1], output_composition=sys.argv[2],
                       progress=False, device="cpu")
print(result.frames / (time.perf_counter() - start))
"""

SESSION = """
import sys, time
import av
import nvpipe
session = nvpipe.MattingSession(device="cpu")
with av.open(sys.argv[1]) as container:
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
session.process(frames[0])
session.reset()
start = time.perf_counter()
for frame in frames:
    session.process(frame)
print(len(frames) / (time.perf_counter() - start))
"""


def make_clip(path: Path, width: int, height: int, frames: int) -> None:
    import av

    with av.open(str(FOOTAGE)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "16", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == frames:
                break
            scaled = frame.reformat(width=width, height=height, format="yuv420p")
            scaled.pts = None
            out.mux(stream.encode(scaled))
        out.mux(stream.encode())


def _timed_cli(clip: Path, out: str) -> float:
    """The fps the CLI's summary reports: its run, weights loading included, as
    ``convert_video``'s timer includes them."""
    done = subprocess.run([sys.executable, "-m", "nvpipe.app.cli", "run", str(clip), out,
                           "--overwrite", "--device", "cpu"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    summary = done.stderr.strip().splitlines()[-1]  # "nvpipe: N frames in S s (F fps on cpu, ..."
    return float(summary.split("(")[1].split(" fps")[0])


def _script(code: str, *args) -> float:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    weights = REPO.parent / "shared" / "weights" / "rvm_mobilenetv3_fp32.onnx"
    if weights.exists():
        os.environ.setdefault("NVPIPE_WEIGHTS", str(weights))
    env_note = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        clip = folder / "clip.mp4"
        make_clip(clip, width, height, args.frames)
        runs = {name: [] for name in ("cli", "convert_video", "convert_video_torch_first",
                                      "cli_null", "session")}
        for _ in range(args.pairs):
            runs["cli"].append(_timed_cli(clip, str(folder / "cli.mp4")))
            runs["convert_video"].append(_script(CONVERT.format(preamble=""), clip,
                                                 folder / "api.mp4"))
            runs["convert_video_torch_first"].append(
                _script(CONVERT.format(preamble="import torch"), clip, folder / "api2.mp4"))
            runs["cli_null"].append(_timed_cli(clip, os.devnull))
            runs["session"].append(_script(SESSION, clip))
            for name in ("api.mp4", "api2.mp4"):
                (folder / name).unlink(missing_ok=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    report = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "size": args.size, "frames": args.frames, "pairs": args.pairs, "env": env_note,
        "fps": runs, "median_fps": medians,
        "ratio_to_cli": {name: medians[name] / medians["cli"] for name in
                         ("convert_video", "convert_video_torch_first")},
        "session_to_cli_null": medians["session"] / medians["cli_null"],
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
