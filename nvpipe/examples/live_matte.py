"""Live matting with ``nvpipe.MattingSession``: what a broadcast tool embeds.

Reads a camera or a stream (any input FFmpeg opens: ``udp://``, ``rtsp://``, ``/dev/video0``
with ``--input-format v4l2``; or a file), mattes each frame, and writes the result: RGBA in
NUT to standard output (``-``, for ``ffplay -`` or another program), the composite as
MPEG-TS to a URL, or the composite to a video file (``out.mp4``).

    python -m nvpipe.examples.live_matte udp://127.0.0.1:5000 - | ffplay -
    python -m nvpipe.examples.live_matte /dev/video0 udp://127.0.0.1:6000 --input-format v4l2
    python -m nvpipe.examples.live_matte udp://127.0.0.1:5000 recording.mp4

A reader thread decodes ahead of the matting, paced as ``nvpipe run`` paces
(``nvpipe.engine.pacing.choose_pacing``): a live input written to a live output (``-``,
a URL) keeps only the newest frame, so when matting is slower than the source, frames
are dropped rather than queued and latency stays bounded; a live input recorded to a file
keeps every frame (buffered up to ``NVPIPE_RECORD_BUFFER_MB``); a file input waits for
the matting and keeps every frame. At the end it prints the frames matted, dropped, and
the per-call latency.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import av
import numpy as np


def read_frames(container, mailbox, stop: threading.Event) -> None:
    """Decodes ``container``'s video into ``mailbox`` (which keeps, waits or drops as its
    pacing says), until it ends."""
    def put(frame) -> None:
        mailbox.put((time.monotonic(), frame.to_ndarray(format="rgb24"), frame.pts))

    try:
        for frame in container.decode(video=0):
            put(frame)
            if stop.is_set():
                return
    except av.FFmpegError:  # a read timeout, or the stream went away: the end
        try:  # the frames the decoder still holds (a clean end flushes them itself)
            for frame in container.streams.video[0].codec_context.decode(None):
                put(frame)
        except av.FFmpegError:
            pass
    finally:
        mailbox.close()


def open_output(target: str, width: int, height: int, rate: int):
    """(container, stream, pixel format): NUT rawvideo RGBA for ``-``, H.264 MPEG-TS for a
    URL, H.264 in the container of a file's extension."""
    from nvpipe.sinks import is_stream_output

    if target == "-":
        container = av.open("pipe:1", "w", format="nut")
        stream = container.add_stream("rawvideo", rate=rate)
        stream.pix_fmt = "rgba"
        fmt = "rgba"
    elif not is_stream_output(target):
        container = av.open(target, "w")
        stream = container.add_stream("libx264", rate=rate, options={"preset": "veryfast"})
        stream.pix_fmt = "yuv420p"
        fmt = "rgb24"
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
    from nvpipe.engine.pacing import WaitingFrames, choose_pacing
    from nvpipe.sources.live import locate_input

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="a camera or stream URL")
    parser.add_argument("output", help="- (NUT RGBA on standard output), a URL (MPEG-TS) or "
                                           "a video file")
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
    stop = threading.Event()
    pacing = choose_pacing(locate_input(args.input, input_format=args.input_format).live,
                           [args.output])
    mailbox = pacing.receive_buffer() if pacing.live else WaitingFrames(4, stop)
    reader = threading.Thread(target=read_frames, args=(source, mailbox, stop), daemon=True)
    reader.start()
    sink = None
    matted = 0
    last_pts = -1
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
            # The source's time on the output's 1/rate grid, kept increasing (a file whose
            # frames carry no timestamps, or two frames on one tick, must not repeat one).
            out_pts = round(((pts or 0) - first_pts) * float(stream.time_base) * rate)
            frame.pts = last_pts = out_pts if out_pts > last_pts else last_pts + 1
            for packet in out_stream.encode(frame):
                sink.mux(packet)
            matted += 1
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
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
