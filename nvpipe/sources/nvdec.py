"""NVDEC decoding through PyNvVideoCodec into CUDA memory, on the source's own CUDA stream.

Frames are BORROWED from the decoder's output pool: a yielded ``DecodedFrame.data`` stays
valid only until the decoder is asked for more. The consumer converts (kernel 1) into
buffers it owns, then calls ``frame.release()``: that records an event on the consumer's
current stream, and before the next ``Decode`` call the decode stream waits on every such
event, so the decoder never overwrites a buffer that queued GPU work still reads.
No host synchronisation is involved. A frame not released when the consumer asks for the
next one is released then (an event on the consumer's current stream at that moment).

Low-level PyNvVideoCodec API (``CreateDemuxer`` + ``CreateDecoder``), as in its samples: the
demuxer's final packet is empty (``bsl == 0``) and is passed to ``Decode`` to flush the
frames the decoder holds back.

Stream facts (size, rotation, colour matrix/range, frame rate, time base, audio) come from
the CPU source's probe (PyAV), so both devices describe a file identically.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Callable, Iterator, Optional

import torch

from nvpipe.errors import InputError
from nvpipe.frames import DecodedFrame, StreamInfo, frame_ticks
from nvpipe.platform.gpu import (PrimaryContext, caps_supported, decoder_caps, import_pynvvideocodec,
                   keep_cuda_context)

# Codecs NVDEC decodes that the pipeline accepts (StreamInfo.codec is PyAV's decoder name).
_NVDEC_CODECS = {"h264": "h264", "hevc": "hevc", "av1": "av1", "libdav1d": "av1",
                 "libaom-av1": "av1", "vp9": "vp9", "libvpx-vp9": "vp9"}


class NvdecUnsupported(InputError):
    """NVDEC cannot decode this stream (codec, chroma format, size); the CPU source can."""


def planar420_view(data: torch.Tensor, width: int, height: int,
                   high_bit_depth: bool) -> tuple[torch.Tensor, bool]:
    """The decoder's frame as the pipeline's ``nv12``/``p016`` layout.

    Args:
        data: the decoded picture, ``(rows, cols)``: Y rows then interleaved UV rows,
            uint8 (8-bit) or uint16 (P016, MSB-aligned); a high-bit-depth frame exported as
            uint8 ``(rows, 2 * cols)`` is reinterpreted as uint16.
        width, height: the picture size.
        high_bit_depth: True for 10/12-bit streams (P016).

    Returns:
        ``(frame, copied)``: ``frame`` is ``(height + ceil(height/2), P)`` with
        ``P >= max(width, 2*ceil(width/2))`` (``docs/design.md``), a view of ``data`` when it
        already has that many rows and columns (``copied`` False). Otherwise (a decoder
        that exports ``floor(1.5 * H)`` rows or ``W`` columns for odd sizes) a padded copy
        in which each missing chroma row/column repeats its nearest neighbour of the same
        kind (``copied`` True).

    Raises:
        InputError: fewer than ``height`` luma rows or ``width`` columns, or no chroma row.
    """
    if data.ndim != 2:
        raise InputError(f"NVDEC frame is not a 2-D semi-planar picture: {tuple(data.shape) = }")
    if (data.dtype == torch.uint16 and data.stride(1) != 1 and data.stride(0) == data.shape[1]
            and data.shape[1] > 1):
        # PyNvVideoCodec's 2.0 source exports packed P016 with element strides (W, 2): the
        # rows are right, the column stride is not.
        data = data.as_strided(data.shape, (data.shape[1], 1))
    if high_bit_depth and data.dtype == torch.uint8:
        if data.shape[1] % 2 or data.stride(1) != 1:
            raise InputError(f"cannot read a 16-bit frame from {tuple(data.shape) = }")
        data = data.view(torch.uint16)
    expected = torch.uint16 if high_bit_depth else torch.uint8
    if data.dtype != expected:
        raise InputError(f"NVDEC frame has dtype {data.dtype}, expected {expected}")
    chroma_rows = math.ceil(height / 2)
    rows, cols = height + chroma_rows, max(width, 2 * math.ceil(width / 2))
    have_rows, have_cols = data.shape
    if have_rows >= rows and have_cols >= cols:
        return data[:rows], False
    have_chroma = have_rows - height
    if have_chroma < 1 or have_cols < width:
        raise InputError(f"NVDEC frame {tuple(data.shape)} is too small for {width}x{height}")
    out = torch.empty((rows, cols), dtype=data.dtype, device=data.device)
    used_cols = min(have_cols, cols)
    out[:height, :used_cols] = data[:height, :used_cols]
    used_chroma = min(have_chroma, chroma_rows)
    out[height:height + used_chroma, :used_cols] = data[height:height + used_chroma, :used_cols]
    for row in range(height + used_chroma, rows):  # repeat the last chroma row
        out[row] = out[row - 1]
    for col in range(used_cols, cols):  # the same component (U or V) of the previous pair
        out[:, col] = out[:, col - 2]
    return out, True


def check_size(caps: dict, width: int, height: int, codec: str, path: str) -> None:
    """Raise ``NvdecUnsupported`` when ``width x height`` lies outside the decoder's caps:
    above ``width_max``/``height_max``, or below ``width_min``/``height_min`` (HEVC's
    minimum is 144x144 on recent GPUs; the tests' 128x128 HEVC clip is below it). A limit
    the caps do not give (absent or 0) is not checked."""
    width_max, height_max = caps.get("width_max", 0), caps.get("height_max", 0)
    if width_max and height_max and (width > width_max or height > height_max):
        raise NvdecUnsupported(f"{width}x{height} exceeds NVDEC's {width_max}x{height_max} "
                               f"for {codec} ({path})")
    width_min, height_min = caps.get("width_min", 0) or 0, caps.get("height_min", 0) or 0
    if width < width_min or height < height_min:
        raise NvdecUnsupported(f"{width}x{height} is below NVDEC's minimum {width_min}x"
                               f"{height_min} for {codec} ({path})")


def _is_flush_packet(packet) -> bool:
    return int(getattr(packet, "bsl", 1)) == 0


def _frame_pts(nvframe) -> Optional[int]:
    """The presentation timestamp NVDEC carried through from the packet, or None."""
    for getter in ("getPTS", "GetPTS"):
        if hasattr(nvframe, getter):
            try:
                value = int(getattr(nvframe, getter)())
                break
            except Exception:  # noqa: BLE001
                continue
    else:
        value = getattr(nvframe, "timestamp", None)
        if value is None:
            return None
        value = int(value)
    # AV_NOPTS_VALUE is INT64_MIN; as an unsigned 64-bit value it is 2**63.
    if value < 0 or value >= 2**62:
        return None
    return value


class NvdecSource:
    """A video file decoded by NVDEC into CUDA memory (the ``Source`` protocol).

    Args:
        path: the video file (H.264, HEVC, AV1; 8-bit -> ``"nv12"``, 10/12-bit -> ``"p016"``;
            4:2:0 only: other chroma formats raise ``NvdecUnsupported``).
        gpu_id: the CUDA device.

    ``info`` is a :class:`StreamInfo`. Iterating (once) yields :class:`DecodedFrame` in
    presentation order: ``data`` a CUDA tensor, uint8 ``(H + ceil(H/2), P)`` (nv12) or
    uint16 of the same shape (p016, MSB-aligned), ``pts`` in ``info.time_base``, and
    ``release`` set (see the module docstring). The decoder works on its own CUDA stream
    ``self.stream``; ``data`` is ready for work enqueued on the consumer's current stream
    (that stream is made to wait for the decode). Raises ``InputError`` for unreadable
    input, ``DeviceError`` when PyNvVideoCodec cannot load.
    """

    live = False  # files only: stream inputs decode with PyAV (nvpipe.sources.open_source)
    notes: tuple = ()

    def __init__(self, path: str, gpu_id: int = 0):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise InputError(f"input not found: {self.path}")
        self._nvc = import_pynvvideocodec()
        self.info: StreamInfo = probe(self.path)
        codec = _NVDEC_CODECS.get(self.info.codec)
        if codec is None:
            raise NvdecUnsupported(f"NVDEC path does not decode {self.info.codec!r} "
                                   f"({self.path}); decode it on the CPU")
        self.device = torch.device("cuda", gpu_id)
        self.gpu_id = gpu_id
        self.stream = torch.cuda.Stream(self.device)
        self._context = PrimaryContext(gpu_id)
        self._demuxer = self._decoder = None
        self._started = False
        self._released: list[torch.cuda.Event] = []
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        nvc = self._nvc
        try:
            self._demuxer = nvc.CreateDemuxer(filename=self.path)
        except Exception as error:  # noqa: BLE001 - the library raises plain RuntimeErrors
            raise InputError(f"NVDEC demuxer cannot open {self.path}: {error}") from None
        chroma = str(self._demuxer.ChromaFormat())
        if "420" not in chroma:
            raise NvdecUnsupported(f"NVDEC path decodes 4:2:0 only; {self.path} is {chroma}")
        self._check_caps()
        try:
            with keep_cuda_context("CreateDecoder"):
                self._decoder = nvc.CreateDecoder(
                    gpuid=self.gpu_id, codec=self._demuxer.GetNvCodecId(),
                    cudacontext=self._context.handle, cudastream=self.stream.cuda_stream,
                    usedevicememory=1)
        except Exception as error:  # noqa: BLE001
            raise NvdecUnsupported(f"NVDEC cannot decode {self.path} ({self.info.codec}, "
                                   f"{self.info.bit_depth}-bit): {error}") from None
        self._high_bit_depth = self.info.bit_depth > 8
        self._frame_ticks = frame_ticks(self.info.fps, self.info.time_base)
        # getPTS() counts in the demuxer's time base; frames are labelled in info.time_base.
        self._pts_scale = Fraction(1)
        if hasattr(self._demuxer, "GetTimebaseNum"):
            try:
                demuxer_base = Fraction(int(self._demuxer.GetTimebaseNum()),
                                        int(self._demuxer.GetTimebaseDen()) or 1)
            except Exception:  # noqa: BLE001 - no time base: assume FFmpeg's, as PyAV's
                demuxer_base = None
            if demuxer_base:
                self._pts_scale = demuxer_base / Fraction(self.info.time_base)

    def _check_caps(self) -> None:
        """Refuse what this GPU's NVDEC cannot do (e.g. 10-bit H.264) before decoding."""
        codec = _NVDEC_CODECS[self.info.codec]
        try:
            caps = decoder_caps(codec, self.info.bit_depth, self.gpu_id)
        except Exception:  # noqa: BLE001 - no caps query: let the decoder itself decide
            return
        if not caps_supported(caps):
            raise NvdecUnsupported(f"this GPU's NVDEC does not decode {self.info.bit_depth}-bit "
                                   f"{codec} ({self.path}); decode it on the CPU")
        check_size(caps, self.info.width, self.info.height, codec, self.path)

    def _packets(self):
        """Video packets in decode order, ending with the empty flush packet."""
        flushed = False
        for packet in self._demuxer:
            yield packet
            if _is_flush_packet(packet):
                flushed = True
                break
        if not flushed:  # an iterator that stops before the empty packet: make one
            yield self._nvc.PacketData()

    def _wait_for_consumers(self) -> None:
        for event in self._released:
            self.stream.wait_event(event)
        self._released.clear()

    def _release_callback(self) -> Callable[[], None]:
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(self.device))
                self._released.append(event)

        return release

    def _wrap(self, nvframe, index: int, last_pts: Optional[int]) -> DecodedFrame:
        consumer = torch.cuda.current_stream(self.device)
        # Ask the library to order its post-processing copy before the consumer's work
        # (``WaitOnCUStream`` is a method of the decoder in PyNvVideoCodec 2.x, not of frames).
        wait_on_stream = getattr(self._decoder, "WaitOnCUStream", None)
        if wait_on_stream is not None:
            try:
                wait_on_stream(consumer.cuda_stream)
            except Exception:  # noqa: BLE001 - another binding: the waits below still order it
                pass
        with torch.cuda.device(self.device):
            # DLPack: torch passes the consumer's current stream and the producer makes it
            # wait on the frame's decode event.
            data = torch.from_dlpack(nvframe)
        # Belt and braces: the consumer also waits for everything enqueued on the decode stream.
        consumer.wait_stream(self.stream)
        data, _ = planar420_view(data, self.info.width, self.info.height, self._high_bit_depth)
        pts = _frame_pts(nvframe)
        if pts is not None and self._pts_scale != 1:
            pts = round(pts * self._pts_scale)
        if pts is None:  # continue the frame-rate grid, as the CPU source does
            pts = 0 if last_pts is None else last_pts + self._frame_ticks
        return DecodedFrame(data=data, pix_fmt="p016" if self._high_bit_depth else "nv12",
                            width=self.info.width, height=self.info.height,
                            color=self.info.color, pts=int(pts), time_base=self.info.time_base,
                            index=index, release=self._release_callback())

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._started:
            raise RuntimeError("an NvdecSource can be iterated once")
        self._started = True
        index, last_pts = 0, None
        previous: Optional[DecodedFrame] = None
        for packet in self._packets():
            if previous is not None:  # the consumer asks for more: the last frame is done
                previous.release()
            self._wait_for_consumers()
            try:
                with torch.cuda.device(self.device):
                    decoded = self._decoder.Decode(packet)
            except Exception as error:  # noqa: BLE001
                raise InputError(f"NVDEC failed on {self.path} after {index} frames: "
                                 f"{error}") from None
            for nvframe in decoded:
                if previous is not None:
                    previous.release()
                frame = self._wrap(nvframe, index, last_pts)
                last_pts = frame.pts
                previous = frame
                index += 1
                yield frame
        if previous is not None:
            previous.release()
        declared = self.info.frame_count
        if declared and index < declared:
            raise InputError(f"truncated video: {self.path}: NVDEC decoded {index} of the "
                             f"{declared} frames its header declares")

    def close(self) -> None:
        """Drop the decoder and demuxer (after the decode stream's work is done)."""
        if getattr(self, "stream", None) is not None:
            self.stream.synchronize()
        self._decoder = None
        self._demuxer = None
        if getattr(self, "_context", None) is not None:
            self._context.release()
            self._context = None

    def __enter__(self) -> "NvdecSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe(path: str) -> StreamInfo:
    """The stream's facts as the CPU source reads them (PyAV: colour, rotation, timing)."""
    from nvpipe.sources.pyav import PyAVSource

    source = PyAVSource(path, threads=1)
    try:
        return source.info
    finally:
        source.close()


__all__ = ["NvdecSource", "NvdecUnsupported", "planar420_view", "probe"]
