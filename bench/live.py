"""Live conversion figures: the shared clips streamed over loopback UDP in real time.

    python bench/live.py [--loops 3] [--out bench/results/live.json]

For each clip a sender (``bench/stream_clip.py``: MPEG-TS, packets when their timestamps
fall due) streams it ``--loops`` times to ``udp://127.0.0.1:PORT`` while
``nvpipe.engine.runner.run`` converts the stream live to an MP4 (composite, automatic ratio, the
CLI's defaults but ``--live``: a file output would otherwise be a recording that keeps every
frame, and this measures the dropping pacing's latency). Reported per clip: frames sent, received, written and dropped (oldest
first), the processing rate (frames written per second from the first arrival to the
last write) and the latency of each written frame from its arrival at nvpipe to its write
into the output returning (p50, p99).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

from nvpipe.platform.threads import tune_for_pipeline

tune_for_pipeline()  # the threading environment `nvpipe run` uses, before torch loads

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NVPIPE_SHARED", REPO.parent / "shared"))
CLIPS = ("person_fullbody_360x640.mp4", "four_people_1080p.mp4")


def _sender():
    """bench/stream_clip.py as a module (bench/ is a folder of scripts)."""
    spec = importlib.util.spec_from_file_location("stream_clip", REPO / "bench" / "stream_clip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(clip: Path, loops: int, folder: Path) -> dict:
    import av

    from nvpipe import Job, OutputSpec, run

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        size, rate, frames = f"{stream.width}x{stream.height}", float(stream.average_rate), stream.frames
    streamer = _sender()
    port = streamer.free_udp_port()
    sent = {}
    sender = threading.Thread(target=lambda: sent.update(n=streamer.stream_clip(
        str(clip), f"udp://127.0.0.1:{port}", loops=loops, start_delay=1.0)), daemon=True)
    out = folder / f"{clip.stem}.mp4"
    job = Job(input=f"udp://127.0.0.1:{port}?fifo_size=50000&overrun_nonfatal=1",
              outputs=[OutputSpec(str(out))], timeout=3, live=True)
    sender.start()
    started = time.perf_counter()
    result = run(job)
    sender.join()
    live = result.live
    with av.open(str(out)) as container:
        in_file = sum(1 for _ in container.decode(video=0))
    return {
        "clip": clip.name, "size": size, "fps_of_stream": rate,
        "seconds_streamed": round(loops * frames / rate, 2),
        "frames_sent": sent.get("n"), "frames_received": live.received,
        "frames_written": live.written, "frames_in_output_file": in_file,
        "frames_dropped": live.dropped,
        "processing_fps": round(live.fps, 2),
        "latency_ms_p50": round(live.latency_p50 * 1000, 1),
        "latency_ms_p99": round(live.latency_p99 * 1000, 1),
        "run_seconds": round(time.perf_counter() - started, 2),
        "notes": result.notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "live.json"))
    args = parser.parse_args()
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in CLIPS:
            clip = SHARED / "footage" / name
            if not clip.exists():
                sys.exit(f"{clip} is absent")
            rows.append(measure(clip, args.loops, Path(folder)))
            print(json.dumps(rows[-1]))
    result = {
        "command": f"python bench/live.py --loops {args.loops}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__} (CPU), {torch.get_num_threads()} threads",
        "clips": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
