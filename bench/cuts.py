"""Scene cuts: what resetting RVM's memory at a cut buys, and how often the detector fires
where there is no cut.

    python bench/cuts.py [--out bench/results/cuts.json]

1. A clip joined from two different shots (A: the shared 1080p clip, centre-cropped to
   portrait and scaled to 360x640; B: the shared 360x640 clip), matted by
   ``nvpipe.MattingSession`` three ways: joined with the cut reset (the default), joined
   without it (``cut_reset=False``), and B alone from a fresh state (the reference: what
   the network gives B with no memory of A). Per frame after the cut, over the first 30:
   the mean absolute difference of the alpha to the reference's.
2. The detector's histogram distances over every consecutive pair of frames of the shared
   footage (``nvpipe.engine.cuts``, on the network's input as the runner converts it), and the
   frames it takes for cuts.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NVPIPE_SHARED", REPO.parent / "shared"))
FRAMES_AFTER_CUT = 30
# The shared footage's real hard cuts, found by looking at the frames either side (nasa_13013
# also holds a cross-dissolve over frames 127-132, which is not a cut: no reset wanted).
TRUE_CUTS = {"nasa_13013.mp4": [202]}


def rgb_frames(path: str, limit: int | None = None) -> list[torch.Tensor]:
    """A clip's frames as ``[3,H,W]`` float32 RGB, converted as the pipeline does."""
    from nvpipe.engine.convert import Converter
    from nvpipe.sources import open_source

    frames = []
    with open_source(path) as source:
        converter = Converter(source.info, ratio=1.0, device="cpu", dtype=torch.float32)
        for frame in source:
            src, _ = converter(frame)
            frames.append(src.clone())
            if limit is not None and len(frames) == limit:
                break
    return frames


def portrait(frame: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Centre crop to ``width:height`` and scale to that size (antialiased)."""
    _, h, w = frame.shape
    crop_w = round(h * width / height)
    left = (w - crop_w) // 2
    crop = frame[:, :, left:left + crop_w]
    return F.interpolate(crop[None], size=(height, width), mode="bilinear",
                         align_corners=False, antialias=True)[0].clamp(0, 1)


def alphas(frames: list[torch.Tensor], *, cut_reset: bool) -> tuple[list[torch.Tensor], list[int]]:
    from nvpipe import MattingSession

    session = MattingSession(cut_reset=cut_reset)
    out = [session.process(frame).alpha[0].clone() for frame in frames]
    return out, session.cuts


def measure_reset(shot_a: str, shot_b: str, frames_a: int) -> dict:
    b = rgb_frames(shot_b)
    height, width = b[0].shape[1:]
    a = [portrait(frame, width, height) for frame in rgb_frames(shot_a, frames_a)]
    joined = a + b
    started = time.perf_counter()
    with_reset, cuts_found = alphas(joined, cut_reset=True)
    without_reset, _ = alphas(joined, cut_reset=False)
    fresh, _ = alphas(b, cut_reset=False)
    seconds = time.perf_counter() - started
    n = min(FRAMES_AFTER_CUT, len(b))

    def mad(run):
        return [float((run[len(a) + i] - fresh[i]).abs().mean()) for i in range(n)]

    mad_reset, mad_no_reset = mad(with_reset), mad(without_reset)
    return {
        "shot_a": f"{Path(shot_a).name}, first {frames_a} frames, centre-cropped to {width}x{height}",
        "shot_b": Path(shot_b).name,
        "cut_at_frame": len(a),
        "cuts_detected": cuts_found,
        "mad_alpha_per_frame_after_cut": {"with_reset": mad_reset, "without_reset": mad_no_reset},
        "mad_alpha_mean_over_30": {"with_reset": float(np.mean(mad_reset)),
                                   "without_reset": float(np.mean(mad_no_reset))},
        "mad_alpha_first_5": {"with_reset": float(np.mean(mad_reset[:5])),
                              "without_reset": float(np.mean(mad_no_reset[:5]))},
        "seconds": seconds,
    }


def measure_false_cuts(paths: list[str]) -> dict:
    from nvpipe.engine.convert import Converter
    from nvpipe.engine.cuts import CUT_THRESHOLD, CutDetector
    from nvpipe.job import auto_ratio
    from nvpipe.sources import open_source

    clips = {}
    for path in paths:
        with open_source(path) as source:
            width, height = source.info.display_size
            converter = Converter(source.info, ratio=auto_ratio(width, height), device="cpu",
                                  dtype=torch.float32)
            detector = CutDetector(keep_distances=True)
            cuts = [frame.index for frame in source if detector(converter(frame)[1])]
        distances = [d for d in detector.distances if d is not None]
        order = np.argsort(distances)[::-1][:3]
        clips[Path(path).name] = {
            "pairs": len(distances), "cuts": cuts,
            "largest_distances": [{"frame": int(i) + 1, "distance": round(distances[i], 4)}
                                  for i in order],
        }
    pairs = sum(c["pairs"] for c in clips.values())
    fired = sum(len(c["cuts"]) for c in clips.values())
    false = {name: sorted(set(c["cuts"]) - set(TRUE_CUTS.get(name, ()))) for name, c in clips.items()}
    missed = {name: sorted(set(TRUE_CUTS.get(name, ())) - set(c["cuts"])) for name, c in clips.items()}
    return {"threshold": CUT_THRESHOLD, "pairs": pairs, "detections": fired,
            "true_cuts": TRUE_CUTS, "false_detections": sum(map(len, false.values())),
            "missed_cuts": sum(map(len, missed.values())), "clips": clips}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "cuts.json"))
    parser.add_argument("--frames-a", type=int, default=40, help="frames of shot A before the cut")
    args = parser.parse_args()
    footage = SHARED / "footage"
    if not footage.is_dir():
        sys.exit(f"no shared footage at {footage}")
    result = {
        "command": "python bench/cuts.py",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}, CPU",
        "reset": measure_reset(str(footage / "four_people_1080p.mp4"),
                               str(footage / "person_fullbody_360x640.mp4"), args.frames_a),
        "false_cuts": measure_false_cuts(sorted(glob.glob(str(footage / "*.mp4")))
                                         + sorted(glob.glob(str(footage / "color" / "*")))),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    reset = result["reset"]
    print(f"cut at {reset['cut_at_frame']}, detected {reset['cuts_detected']}; alpha MAD vs a "
          f"fresh start, mean of 30 frames after the cut: with reset "
          f"{reset['mad_alpha_mean_over_30']['with_reset']:.5f}, without "
          f"{reset['mad_alpha_mean_over_30']['without_reset']:.5f}")
    false = result["false_cuts"]
    print(f"detections: {false['detections']} in {false['pairs']} frame pairs, "
          f"{false['false_detections']} false, {false['missed_cuts']} true cuts missed")


if __name__ == "__main__":
    main()
