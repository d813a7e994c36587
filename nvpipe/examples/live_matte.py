"""Live matting with ``nvpipe.MattingSession``: what a broadcast tool embeds.

Reads a camera or a stream (any input FFmpeg opens: ``udp://``, ``srt://``, ``rtsp://``,
``/dev/video0`` with ``--input-format v4l2``), mattes each frame, and writes the result
live: RGBA in NUT to standard output (``-``, for ``ffplay -`` or another program) or the
composite as MPEG-TS to a URL.

    python -m nvpipe.examples.live_matte udp://127.0.0.1:5000 - | ffplay -
    python -m nvpipe.examples.live_matte /dev/video0 udp://127.0.0.1:6000 --input-format v4l2

A reader thread keeps only the newest frame (``nvpipe.engine.pacing.LatestFrames``), so when
matting is slower than the source, frames are dropped rather than queued: latency stays
bounded. At the end it prints the frames matted, dropped, and the per-call latency.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import av
import numpy as np


def read_newest(container, mailbox, stop: threading.Event) -> None:
    """Decodes ``container``'s video into ``mailbox`` (newest kept), until it ends."""
    try:
        for frame in container.decode(video=0):
            mailbox.put((time.monotonic(), frame.to_ndarray(format="rgb24"), frame.pts))
            if stop.is_set():
                break
    except av.FFmpegError:  # a read timeout, or the stream went away: the end
        pass
    finally:
        mailbox.close()


def open_output(target: str, width: int, height: int, rate: int):
    """(container, stream, pixel format): NUT rawvideo RGBA for ``-``, else H.264 MPEG-TS."""
    if target == "-":
        container = av.open("pipe:1", "w", format="nut")
        stream = container.add_stream("rawvideo", rate=rate)
        stream.pix_fmt = "rgba"
        fmt = "rgba"
    else:
        container = av.open(target, "w", format="mpegts")
        stream = container.add_stream("libx264", rate=rate,
                                      options={"tune": "zerolatency", "preset": "veryfast"})
        stream.pix_fmt = "yuv420p"
        fmt = "rgb24"
    stream.width, stream.height = width, height
    return container, stream, fmt


def main(argv=None) -> int:
    from nvpipe import MattingSession
    from nvpipe.engine.pacing import LatestFrames

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="a camera or stream URL")
    parser.add_argument("output", help="- (NUT RGBA on standard output) or a URL (MPEG-TS)")
    parser.add_argument("--input-format", help="as ffmpeg -f (v4l2, mpegts...)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--ratio", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds without data that end the input")
    args = parser.parse_args(argv)

    source = av.open(args.input, format=args.input_format, timeout=args.timeout)
    stream = source.streams.video[0]
    rate = round(float(stream.average_rate or 30))
    session = MattingSession(device=args.device, ratio=args.ratio)
    mailbox, stop = LatestFrames(1), threading.Event()
    reader = threading.Thread(target=read_newest, args=(source, mailbox, stop), daemon=True)
    reader.start()
    sink = None
    matted = 0
    try:
        for arrival, rgb, pts in mailbox.drain(stop):
            matte = session.process(rgb)
            if sink is None:
                height, width = rgb.shape[:2]
                sink, out_stream, fmt = open_output(args.output, width, height, rate)
                first_pts = pts or 0
            if fmt == "rgba":
                picture = (matte.rgba() * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            else:
                picture = (matte.composite((0.0, 1.0, 0.0)) * 255).round().byte()
                picture = picture.permute(1, 2, 0).cpu().numpy()
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format=fmt)
            frame.pts = round(((pts or 0) - first_pts) * float(stream.time_base) * rate)
            for packet in out_stream.encode(frame):
                sink.mux(packet)
            matted += 1
    except KeyboardInterrupt:
        stop.set()
    finally:
        if sink is not None:
            for packet in out_stream.encode(None):
                sink.mux(packet)
            sink.close()
        reader.join(timeout=args.timeout + 1)
    latency = session.latency()
    timing = (f"; matting p50 {latency[0] * 1000:.0f} ms, p99 {latency[1] * 1000:.0f} ms"
              if latency else "")
    print(f"matted {matted} frames, dropped {mailbox.dropped} of {mailbox.received}{timing}; "
          f"scene cuts at {session.cuts or 'none'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
