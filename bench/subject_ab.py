"""The subject tracker's CPU per frame, one version against another, and whether their keep
masks are identical (issue 20).

    python bench/subject_ab.py OLD_SUBJECT_PY [NEW_SUBJECT_PY] [--rounds 5] [--frames 40]

e.g. ``git show HEAD~1:nvpipe/engine/subject.py > /tmp/old.py; python bench/subject_ab.py
/tmp/old.py`` (NEW defaults to this checkout's ``nvpipe/engine/subject.py``).

The network runs once over the first ``--frames`` frames of the shared
``four_people_1080p.mp4`` at its automatic ratio (512x288), and each frame's low-resolution
alpha and colours, as ``SubjectSelector`` hands them to ``SubjectTracker.step``, are kept.
Then both trackers replay them, alternating, ``--rounds`` times, keeping the plaid shirt
(``bench/subject.py``'s point): CPU time per frame (one core: the tracker is
single-threaded), the first frame left out. Reported: each round's figures, the ratio of the
fastest rounds, every round's ratio, and whether the two trackers' keep masks were equal on
every frame. Both run in the same process, interleaved, so a machine whose speed drifts
between minutes (this 2-core VM: up to 25%) drifts for both.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import subject as bench  # noqa: E402 - bench/subject.py: the clip, the point, the network


def recorded_steps(frames: int) -> tuple[list, tuple[int, int]]:
    """``(pha, rgb)`` per frame, as ``SubjectSelector`` passes them to the tracker, and the
    input's (width, height)."""
    from nvpipe.engine import subject as current
    from nvpipe.engine.convert import downsample
    from nvpipe.engine.matting import MattingStage
    from nvpipe.job import auto_ratio, subject_spec

    clip = bench.decode(bench.FOUR, frames)
    height, width = clip[0].shape[:2]
    ratio = auto_ratio(width, height)
    stage = MattingStage(bench.load_network(), ratio=ratio, device="cpu", dtype=torch.float32)
    selector = current.SubjectSelector(subject_spec(bench.FOUR_SUBJECT), (width, height))
    steps = []
    step = selector.tracker.step

    def recording(pha, rgb, cut=False):
        steps.append((pha.copy(), rgb.copy()))
        return step(pha, rgb, cut)

    selector.tracker.step = recording
    with torch.inference_mode():
        for rgb in clip:
            src = bench._tensor(rgb)
            small = downsample(src, ratio)
            coeff_a, coeff_b = stage(small[None], [src])
            selector(coeff_a[0], coeff_b[0], small)
    return steps, (width, height)


def load_version(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def replay(module, steps, size) -> tuple[float, np.ndarray]:
    """CPU ms per frame (the first frame left out) and the keep masks."""
    from nvpipe.job import subject_spec

    tracker = module.SubjectTracker(subject_spec(bench.FOUR_SUBJECT), size)
    tracker.step(*steps[0])
    masks = []
    started = time.process_time()
    for pha, rgb in steps[1:]:
        masks.append(tracker.step(pha, rgb).copy())
    return (time.process_time() - started) / (len(steps) - 1) * 1000, np.stack(masks)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default=str(REPO / "nvpipe" / "engine" / "subject.py"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps, size = recorded_steps(args.frames)
    versions = {"old": load_version(args.old, "subject_old"),
                "new": load_version(args.new, "subject_new")}
    ms = {name: [] for name in versions}
    masks = {}
    for _ in range(args.rounds):
        for name, module in versions.items():
            cost, masks[name] = replay(module, steps, size)
            ms[name].append(round(cost, 1))
    report = {"command": "python bench/subject_ab.py " + " ".join(argv or sys.argv[1:]),
              "frames": len(steps), "size": list(size), "cpu_ms_per_frame": ms,
              "ratio_of_fastest": round(min(ms["new"]) / min(ms["old"]), 3),
              "round_ratios": [round(n / o, 3) for o, n in zip(ms["old"], ms["new"])],
              "identical_keep_masks": bool(np.array_equal(masks["old"], masks["new"]))}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
