"""Stream a clip over the network in real time, as a live source would: the tests' and
``bench/live.py``'s sender (an FFmpeg-less ``ffmpeg -re -i CLIP -c copy -f mpegts URL``).

    python bench/stream_clip.py CLIP udp://127.0.0.1:5000 [--loops N] [--format mpegts]

The clip's packets are remuxed without re-encoding and sent when their timestamps fall
due; ``--loops`` sends it again after itself (timestamps continued), for longer runs.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from fractions import Fraction
from typing import Optional

import av


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing holds now (the receiver binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stream_clip(clip: str, url: str, *, loops: int = 1, container_format: str = "mpegts",
                realtime: bool = True, stop: Optional[threading.Event] = None,
                start_delay: float = 0.0) -> int:
    """Sends ``clip``'s video packets to ``url``; returns how many frames were sent."""
    if url.startswith("udp://") and "pkt_size" not in url:
        url += ("&" if "?" in url else "?") + "pkt_size=1316"  # 7 TS packets a datagram
    stop = stop or threading.Event()
    source = av.open(clip)
    video = source.streams.video[0]
    sink = av.open(url, "w", format=container_format)
    try:
        out = sink.add_stream_from_template(video)
        time_base = Fraction(video.time_base)
        frame_ticks = round(1 / (Fraction(video.average_rate) * time_base))
        time.sleep(start_delay)
        started = time.monotonic()
        offset = 0  # ticks added to each loop's timestamps
        sent = 0
        for _ in range(loops):
            source.seek(0)
            first = None
            last = 0
            for packet in source.demux(video):
                if packet.dts is None or stop.is_set():
                    continue
                if first is None:
                    first = packet.dts
                pts = packet.pts - first + offset
                due = started + float(pts * time_base)
                if realtime and due > time.monotonic():
                    time.sleep(due - time.monotonic())
                packet.pts, packet.dts = pts, packet.dts - first + offset
                last = max(last, pts)
                packet.stream = out
                sink.mux(packet)
                sent += 1
            offset = last + frame_ticks
            if stop.is_set():
                break
    finally:
        sink.close()
        source.close()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("url")
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--format", default="mpegts")
    args = parser.parse_args()
    sent = stream_clip(args.clip, args.url, loops=args.loops, container_format=args.format)
    print(f"sent {sent} frames to {args.url}")


if __name__ == "__main__":
    main()
