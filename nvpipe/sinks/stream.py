"""Stream outputs: standard output (``-``) and network URLs (udp, srt, rtmp...).

A stream is written as it goes and cannot be taken back, so it has no staging file: the
output policy of ``nvpipe.sinks.outputs`` treats it as ``streamed`` (finished, never placed).
The muxer is ``--format`` (FFmpeg's ``-f``), or for a URL the one its scheme needs:

===================  ==============  ===============================================
format               default codec   notes
===================  ==============  ===============================================
``nut``              rawvideo        RGB24 / RGBA (alpha kept) / GRAY, uncompressed
``yuv4mpegpipe``     rawvideo        ``y4m``: 4:2:0 (composite, foreground) or grey;
                                     no alpha, no timestamps (a constant rate)
``mpegts``           h264            udp://, srt://, tcp://; h264 or hevc
``rtp_mpegts``       h264            rtp://
``flv``              h264            rtmp://, rtmps://
``matroska``         h264            ``mkv``: h264, hevc, vp9 (alpha), rawvideo
===================  ==============  ===============================================

Compressed live outputs take x264/x265's ``zerolatency`` tuning: no B-frames and no
look-ahead, so a frame leaves the encoder when it enters (``veryfast`` otherwise adds
about 40 frames of look-ahead, 1.7 s at 24 fps).
"""

from __future__ import annotations

import sys
from typing import Optional

import av

from nvpipe.errors import OutputError
from nvpipe.frames import StreamInfo, frame_ticks
from nvpipe.job import OutputSpec
from nvpipe.sinks.pyav import ALPHA_KINDS, ENCODERS, PyAVSink, CODEC_ALIASES

STDOUT_NAMES = ("-", "pipe:", "pipe:1", "/dev/stdout")
FORMAT_ALIASES = {"y4m": "yuv4mpegpipe", "mkv": "matroska", "ts": "mpegts"}
STREAM_FORMATS = {  # muxer -> (default codec, codecs it takes)
    "nut": ("rawvideo", ("rawvideo", "h264", "hevc")),
    "yuv4mpegpipe": ("rawvideo", ("rawvideo",)),
    "mpegts": ("h264", ("h264", "hevc")),
    "rtp_mpegts": ("h264", ("h264", "hevc")),
    "flv": ("h264", ("h264",)),
    "matroska": ("h264", ("h264", "hevc", "vp9", "rawvideo")),
}
SCHEME_FORMATS = {"udp": "mpegts", "srt": "mpegts", "tcp": "mpegts", "rtp": "rtp_mpegts",
                  "rtmp": "flv", "rtmps": "flv"}


def is_stream_output(path) -> bool:
    """Standard output or a URL (``scheme://``)."""
    from nvpipe.sources.live import url_scheme

    text = str(path)
    return text in STDOUT_NAMES or (bool(url_scheme(text)) and url_scheme(text) != "file")


def stream_format(path: str, requested: Optional[str]) -> str:
    """The muxer for a stream output: ``requested`` (``--format``), else the URL scheme's.

    Raises:
        OutputError: standard output without ``--format``, an unknown format or scheme.
    """
    from nvpipe.sources.live import url_scheme

    if requested:
        name = FORMAT_ALIASES.get(requested.lower(), requested.lower())
        if name not in STREAM_FORMATS:
            raise OutputError(f"--format {requested} is not a stream format nvpipe writes "
                              f"(use {', '.join(['nut', 'y4m', 'mpegts', 'flv', 'matroska'])})")
        return name
    if str(path) in STDOUT_NAMES:
        raise OutputError("writing to standard output needs --format (nut keeps alpha, y4m, "
                          "mpegts, matroska)")
    scheme = url_scheme(path)
    if scheme not in SCHEME_FORMATS:
        raise OutputError(f"cannot tell the format for {path}: give --format (mpegts, flv...)")
    return SCHEME_FORMATS[scheme]


class StreamSink(PyAVSink):
    """A :class:`~nvpipe.sinks.pyav.PyAVSink` writing to standard output or a URL, as the
    frames come (the contract of ``nvpipe.sinks._base``; ``finish`` ends the stream,
    ``discard`` closes it: nothing sent can be taken back)."""

    streamed = True

    def __init__(self, spec: OutputSpec, info: StreamInfo, *, staging: Optional[str] = None,
                 audio_from: Optional[str] = None, shares_cores_with_network: bool = True,
                 container_format: Optional[str] = None) -> None:
        self.container_format = stream_format(str(spec.path), container_format)
        # Only a file's audio is copied; a stream output takes none (the video's latency
        # would wait on the audio's interleaving).
        super().__init__(spec, info, staging=self._target(str(spec.path)), audio_from=None,
                         shares_cores_with_network=shares_cores_with_network)
        self.path = str(spec.path)

    @staticmethod
    def _target(path: str) -> str:
        if path in STDOUT_NAMES:
            if sys.stdout is not None and sys.stdout.isatty():
                raise OutputError("standard output is a terminal: pipe it into a program "
                                  "(nvpipe run IN - --format nut | ffplay -)")
            return "pipe:1"
        return path

    def _resolve_codec(self, spec: OutputSpec) -> str:
        default, allowed = STREAM_FORMATS[self.container_format]
        name = (spec.codec or default).lower()
        codec = CODEC_ALIASES.get(name)
        if codec is None:
            raise OutputError(f"unknown codec {spec.codec!r} (use one of {', '.join(ENCODERS)})")
        if codec not in allowed:
            raise OutputError(f"{self.container_format} cannot hold {codec} (it takes "
                              f"{', '.join(allowed)})")
        if spec.kind in ALPHA_KINDS and codec != "rawvideo" and codec != "vp9":
            raise OutputError(f"output kind {spec.kind!r} needs alpha: stream it as --format "
                              f"nut (rawvideo RGBA), or use --key for a separate alpha output")
        if spec.kind in ALPHA_KINDS and self.container_format == "yuv4mpegpipe":
            raise OutputError("y4m carries no alpha: use --format nut for RGBA")
        if ENCODERS[codec] not in av.codecs_available:
            raise OutputError(f"the {ENCODERS[codec]} encoder is not in this FFmpeg build")
        return codec

    def _open_container(self, extension: str):
        try:
            return av.open(self._partial, "w", format=self.container_format)
        except av.ProtocolNotFoundError:
            from nvpipe.sources.live import missing_protocol

            raise OutputError(missing_protocol(self._partial, output=True)) from None

    def _write_error(self, error: Exception) -> OutputError:
        if isinstance(error, av.ProtocolNotFoundError):  # opened at the first write
            from nvpipe.sources.live import missing_protocol

            return OutputError(missing_protocol(self.path, output=True))
        return super()._write_error(error)

    def _raw_formats(self, kind: str) -> tuple[str, str, bool]:
        if self.container_format != "yuv4mpegpipe":
            return super()._raw_formats(kind)
        if kind == "alpha":  # y4m "mono": the alpha as full-range luma
            return "gray", "gray", True
        even = self.width % 2 == 0 and self.height % 2 == 0
        return ("nv12" if even else "rgb24"), "yuv420p", False

    def _codec_options(self) -> dict[str, str]:
        return {"tune": "zerolatency"} if self.codec in ("h264", "hevc") else {}

    def write(self, array, pts: int) -> None:
        """As :meth:`PyAVSink.write`, with timestamps made strictly increasing: stream
        muxers (NUT) abort the process on a repeated one, which inputs without real
        timestamps give (every frame at 0)."""
        if self._last_pts is not None and int(pts) <= self._last_pts:
            pts = self._last_pts + frame_ticks(self.fps, self.time_base)
        super().write(array, pts)

    def discard(self) -> None:
        """Closes the stream (what was sent stays sent). Never raises; idempotent."""
        self._finished = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["StreamSink", "is_stream_output", "stream_format", "STREAM_FORMATS", "STDOUT_NAMES"]
