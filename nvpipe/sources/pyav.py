"""Video files decoded on the CPU with PyAV (FFmpeg), frame-threaded.

Every frame comes out as planar 4:2:0 in the layouts of ``docs/design.md``:

- 8-bit 4:2:0 (``yuv420p``, ``yuvj420p``, ``nv12``) -> ``"nv12"`` uint8 ``(H + ceil(H/2), P)``
  with ``P = 2 * ceil(W / 2)``, built straight from the decoder's planes (one copy, the
  chroma interleaved by a strided numpy write: ~0.3 ms a frame at 1080p).
- more than 8 bits 4:2:0 -> ``"p016"`` uint16, same layout, values shifted to the top bits
  (a 10-bit ``v`` is stored as ``v << 6``).
- anything else (4:2:2, 4:4:4, RGB, grey, palettes) -> converted with swscale to 4:2:0
  first (same range and matrix for YUV; RGB-family inputs become full-range BT.709).

Odd sizes: FFmpeg's chroma planes hold ``ceil(W/2) x ceil(H/2)`` samples; the last luma
column (``W`` odd) is repeated into the padding column ``P - 1`` so the frame is
deterministic, and consumers ignore it.

Damaged input rule: every frame that decodes is yielded (a packet that fails to decode is
skipped, as FFmpeg's command line does); afterwards ``damage`` says how many frames were
lost, and why (packets that failed, a container that declares more frames than it holds,
a demuxer that stopped), or is None. A file cut exactly at a packet boundary in a
container that declares no frame count (Matroska, WebM) cannot be told from a complete one.
"""

from __future__ import annotations

import os
import stat
from fractions import Fraction
from typing import Iterator, Optional

import av
import numpy as np
import torch

from nvpipe.errors import InputError
from nvpipe.frames import ColorSpec, DecodedFrame, StreamInfo, frame_ticks, untagged_color

# FFmpeg AVColorSpace values (libavutil/pixfmt.h) -> the matrices the kernels implement.
_MATRIX_BY_COLORSPACE = {
    1: "bt709",  # BT709
    4: "bt601",  # FCC (close to BT.601)
    5: "bt601",  # BT470BG
    6: "bt601",  # SMPTE170M
    7: "bt709",  # SMPTE240M (close to BT.709)
    9: "bt2020",  # BT2020_NCL
    10: "bt2020",  # BT2020_CL (treated as NCL)
}
_RANGE_LIMITED, _RANGE_FULL = 1, 2  # AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG

_DIRECT_8BIT = ("yuv420p", "yuvj420p")
_DIRECT_HIGH = {"yuv420p9le": 9, "yuv420p10le": 10, "yuv420p12le": 12, "yuv420p14le": 14,
                "yuv420p16le": 16}
_SEMIPLANAR = {"nv12": 8, "p010le": 10, "p012le": 12, "p016le": 16}  # already MSB aligned


def color_of(frame: av.VideoFrame, codec_context, height: int) -> ColorSpec:
    """Matrix and range of a decoded frame, falling back to the stream's tags, then to
    :func:`~nvpipe.frames.untagged_color`. ``yuvj*`` pixel formats mean full range."""
    space = frame.colorspace if frame.colorspace not in (None, 2) else codec_context.colorspace
    matrix = _MATRIX_BY_COLORSPACE.get(int(space or 2), untagged_color(height).matrix)
    color_range = frame.color_range or codec_context.color_range
    if color_range in (_RANGE_LIMITED, _RANGE_FULL):
        full = color_range == _RANGE_FULL
    else:
        full = frame.format.name.startswith("yuvj")
    return ColorSpec(matrix, full)


def _component_bits(frame_format) -> int:
    return max(c.bits for c in frame_format.components)


def _plane_array(plane, dtype, rows: int, cols: int) -> np.ndarray:
    """A numpy view ``(rows, cols)`` of a frame plane (no copy; valid while the frame lives)."""
    itemsize = np.dtype(dtype).itemsize
    flat = np.frombuffer(plane, dtype=dtype)
    stride = plane.line_size // itemsize
    return flat[: (flat.size // stride) * stride].reshape(-1, stride)[:rows, :cols]


def frame_to_planar420(frame: av.VideoFrame, reformatter=None) -> tuple[torch.Tensor, str, int]:
    """Copies a decoded frame into the nv12/p016 layout of ``docs/design.md``.

    Args:
        frame: any decoded PyAV video frame, ``W x H``.
        reformatter: an ``av.video.reformatter.VideoReformatter`` reused across frames for
            the formats that need swscale (created when None).

    Returns:
        ``(data, pix_fmt, bit_depth)``: ``data`` a CPU tensor, uint8 ``(H + ceil(H/2), P)``
        for ``"nv12"`` or uint16 of the same shape for ``"p016"`` (MSB-aligned),
        ``P = 2 * ceil(W / 2)``; rows ``0..H-1`` are luma, the rest interleaved U, V.
    """
    name = frame.format.name
    if name not in _DIRECT_8BIT and name not in _DIRECT_HIGH and name not in _SEMIPLANAR:
        frame, name = _to_yuv420(frame, reformatter)
    width, height = frame.width, frame.height
    chroma_w, chroma_h = (width + 1) // 2, (height + 1) // 2
    pitch = 2 * chroma_w
    if name in _SEMIPLANAR:
        bits = _SEMIPLANAR[name]
        dtype = np.uint8 if bits == 8 else np.uint16
        out = np.empty((height + chroma_h, pitch), dtype)
        out[:height, :width] = _plane_array(frame.planes[0], dtype, height, width)
        out[height:] = _plane_array(frame.planes[1], dtype, chroma_h, pitch)
    else:
        bits = 8 if name in _DIRECT_8BIT else _DIRECT_HIGH[name]
        dtype = np.uint8 if bits == 8 else np.uint16
        out = np.empty((height + chroma_h, pitch), dtype)
        shift = 0 if bits == 8 else 16 - bits
        luma = _plane_array(frame.planes[0], dtype, height, width)
        u = _plane_array(frame.planes[1], dtype, chroma_h, chroma_w)
        v = _plane_array(frame.planes[2], dtype, chroma_h, chroma_w)
        uv = out[height:].reshape(chroma_h, chroma_w, 2)
        if shift:
            np.left_shift(luma, shift, out=out[:height, :width])
            np.left_shift(u, shift, out=uv[..., 0])
            np.left_shift(v, shift, out=uv[..., 1])
        else:
            out[:height, :width] = luma
            uv[..., 0] = u
            uv[..., 1] = v
    if pitch > width:  # odd width: repeat the last column into the padding column
        out[:height, width:] = out[:height, width - 1 : width]
    return torch.from_numpy(out), ("nv12" if bits == 8 else "p016"), bits


def _to_yuv420(frame: av.VideoFrame, reformatter) -> tuple[av.VideoFrame, str]:
    """swscale to 4:2:0 of the same bit depth (8 or 10/12 bits). YUV keeps its range and
    matrix (no colour conversion, only chroma resampling); RGB, grey and palette inputs
    become full-range BT.709 (``color_of`` then reads the tags set here)."""
    from av.video.reformatter import VideoReformatter

    reformatter = reformatter or VideoReformatter()
    bits = _component_bits(frame.format)
    target = "yuv420p" if bits <= 8 else ("yuv420p10le" if bits <= 10 else "yuv420p12le")
    is_yuv = not frame.format.is_rgb and len(frame.format.components) >= 3
    if is_yuv:
        full = frame.format.name.startswith("yuvj") or frame.color_range == _RANGE_FULL
        if full and target == "yuv420p":
            target = "yuvj420p"
        rng = _RANGE_FULL if full else _RANGE_LIMITED
        out = reformatter.reformat(frame, format=target, src_color_range=rng,
                                   dst_color_range=rng, threads=1)
    else:
        out = reformatter.reformat(frame, format=target, dst_colorspace="itu709",
                                   src_color_range=_RANGE_FULL, dst_color_range=_RANGE_FULL,
                                   threads=1)
        out.colorspace = 1
        out.color_range = _RANGE_FULL
    return out, target


class PyAVSource:
    """A video decoded by FFmpeg on the CPU (first video stream): a file, or any input of
    ``nvpipe.sources.live`` (standard input, a named pipe, an FFmpeg URL, a device).

    The first frame is decoded on opening, so an input that opens but cannot decode fails
    here, and ``info`` carries the rotation and colour read from that frame.

    Args:
        path: the input (a file is never modified).
        threads: decoder threads, 0 for FFmpeg's automatic count (frame + slice threads).
        input_format: the demuxer or device (FFmpeg's ``-f``: ``mpegts``, ``v4l2``...);
            None probes.
        input_options: demuxer/protocol options (FFmpeg's ``-option value``).
        timeout: seconds without data after which a stream input ends (end of stream, with
            a note); None: a pipe waits for its writer, a URL for
            ``DEFAULT_URL_TIMEOUT``. Files ignore it.
        live: override ``locate_input``'s default (see ``nvpipe.sources.live``).
        stop: an event that ends a blocked read of a pipe (the run's stop flag).

    Iterating yields :class:`DecodedFrame` in presentation order (``data`` as in
    :func:`frame_to_planar420`, ``pts`` the stream's own, ``time_base`` the stream's; a
    live input's timestamps start at 0), once; then ``damage`` is None, or says what could
    not be decoded (see the module docstring). Live inputs lose packets as a matter of
    course: for them losses are ``notes``, not ``damage``, and so is how the stream ended.
    Raises :class:`InputError` on a missing, non-video or undecodable input.
    """

    damage: Optional[str] = None

    def __init__(self, path: str, *, threads: int = 0, input_format: Optional[str] = None,
                 input_options: Optional[dict] = None, timeout: Optional[float] = None,
                 live: Optional[bool] = None, stop=None) -> None:
        from nvpipe.sources.live import locate_input

        self.path = str(path)
        self.location = locate_input(self.path, live=live, input_format=input_format)
        self.live = self.location.live
        self.notes: list[str] = []
        self._reader = None
        self._stdin_file = None
        self._read_timed_out = False
        if self.location.is_file:
            if not os.path.exists(self.path):
                raise InputError(f"input not found: {self.path}")
            if not os.path.isfile(self.path):
                raise InputError(f"input is not a file: {self.path}")
        self._timeout = timeout
        self._container = self._open_container(input_format, dict(input_options or {}),
                                               timeout, stop)
        try:
            self._open_stream(threads)
        except BaseException:
            self.close()
            raise

    def _open_container(self, input_format, options: dict, timeout, stop):
        """``av.open`` for each kind of input (``nvpipe.sources.live``)."""
        from nvpipe.sources.live import DEFAULT_URL_TIMEOUT, PipeReader, open_fifo

        location = self.location
        kind = location.kind
        target = self.path
        kwargs: dict = {"metadata_errors": "ignore"}
        if input_format:
            if input_format not in av.formats_available:
                raise InputError(f"--input-format {input_format}: this FFmpeg has no such "
                                 f"format (`ffmpeg -formats` lists them: mpegts, matroska, "
                                 f"nut, ...)")
            kwargs["format"] = input_format
        if options:
            kwargs["options"] = options
        if kind == "stdin" and stat.S_ISREG(os.fstat(0).st_mode):
            # `< clip.mp4`: a file after all, so seekable (an MP4's index may be at its end).
            target = self._stdin_file = os.fdopen(os.dup(0), "rb")
        elif kind in ("stdin", "pipe"):
            try:
                fd = 0 if kind == "stdin" else open_fifo(self.path)
            except OSError as error:
                raise InputError(f"cannot open {self.path} ({error.strerror})") from None
            name = "standard input" if kind == "stdin" else self.path
            self._reader = target = PipeReader(fd, timeout=timeout, stop=stop, name=name)
        elif kind == "url":
            self._timeout = timeout if timeout is not None else DEFAULT_URL_TIMEOUT
            kwargs["timeout"] = self._timeout
        elif kind == "device":
            kwargs.setdefault("format", "v4l2")
            if kwargs["format"] not in av.formats_available:
                raise InputError(f"this FFmpeg build has no {kwargs['format']} input, so "
                                 f"{self.path} cannot be read (PyAV's wheels carry no capture "
                                 f"devices: stream the camera with ffmpeg to udp:// or a pipe)")
        try:
            container = av.open(target, **kwargs)
        except av.ProtocolNotFoundError:
            from nvpipe.sources.live import missing_protocol

            raise InputError(missing_protocol(self.path)) from None
        except av.FFmpegError as error:
            if self._reader is not None:
                self._reader.close()
                self._reader.raise_interrupt()
            if self._reader is not None and self._reader.timed_out:
                raise InputError(f"no data from {self._reader.name} within {timeout:g} s") from None
            if self._reader is not None and self._reader.bytes_read == 0:
                raise InputError(f"{self._reader.name} was empty: no data came before its "
                                 f"end") from None
            if kind == "url" and isinstance(error, av.ExitError):
                raise InputError(f"no data from {self.path} within {self._timeout:g} s "
                                 f"(--timeout sets how long to wait)") from None
            what = "a readable video file" if location.is_file else "a readable video stream"
            raise InputError(f"not {what}: {self.path} ({_reason(error)}){self._pipe_hint()}") from None
        if self._reader is not None:
            try:
                self._reader.raise_interrupt()
            except BaseException:
                container.close()
                raise
        return container

    def _pipe_hint(self) -> str:
        if self._reader is None:
            return ""
        return ("; an MP4 or MOV whose index is at its end cannot be read from a pipe: pipe "
                "MPEG-TS, Matroska or NUT, or give the file")

    def _open_stream(self, threads: int) -> None:
        container = self._container
        attached = av.stream.Disposition.attached_pic
        videos = [s for s in container.streams.video if not (s.disposition & attached)]
        if not videos:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise InputError(f"no video stream in {self.path} (it holds {', '.join(kinds)})")
        stream = self._stream = videos[0]
        if stream.codec_context is None:  # an unknown or damaged codec (a fuzzed header)
            what = "a readable video file" if self.location.is_file else "a readable video stream"
            raise InputError(f"not {what}: {self.path} (its video stream names no codec "
                             f"FFmpeg can decode)")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        self._time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        self._declared_frames = stream.frames or None
        self._reformatter = None
        self._frames = self._decode()
        first = next(self._frames, None)
        if self._reader is not None:
            self._reader.raise_interrupt()
        if first is None:
            raise InputError(f"no video frame could be decoded from {self.path}{self._pipe_hint()}")
        cc = stream.codec_context
        self._color = color_of(first, cc, first.height)
        self._first = first
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(30)
        duration = None
        if stream.duration:
            duration = float(stream.duration * self._time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        rotation = first.rotation or 0  # counter-clockwise, FFmpeg's display matrix angle
        self.info = StreamInfo(
            path=self.path,
            width=first.width,
            height=first.height,
            fps=Fraction(fps),
            time_base=self._time_base,
            frame_count=self._declared_frames,
            color=self._color,
            bit_depth=_component_bits(first.format),
            codec=cc.name,
            rotation=(-90 * round(rotation / 90)) % 360,  # clockwise to apply for display
            has_audio=bool(container.streams.audio) and self.location.is_file,
            duration=duration if self.location.is_file else None,
            live=self.live,
        )
        if container.streams.audio and not self.location.is_file:
            self.notes.append(f"the audio of {self.path} is not carried (only a file's "
                              f"audio is copied into the outputs)")
        self._frame_ticks = frame_ticks(fps, self._time_base)
        # Live streams start mid-way (MPEG-TS clocks start anywhere): outputs start at 0.
        self._pts_origin = (first.pts or 0) if self.live else 0
        self._started = False

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Every frame that decodes, as FFmpeg's command line does: a packet that fails to
        decode is skipped and counted; a demuxer error (a cut or unreadable file) ends the
        stream. What was lost is in ``damage`` once the frames are exhausted."""
        packets = decoded = failed = 0
        demuxer = self._container.demux(self._stream)
        cut_short = None
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                break
            except av.FFmpegError as error:
                cut_short = _reason(error)
                self._read_timed_out = isinstance(error, av.ExitError)  # PyAV's read timeout
                break
            if packet.size:
                packets += 1
            try:
                frames = packet.decode()
            except av.FFmpegError:
                failed += 1
                continue
            for frame in frames:
                decoded += 1
                yield frame
        if cut_short is not None:
            # The demuxer stopped (a stream's read timeout, a cut file) before the flush
            # packets it sends at a clean end: the frames the decoder still holds (frame
            # threads keep several) are drained here, or the last ones would be lost.
            try:
                for frame in self._stream.codec_context.decode(None):
                    decoded += 1
                    yield frame
            except av.FFmpegError:
                pass
        if not self.location.is_file:
            self._note_stream_end(failed, cut_short)
            return
        declared = self._declared_frames
        lost = max(failed, declared - decoded) if declared else failed
        if lost or cut_short:
            of = f" of {declared}" if declared else ""
            how = []
            if declared and packets < declared:
                how.append(f"truncated: it holds {packets} of the {declared} frames its "
                           f"header declares")
            if failed:
                how.append(f"{failed} damaged packet{'s' * (failed > 1)} skipped")
            if cut_short:
                how.append(f"reading stopped: {cut_short}")
            self.damage = (f"{lost}{of} frames could not be decoded ({'; '.join(how)})"
                           if lost else f"reading stopped early ({cut_short})")

    def _note_stream_end(self, failed: int, cut_short: Optional[str]) -> None:
        """A stream's losses and how it ended, as notes: a stream input has no declared
        length to be short of, and drops packets as a matter of course (UDP)."""
        reader = self._reader
        timed_out = (reader is not None and reader.timed_out) or self._read_timed_out
        if failed:
            self.notes.append(f"{self.path}: {failed} damaged packet{'s' * (failed > 1)} skipped")
        if timed_out:
            self.notes.append(f"{self.path}: ended after {self._timeout:g} s without data")
        elif cut_short:
            self.notes.append(f"{self.path}: reading stopped ({cut_short})")

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._started:
            raise RuntimeError("a PyAVSource can be iterated once")
        self._started = True
        pending, self._first = self._first, None
        index = 0
        last_pts: Optional[int] = None
        while pending is not None:
            data, pix_fmt, _ = frame_to_planar420(pending, self._reformatter_for(pending))
            pts = pending.pts
            if pts is None:  # containers without timestamps: continue the frame-rate grid
                pts = 0 if last_pts is None else last_pts + self._frame_ticks
            else:
                pts -= self._pts_origin
            last_pts = pts
            yield DecodedFrame(data=data, pix_fmt=pix_fmt, width=pending.width,
                               height=pending.height, color=self._color, pts=int(pts),
                               time_base=self._time_base, index=index)
            index += 1
            pending = next(self._frames, None)

    def seek(self, seconds: float) -> float:
        """Before iterating: decode from the keyframe at or before ``seconds`` after the first
        frame instead of from the start (``nvpipe.sources.trim`` drops the frames up to
        ``seconds``). Returns the first frame's time, the origin of ``seconds``. Where the
        container cannot seek, or lands after the target, decoding starts at the first frame
        as before. ``damage`` then no longer compares against the declared frame count."""
        if self._started:
            raise RuntimeError("seek before iterating")
        first = self._first
        if first.pts is None:  # no timestamps to seek by
            return 0.0
        origin = float((first.pts - self._pts_origin) * self._time_base)
        if not self.location.is_file:
            return origin  # a stream: read on to the start
        target = first.pts + int(seconds / self._time_base)
        try:
            self._container.seek(target, stream=self._stream, backward=True)
        except av.FFmpegError:
            return origin  # nothing moved: the decoder still holds the first frame's place
        self._frames.close()
        self._declared_frames = None  # the frames before the keyframe are never decoded
        self._frames = self._decode()
        landed = next(self._frames, None)
        if landed is None or (landed.pts is not None and landed.pts > target):
            # Past the target (a sparse or broken index): from the first frame again.
            self._frames.close()
            try:
                self._container.seek(first.pts, stream=self._stream, backward=True)
            except av.FFmpegError as error:
                raise InputError(f"cannot seek in {self.path} ({_reason(error)})") from None
            self._frames = self._decode()
            landed = next(self._frames, None)
        self._first = landed
        return origin

    def _reformatter_for(self, frame):
        if frame.format.name in _DIRECT_8BIT or frame.format.name in _DIRECT_HIGH \
                or frame.format.name in _SEMIPLANAR:
            return None
        if self._reformatter is None:
            from av.video.reformatter import VideoReformatter

            self._reformatter = VideoReformatter()
        return self._reformatter

    def close(self) -> None:
        if hasattr(self, "_frames"):
            self._frames.close()
        if hasattr(self, "_container"):
            self._container.close()
        if self._reader is not None:
            self._reader.close()
        if self._stdin_file is not None:
            self._stdin_file.close()

    def __enter__(self) -> "PyAVSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.split(":")[0].strip() if text else type(error).__name__


__all__ = ["PyAVSource", "frame_to_planar420", "color_of"]
