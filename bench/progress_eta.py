"""How good the progress bar's time left is: one real run, the estimate at each frame against
the time the run really had left, for nvpipe.app.progress (recent frames) and for the whole-run
average it replaced (``(total - done) / (done / elapsed)``, warm-up included).

    python bench/progress_eta.py IN [--ratio R] [--out bench/results/progress-eta.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("--ratio", type=float, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import nvpipe.app.cli  # noqa: F401 - the CLI's threading set-up before torch
    from nvpipe.job import Job, OutputSpec
    from nvpipe.app.progress import ProgressBar
    from nvpipe.engine.runner import run

    bar = ProgressBar("eta", stream=io.StringIO())
    samples = []

    def progress(done, total, elapsed):
        bar(done, total, elapsed)
        average = (total - done) / (done / elapsed) if total and elapsed > 0 else None
        samples.append((done, total, elapsed, bar.seconds_left(), average))

    job = Job(input=args.input, outputs=[OutputSpec(os.devnull, kind="composite")],
              ratio=args.ratio)
    started = time.perf_counter()
    result = run(job, progress=progress)
    end = samples[-1][2]
    rows = []
    for done, total, elapsed, recent, average in samples:
        truth = end - elapsed
        rows.append({"done": done, "elapsed_s": round(elapsed, 3), "truly_left_s": round(truth, 3),
                     "recent_frames_left_s": None if recent is None else round(recent, 3),
                     "whole_run_average_left_s": None if average is None else round(average, 3)})

    def ratio_at(fraction, key):
        row = rows[max(0, int(len(rows) * fraction) - 1)]
        return None if not row[key] or not row["truly_left_s"] else round(row[key] / row["truly_left_s"], 2)

    summary = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), CPU pipeline",
        "input": args.input, "frames": result.frames, "seconds": round(time.perf_counter() - started, 2),
        "first_frame_at_s": rows[0]["elapsed_s"],
        "estimate_over_truth": {f"after {int(f * 100)}% of frames": {
            "recent_frames": ratio_at(f, "recent_frames_left_s"),
            "whole_run_average": ratio_at(f, "whole_run_average_left_s")}
            for f in (0.05, 0.1, 0.2, 0.5)},
        "rows": rows,
    }
    text = json.dumps(summary, indent=1)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
