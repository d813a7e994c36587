"""Video files written with PyAV (FFmpeg encoders on the CPU), audio copied from the input.

Formats by extension (``OutputSpec.codec`` picks another that the container takes):

=========  ============================  ======================================
extension  default codec                 others
=========  ============================  ======================================
.mp4       H.264 (libx264)               hevc (libx265), av1 (libsvtav1)
.mkv       H.264 (libx264)               hevc, av1, vp9, prores
.mov       ProRes 4444 (prores_ks)       h264, hevc
.webm      VP9 (libvpx-vp9)              av1
=========  ============================  ======================================

Alpha (kinds ``rgba``, ``rgba_premultiplied``) needs ProRes 4444 (``yuva444p10le``, 16-bit
alpha coding, lossless) or VP9 (``yuva420p``; the alpha is a second lossy VP9 stream).

The ``alpha`` kind is a grey video: in 4:2:0 codecs (H.264, HEVC, AV1, VP9) the alpha is
the luma exactly (``Y = round(255 * alpha)``), chroma 128, tagged **full range** so no
precision is lost to the 16-235 scale; in ProRes it goes through swscale to limited-range
10-bit luma (ProRes is defined on video range).

Colour: composites are tagged BT.601 (display height < 720) or BT.709, limited range,
the convention players assume for untagged video; ``sink.color`` says which, so an
``"nv12"`` producer converts with the same matrix.

Odd sizes: H.264/HEVC/AV1 in 4:2:0 need even sizes; the frame is padded to even by
repeating its last row/column (the output is then up to 1 pixel larger). VP9 and ProRes
keep odd sizes.

Timing: the video stream takes the input's ``time_base`` (MP4/MOV may multiply it up
to >= 1/10000; Matroska/WebM store milliseconds, so their timestamps round to 1 ms) and
each frame its input ``pts``; the average rate is the input's ``fps``.

Audio (``audio_from``): every audio stream is copied packet for packet when the container
takes its codec; otherwise re-encoded (AAC for mp4/mov/mkv, Opus for WebM, which takes only
Opus/Vorbis); dropped when no encoder exists. Packets are read as video frames arrive
(never the whole file) and audio stops where the video ends (like ffmpeg ``-shortest``).
A trimmed input (``--start``: ``StreamInfo.start_offset``) has its audio trimmed and shifted
alike.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Optional

import av
import numpy as np

from nvpipe.errors import OutputError
from nvpipe.frames import ColorSpec, StreamInfo, untagged_color
from nvpipe.job import ALPHA_KINDS, OutputSpec
from nvpipe.sinks._base import SinkBase
from nvpipe.sinks.audio import AudioCopy

CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm"}
DEFAULT_CODEC = {".mp4": "h264", ".mkv": "h264", ".mov": "prores", ".webm": "vp9"}
ALLOWED_CODECS = {
    ".mp4": ("h264", "hevc", "av1"),
    ".mkv": ("h264", "hevc", "av1", "vp9", "prores"),
    ".mov": ("prores", "h264", "hevc"),
    ".webm": ("vp9", "av1"),
}
CODEC_ALIASES = {
    "h264": "h264", "avc": "h264", "x264": "h264", "libx264": "h264",
    "hevc": "hevc", "h265": "hevc", "x265": "hevc", "libx265": "hevc",
    "av1": "av1", "svtav1": "av1", "libsvtav1": "av1",
    "vp9": "vp9", "libvpx-vp9": "vp9",
    "prores": "prores", "prores_ks": "prores",
    "rawvideo": "rawvideo", "raw": "rawvideo",
}
ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9",
            "prores": "prores_ks", "rawvideo": "rawvideo"}
ALPHA_CODECS = ("prores", "vp9", "rawvideo")
# Uncompressed pictures (stream outputs: NUT, y4m) in the layout each kind composes to.
RAW_FORMATS = {"composite": "rgb24", "foreground": "rgb24", "alpha": "gray",
               "rgba": "rgba", "rgba_premultiplied": "rgba"}
EVEN_ONLY = ("h264", "hevc", "av1")  # 4:2:0 encoders that refuse odd sizes
# The smallest picture each encoder opens for (measured with this FFmpeg build: libx265
# refuses 8x8, takes 16x16; SVT-AV1 refuses 2x2, takes 4x4); x264, VP9, ProRes take 2x2 or less.
MIN_SIZE = {"hevc": (16, 16), "av1": (4, 4)}

# Defaults measured on 2 shared cores, 1080p nv12 input, libx264 one thread, crf 18:
# ultrafast 11 ms/frame (3.6 MB for 48 frames), superfast 22 ms (1.9 MB), veryfast
# 40 ms (1.2 MB), faster 69 ms (1.4 MB), medium 111 ms (1.4 MB). veryfast keeps people
# clean at crf 18 for a third of the network's frame time.
DEFAULT_QUALITY = {"h264": ("veryfast", 18), "hevc": ("veryfast", 22), "av1": ("10", 32),
                   "vp9": ("4", 24)}
# x264-style preset names for the encoders whose speed is a number.
SVT_PRESETS = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8,
               "medium": 6, "slow": 4, "slower": 3, "veryslow": 2}
VPX_CPU_USED = {"ultrafast": 5, "superfast": 5, "veryfast": 5, "faster": 4, "fast": 3,
                "medium": 2, "slow": 1, "slower": 0, "veryslow": 0}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")

_RANGE_LIMITED, _RANGE_FULL = 1, 2
_TAGS = {"bt709": (1, 1, 1), "bt601": (6, 6, 6)}  # colorspace, primaries, trc (AVCOL_*)
_SWS_MATRIX = {"bt709": "itu709", "bt601": "itu601"}


def resolve_codec(extension: str, spec: OutputSpec) -> str:
    """The canonical codec (``h264``, ``hevc``, ``av1``, ``vp9``, ``prores``) for an output.

    Raises:
        OutputError: unknown codec, a codec the container cannot hold, or an RGBA kind in a
            format without alpha.
    """
    name = (spec.codec or DEFAULT_CODEC[extension]).lower()
    codec = CODEC_ALIASES.get(name)
    if codec is None:
        raise OutputError(f"unknown codec {spec.codec!r} (use one of {', '.join(ENCODERS)})")
    if codec not in ALLOWED_CODECS[extension]:
        raise OutputError(f"{extension} cannot hold {codec} (it takes {', '.join(ALLOWED_CODECS[extension])})")
    if spec.kind in ALPHA_KINDS and codec not in ALPHA_CODECS:
        raise OutputError(
            f"output kind {spec.kind!r} needs alpha, which {codec} in {extension} cannot carry: "
            f"write .mov (ProRes 4444), .webm (VP9) or a PNG sequence (a folder or %05d.png)")
    if ENCODERS[codec] not in av.codecs_available:
        raise OutputError(f"the {ENCODERS[codec]} encoder is not in this FFmpeg build")
    return codec


# libx264 single-thread ms per 1080p frame on real content, crf 18 (the measurements above).
X264_MS_PER_1080P = {"veryfast": 40, "superfast": 22, "ultrafast": 11}
X264_THREAD_EFFICIENCY = 0.75  # frame threads scale sub-linearly; an estimate, re-measured on GPUs
GPU_PATH_TARGET_FPS = 60  # the rate the encoder should keep up with where NVENC is missing


def x264_preset_for(width: int, height: int, cores: Optional[int] = None) -> str:
    """The best-quality x264 preset expected to keep ``GPU_PATH_TARGET_FPS`` at this size on
    this many cores, for the GPU path without NVENC (the CPU encoder is its ceiling there):
    veryfast where it can (4K on 16 cores: ~75 fps expected), else superfast, else ultrafast.
    ``bench/gpu_session.sh`` measures the real ceilings per preset."""
    cores = cores or os.cpu_count() or 1
    pixels = width * height / (1920 * 1080)
    for preset in ("veryfast", "superfast"):
        expected = cores * X264_THREAD_EFFICIENCY * 1000 / (X264_MS_PER_1080P[preset] * pixels)
        if expected >= GPU_PATH_TARGET_FPS:
            return preset
    return "ultrafast"


# The CPU path: the network (~55-60 ms a frame at its ~480x270 input on 2 cores, the same at
# every output size under the automatic ratio) shares the cores with x264, so x264 gets
# this many ms of one core per frame (under half the network's): its frame fits beside
# the network's and never becomes the run's ceiling. The crf stays 18, so the quality is
# the default's; a faster preset spends more bits (the table above: 1.2 MB veryfast,
# 1.9 MB superfast, 3.6 MB ultrafast for 48 frames of 1080p).
CPU_PATH_ENCODE_MS = 25.0


def cpu_path_x264_preset(width: int, height: int, cores: Optional[int] = None) -> str:
    """The best-quality x264 preset whose measured one-thread cost at this size
    (``X264_MS_PER_1080P`` scaled by pixels, divided among the encoder threads of
    ``nvpipe.platform.threads.budget``) fits ``CPU_PATH_ENCODE_MS``, for the CPU path:
    veryfast up to 720p, superfast at 1080p, ultrafast at 4K on 2 cores."""
    from nvpipe.platform.threads import budget

    plan = budget(cores)
    threads = plan.encoder or plan.cores
    pixels = width * height / (1920 * 1080)
    for preset in ("veryfast", "superfast"):
        if X264_MS_PER_1080P[preset] * pixels / (threads * X264_THREAD_EFFICIENCY
                                                  if threads > 1 else 1) <= CPU_PATH_ENCODE_MS:
            return preset
    return "ultrafast"


def encoder_threads(shares_cores_with_network: bool, cores: Optional[int] = None) -> int:
    """Encoder threads (0: FFmpeg's automatic count, about 1.5 per core for x264).

    When the network runs on the CPU too and there are <= 4 cores, one thread measured
    faster than the automatic count (40 vs 55 ms/frame, veryfast 1080p, 2 cores). On the GPU
    path the encoder is the CPU's only heavy work and often the ceiling: every core.
    """
    if not shares_cores_with_network:
        return 0
    from nvpipe.platform.threads import budget

    return budget(cores).encoder


def as_numpy(array) -> np.ndarray:
    """A uint8 numpy view of a numpy array or CPU torch tensor (C-contiguous)."""
    if hasattr(array, "detach"):
        array = array.detach()
        if array.device.type != "cpu":
            raise ValueError("sinks take CPU arrays; copy CUDA tensors to the host first")
        array = array.numpy()
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"sinks take uint8 arrays, got {array.dtype}")
    return array


class PyAVSink(SinkBase):
    """One video file written by FFmpeg through PyAV into ``staging`` (see the module
    docstring and the contract in ``nvpipe.sinks._base``).

    Attributes:
        pixel_format: ``"nv12"`` (composites in 4:2:0 codecs at even sizes: uint8
            ``(3H/2, W)``), ``"rgb24"`` ``(H, W, 3)``, ``"rgba"`` ``(H, W, 4)`` or
            ``"gray"`` ``(H, W)``; ``H, W`` = ``info.display_size``.
        color: the matrix/range ``"nv12"`` input must use.
        frames_written: frames passed to ``write``.
    """

    def __init__(self, spec: OutputSpec, info: StreamInfo, *, staging: str,
                 audio_from: Optional[str] = None, shares_cores_with_network: bool = True) -> None:
        self.path = os.path.abspath(str(spec.path))
        self.shares_cores_with_network = shares_cores_with_network
        self.staging = staging
        self.spec = spec
        extension = os.path.splitext(self.path)[1].lower()
        self.codec = self._resolve_codec(spec)
        self.encoder_name = f"{ENCODERS[self.codec]} (CPU)"
        self.width, self.height = info.display_size
        self.time_base = Fraction(info.time_base)
        self.fps = Fraction(info.fps) if info.fps else Fraction(30)
        self.frames_written = 0
        self._last_pts: Optional[int] = None
        self._finished = False
        pad = self.codec in EVEN_ONLY
        self._coded_w = self.width + (self.width % 2 if pad else 0)
        self._coded_h = self.height + (self.height % 2 if pad else 0)
        self._even = self.width % 2 == 0 and self.height % 2 == 0
        least = MIN_SIZE.get(self.codec, (1, 1))
        if self.width < least[0] or self.height < least[1]:
            raise OutputError(f"{self.codec} cannot encode {self.width}x{self.height} pictures "
                              f"(it needs at least {least[0]}x{least[1]}): {self.path}")

        kind = spec.kind
        if self.codec == "rawvideo":
            self.pixel_format, self._encoder_format, full = self._raw_formats(kind)
        elif kind in ALPHA_KINDS:
            self.pixel_format = "rgba"
            self._encoder_format = "yuva444p10le" if self.codec == "prores" else "yuva420p"
            full = False
        elif kind == "alpha":
            self.pixel_format = "gray"
            if self.codec == "prores":
                self._encoder_format, full = "yuv444p10le", False
            else:
                self._encoder_format, full = "yuv420p", True
        else:
            self._encoder_format = "yuv444p10le" if self.codec == "prores" else "yuv420p"
            self.pixel_format = "nv12" if self.codec != "prores" and self._even else "rgb24"
            full = False
        if self.codec == "h264" and self._encoder_format == "yuv420p" and self._takes_nv12():
            self._encoder_format = "nv12"  # x264 reads NV12 natively: no swscale pass
        self.color = ColorSpec(untagged_color(self.height).matrix, full)

        self._partial = staging
        try:
            self._container = self._open_container(extension)
        except (av.FFmpegError, OSError) as error:
            raise OutputError(f"cannot write {self.path} ({error})") from None
        try:
            self._stream = self._add_video_stream()
            self._audio = (AudioCopy(audio_from, self._container, start=info.start_offset)
                           if audio_from else None)
        except BaseException:
            self._container.close()
            _remove(self._partial)
            raise
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()

    # -- what a subclass (nvpipe.sinks.stream) changes ----------------------------------------
    def _resolve_codec(self, spec: OutputSpec) -> str:
        return resolve_codec(os.path.splitext(self.path)[1].lower(), spec)

    def _open_container(self, extension: str):
        # Matroska/WebM would otherwise shift every stream so that copied AAC priming
        # packets (pts < 0) start at 0, moving the video off the input's timestamps.
        options = {"avoid_negative_ts": "disabled"} if extension in (".mkv", ".webm") else {}
        return av.open(self._partial, "w", format=CONTAINERS[extension], options=options)

    def _takes_nv12(self) -> bool:
        """x264 reads NV12 natively (no swscale pass) where the muxer takes it."""
        return True

    def _raw_formats(self, kind: str) -> tuple[str, str, bool]:
        """Uncompressed output: (what ``write`` takes, what is stored, full range): what
        compose gives, as it is."""
        return RAW_FORMATS[kind], RAW_FORMATS[kind], True

    def _codec_options(self) -> dict[str, str]:
        """Encoder options beyond quality and preset."""
        return {}

    def _add_video_stream(self):
        spec, codec = self.spec, self.codec
        options: dict[str, str] = {}
        check_quality(spec, codec)
        if codec in DEFAULT_QUALITY:
            default_preset, default_crf = DEFAULT_QUALITY[codec]
            if codec == "h264":
                default_preset = (cpu_path_x264_preset(self.width, self.height)
                                  if self.shares_cores_with_network
                                  else x264_preset_for(self.width, self.height))
            preset = spec.preset or default_preset
            if codec in ("h264", "hevc"):
                if preset not in X26X_PRESETS:
                    raise OutputError(f"unknown preset {preset!r} (use one of {', '.join(X26X_PRESETS)})")
                options["preset"] = preset
                self.encoder_name = f"{ENCODERS[codec]} {preset} (CPU)"
            elif codec == "av1":
                options["preset"] = str(_numeric_preset(preset, SVT_PRESETS, 0, 13))
            else:
                options.update({"deadline": "good", "row-mt": "1",
                                "cpu-used": str(_numeric_preset(preset, VPX_CPU_USED, 0, 8))})
            if spec.kind == "alpha":
                default_crf -= 6  # mattes are mostly flat: ~2x the bits of crf 18 buys 2x less error
            if spec.bitrate is None:
                options["crf"] = str(spec.crf if spec.crf is not None else default_crf)
            if codec == "hevc":
                options["x265-params"] = "log-level=error"
        elif codec == "prores":  # quality is the profile; crf/bitrate do not apply
            options.update({"profile": "4444", "vendor": "apl0"})
        options.update(self._codec_options())
        try:
            stream = self._container.add_stream(ENCODERS[codec], rate=self.fps, options=options)
        except (av.FFmpegError, ValueError) as error:
            raise OutputError(f"cannot set up {ENCODERS[codec]} for {self.path} ({error})") from None
        if codec == "hevc" and self.path.lower().endswith((".mp4", ".mov")):
            stream.codec_tag = "hvc1"  # FFmpeg's default hev1 does not play in QuickTime/Safari
        context = stream.codec_context
        stream.width, stream.height = self._coded_w, self._coded_h
        stream.pix_fmt = self._encoder_format
        stream.time_base = self.time_base
        context.time_base = self.time_base
        if spec.bitrate is not None:
            context.bit_rate = int(spec.bitrate)
        elif codec == "vp9":
            context.bit_rate = 0  # constant quality: crf alone
        context.thread_count = encoder_threads(self.shares_cores_with_network)
        space, primaries, trc = _TAGS[self.color.matrix]
        context.colorspace, context.color_primaries, context.color_trc = space, primaries, trc
        context.color_range = _RANGE_FULL if self.color.full_range else _RANGE_LIMITED
        return stream

    # -- frames ------------------------------------------------------------------------
    @property
    def notes(self) -> list[str]:
        """What the run's summary should say of this output (audio not copied, and why)."""
        return list(self._audio.notes) if self._audio is not None else []

    def write(self, array, pts: int) -> None:
        """Encodes one frame.

        Args:
            array: uint8 in ``pixel_format`` (numpy or CPU torch), ``display_size``.
            pts: the input frame's timestamp in the input ``time_base``.
        """
        if self._finished:
            raise RuntimeError("write after close/abort")
        frame = self._frame_from(as_numpy(array))
        frame.pts = int(pts)
        frame.time_base = self.time_base
        if self._audio is not None:
            self._audio.pump(float((int(pts) * self.time_base) + 1 / self.fps))
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as error:
            raise self._write_error(error) from None
        self.frames_written += 1
        self._last_pts = int(pts)

    def _write_error(self, error: Exception) -> OutputError:
        """The one-line error of a failed write (a subclass names a missing protocol)."""
        return OutputError(f"writing {self.path} failed ({error})")

    def _check_shape(self, array: np.ndarray, shape: tuple) -> None:
        if array.shape != shape:
            raise ValueError(f"{self.pixel_format} frame for {self.path} must be {shape}, got {array.shape}")

    def _frame_from(self, array: np.ndarray) -> av.VideoFrame:
        w, h = self.width, self.height
        fmt = self.pixel_format
        if fmt == self._encoder_format and fmt != "nv12":  # rawvideo: as it is
            self._check_shape(array, (h, w) if fmt == "gray" else (h, w, 4 if fmt == "rgba" else 3))
            return video_frame(array, fmt)
        if fmt == "nv12":
            self._check_shape(array, (h * 3 // 2, w))
            return self._to_encoder(video_frame(array, "nv12"), self.color.full_range)
        if fmt == "gray":
            self._check_shape(array, (h, w))
            if self._encoder_format in ("nv12", "yuv420p") and self.codec in EVEN_ONLY + ("vp9",) \
                    and (self._coded_w % 2 == 0 and self._coded_h % 2 == 0):
                return self._to_encoder(self._gray_as_nv12(array), True)
            frame = video_frame(array, "gray")
            return self._reformatter.reformat(
                frame, format=self._encoder_format, dst_colorspace=_SWS_MATRIX[self.color.matrix],
                src_color_range=_RANGE_FULL,
                dst_color_range=_RANGE_FULL if self.color.full_range else _RANGE_LIMITED, threads=1)
        channels = 4 if fmt == "rgba" else 3
        self._check_shape(array, (h, w, channels))
        if (self._coded_w, self._coded_h) != (w, h):
            array = np.pad(array, ((0, self._coded_h - h), (0, self._coded_w - w), (0, 0)), mode="edge")
        frame = video_frame(array, fmt)
        return self._reformatter.reformat(
            frame, format=self._encoder_format, dst_colorspace=_SWS_MATRIX[self.color.matrix],
            src_color_range=_RANGE_FULL, dst_color_range=_RANGE_LIMITED, threads=1)

    def _gray_as_nv12(self, alpha: np.ndarray) -> av.VideoFrame:
        """Y = alpha (edge-padded to the coded size), UV = 128, in a fresh buffer (encoders
        that queue frames may still hold the previous one)."""
        cw, ch = self._coded_w, self._coded_h
        nv12 = np.empty((ch * 3 // 2, cw), np.uint8)
        nv12[ch:] = 128
        luma = nv12[:ch]
        luma[: self.height, : self.width] = alpha
        if cw > self.width:
            luma[:, self.width :] = luma[:, self.width - 1 : self.width]
        if ch > self.height:
            luma[self.height :] = luma[self.height - 1 : self.height]
        return video_frame(nv12, "nv12")

    def _to_encoder(self, frame: av.VideoFrame, full_range: bool) -> av.VideoFrame:
        if self._encoder_format == "nv12":
            return frame
        rng = _RANGE_FULL if full_range else _RANGE_LIMITED  # same both sides: no rescaling
        return self._reformatter.reformat(frame, format=self._encoder_format,
                                          src_color_range=rng, dst_color_range=rng, threads=1)

    # -- finishing ---------------------------------------------------------------------
    def _end_time(self) -> float:
        return float(self._last_pts * self.time_base + 1 / self.fps)

    def finish(self) -> None:
        """Flushes the encoder and the audio and writes the index: a playable file at
        ``staging``.

        Raises:
            OutputError: nothing was written, or the encoder or the disk failed (the
                staging file is removed then).
        """
        if self._finished:
            return
        if self.frames_written == 0:
            self.discard()
            raise OutputError(f"no frames were written to {self.path}")
        try:
            self._finished = True
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.finish(self._end_time())
            self._container.close()
        except (av.FFmpegError, OSError) as error:
            self.discard()
            raise OutputError(f"finishing {self.path} failed ({_reason(error)})") from None

    def discard(self) -> None:
        """Closes quietly and removes the staging file. Never raises; idempotent."""
        self._finished = True
        try:
            if self._audio is not None:
                self._audio.close()
            self._container.close()
        except Exception:  # noqa: BLE001 - the file goes anyway
            pass
        _remove(self._partial)


def video_frame(array: np.ndarray, pixel_format: str) -> av.VideoFrame:
    """A ``VideoFrame`` of a uint8 array in ``pixel_format`` (``nv12`` ``(3H/2, W)``,
    ``gray``, ``rgb24``, ``rgba``). Zero-copy (``from_numpy_buffer``) only where that is
    right: rows a multiple of 64 bytes (swscale's SIMD reads whole aligned rows; narrower
    rows gave garbage in the last row now and then, VP9 at 2x6) and, for NV12, a height that
    is a multiple of 4 (PyAV 18 builds other heights 2 rows short: 270 -> 268, 2 -> 0).
    Otherwise one copy into an aligned frame (``from_ndarray``)."""
    rows_aligned = array.strides[0] % 64 == 0
    if pixel_format == "nv12":
        zero_copy = rows_aligned and (array.shape[0] * 2 // 3) % 4 == 0
    else:
        zero_copy = rows_aligned
    if zero_copy:
        return av.VideoFrame.from_numpy_buffer(array, format=pixel_format)
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=pixel_format)


# The quality scales of the encoders that take --crf (x264/x265: 0-51; SVT-AV1, VP9: 0-63).
CRF_RANGES = {"h264": (0, 51), "hevc": (0, 51), "av1": (0, 63), "vp9": (0, 63)}


def check_quality(spec: OutputSpec, codec: str) -> None:
    """Raises :class:`OutputError` for a ``crf`` the codec does not take."""
    if spec.crf is None:
        return
    if codec not in CRF_RANGES:
        why = " (ProRes quality is its 4444 profile)" if codec == "prores" else " (uncompressed)"
        raise OutputError(f"{codec} takes no --crf{why}: {spec.path}")
    low, high = CRF_RANGES[codec]
    if not low <= spec.crf <= high:
        raise OutputError(f"--crf {spec.crf} is out of range for {codec} ({low}-{high})")


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _numeric_preset(preset, names: dict, low: int, high: int) -> int:
    if preset is None:
        raise ValueError("preset is None")
    if str(preset).lstrip("-").isdigit() and low <= int(preset) <= high:
        return int(preset)
    if str(preset) in names:
        return names[str(preset)]
    raise OutputError(f"unknown preset {preset!r} (use {low}-{high} or one of {', '.join(names)})")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


__all__ = ["PyAVSink", "resolve_codec", "check_quality", "video_frame", "CONTAINERS", "as_numpy"]
