"""The subject tracker's CPU per frame, one version against another, and whether their keep
masks are identical (issue 20).

    python bench/subject_ab.py OLD_SUBJECT_PY [NEW_SUBJECT_PY] [--rounds 5] [--frames 40] [--made]

e.g. ``git show HEAD~1:nvpipe/engine/subject.py > /tmp/old.py; python bench/subject_ab.py
/tmp/old.py`` (NEW defaults to this checkout's ``nvpipe/engine/subject.py``).

The network runs once over the first ``--frames`` frames of the shared
``four_people_1080p.mp4`` at its automatic ratio (512x288), and each frame's low-resolution
alpha and colours, as ``SubjectSelector`` hands them to ``SubjectTracker.step``, are kept.
Then both trackers replay them, alternating, ``--rounds`` times, keeping the plaid shirt
(``bench/subject.py``'s point); with ``--made`` the made cases too (crossing, occluded...,
50 frames each: the hard ones for the tracker). CPU time per frame (one core: the tracker is
single-threaded), the first frame left out. Reported per case: each round's figures, the
ratio of the fastest rounds, every round's ratio, and whether the two trackers' keep masks
and labels were equal on every frame; then the fastest rounds' sum over the cases. Both run
in the same process, interleaved, so a machine whose speed drifts
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


def recorded_cases(frames: int, made: bool) -> dict:
    """name -> ``(spec, (width, height), [(pha, rgb, cut)])``: each frame's arguments to
    ``SubjectTracker.step`` as ``SubjectSelector`` passes them, from ``four_people``'s first
    ``frames`` frames and, with ``made``, every made case of ``bench/subject.py``."""
    from nvpipe.engine import subject as current

    cases, recording = {}, []
    init, step = current.SubjectTracker.__init__, current.SubjectTracker.step

    def recording_init(tracker, spec, input_size):
        init(tracker, spec, input_size)
        recording[:] = [(spec, input_size, [])]

    def recording_step(tracker, pha, rgb, cut=False):
        recording[0][2].append((pha.copy(), rgb.copy(), cut))
        return step(tracker, pha, rgb, cut)

    current.SubjectTracker.__init__, current.SubjectTracker.step = recording_init, recording_step
    try:
        network = bench.load_network()
        bench.run_case(network, bench.decode(bench.FOUR, frames), bench.FOUR_SUBJECT)
        cases["four_people"] = recording[0]
        if made:
            layers = bench.person_layers(network, 50)
            for kind in bench.MADE_CASES:
                clip, truth, whole, point = bench.made_case(kind, layers, 50)
                bench.run_case(network, clip, point, truth=truth, whole=whole)
                cases[kind] = recording[0]
    finally:
        current.SubjectTracker.__init__, current.SubjectTracker.step = init, step
    return cases


def load_version(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def replay(module, spec, size, steps) -> tuple[float, np.ndarray, np.ndarray]:
    """CPU ms per frame (the first frame left out), the keep masks and the labels."""
    tracker = module.SubjectTracker(spec, size)
    tracker.step(*steps[0])
    masks, labels = [], []
    started = time.process_time()
    for pha, rgb, cut in steps[1:]:
        masks.append(tracker.step(pha, rgb, cut).copy())
        labels.append(tracker.labels.copy())
    return ((time.process_time() - started) / (len(steps) - 1) * 1000, np.stack(masks),
            np.stack(labels))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default=str(REPO / "nvpipe" / "engine" / "subject.py"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--made", action="store_true",
                        help="also the made cases of bench/subject.py (50 frames each)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = recorded_cases(args.frames, args.made)
    versions = {"old": load_version(args.old, "subject_old"),
                "new": load_version(args.new, "subject_new")}
    report = {"command": "python bench/subject_ab.py " + " ".join(argv or sys.argv[1:]),
              "cases": {}}
    for case, (spec, size, steps) in cases.items():
        ms = {name: [] for name in versions}
        outputs = {}
        for _ in range(args.rounds):
            for name, module in versions.items():
                cost, *outputs[name] = replay(module, spec, size, steps)
                ms[name].append(round(cost, 1))
        report["cases"][case] = {
            "frames": len(steps), "size": list(size), "cpu_ms_per_frame": ms,
            "ratio_of_fastest": round(min(ms["new"]) / min(ms["old"]), 3),
            "round_ratios": [round(n / o, 3) for o, n in zip(ms["old"], ms["new"])],
            "identical_keep_masks": bool(np.array_equal(outputs["old"][0], outputs["new"][0])),
            "identical_labels": bool(np.array_equal(outputs["old"][1], outputs["new"][1]))}
        print(case, json.dumps(report["cases"][case]), flush=True)
    old_total = sum(min(c["cpu_ms_per_frame"]["old"]) for c in report["cases"].values())
    new_total = sum(min(c["cpu_ms_per_frame"]["new"]) for c in report["cases"].values())
    report["ratio_of_fastest_summed"] = round(new_total / old_total, 3)
    report["all_identical"] = all(c["identical_keep_masks"] and c["identical_labels"]
                                  for c in report["cases"].values())
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
