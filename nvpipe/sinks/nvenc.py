"""NVENC encoding of CUDA NV12 frames (PyNvVideoCodec), muxed by PyAV with the input's audio.

``NvencSink`` implements the Sink protocol of ``docs/design.md`` for CUDA tensors:
``pixel_format`` is ``"nv12"``, ``accepts_cuda`` is True, ``write(frame, pts)`` takes a
CUDA uint8 ``(H * 3/2, W)`` tensor. H.264, HEVC (and AV1 where the GPU has it), 8-bit 4:2:0,
no alpha (NVENC cannot
carry it). The encoder opens with the sink, before any frame: GPUs without NVENC (H100,
H200, A100), or an encoder that cannot start, fail the open with ``OutputError``, and
``--encoder auto`` then writes with the CPU encoder (a one-line note says why).

Streams: ``write`` is called on an encode thread after the producer's event has been waited
for. The encoder copies the frame into its own surface on its own CUDA stream, which first
waits for the writer's current stream; the frame is then marked as used by that stream for
torch's caching allocator and kept referenced until an event recorded after the copy has
completed, so it is not reused too early. ``write`` returns that event for callers that
recycle a fixed ring of buffers: wait on it before overwriting the buffer.

Muxing is PyAV's (``add_mux_stream``), packet by packet, so nothing accumulates in memory
(unlike PyNvVideoCodec's ``FFmpegMuxer``, which holds every packet until ``Finalize``). The
encoder runs without B-frames, so packets leave in input order and DTS equals PTS; each
packet's PTS is the input frame's own (``inputTimeStamp`` carries the frame's index through
the encoder). Audio is copied from the input, interleaved as the video advances. The file is
written at the staging path that ``nvpipe.sinks.outputs`` gives and moves into place.
"""

from __future__ import annotations

import collections
from fractions import Fraction
from pathlib import Path
from typing import Optional

import torch

from nvpipe.errors import OutputError
from nvpipe.frames import StreamInfo, frame_ticks, untagged_color
from nvpipe.job import OutputSpec
from nvpipe.sinks._base import SinkBase
from nvpipe.sinks.encoders import nvenc_codec
from nvpipe.sinks.audio import AudioCopy

_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # NVENC_FORMATS' muxers
# x264-style preset names -> NVENC P1 (fastest) .. P7 (best quality).
_PRESETS = {"ultrafast": "P1", "superfast": "P1", "veryfast": "P2", "faster": "P3",
            "fast": "P3", "medium": "P4", "slow": "P5", "slower": "P6", "veryslow": "P7",
            "placebo": "P7"}
DEFAULT_QP = 23  # NVENC constant QP when neither crf nor bitrate is given (x264's CRF default)
_NV_ENC_PIC_TYPE_I, _NV_ENC_PIC_TYPE_IDR = 2, 3


def nvenc_options(spec: OutputSpec, fps: Fraction, gpu_id: int = 0) -> dict:
    """Keyword arguments for ``PyNvVideoCodec.CreateEncoder`` (its names; values as str/int).

    ``crf`` (or, with neither, ``DEFAULT_QP``) selects constant QP; ``bitrate`` (bits/s)
    selects VBR with a 1.5x peak. Two-second GOP, no B-frames (packets in input order, so
    DTS = PTS), ``preset`` P1..P7 or an x264 name mapped onto them (default P4).
    """
    codec = nvenc_codec(spec)
    preset = (spec.preset or "P4")
    preset = _PRESETS.get(preset.lower(), preset.upper())
    if preset not in {f"P{i}" for i in range(1, 8)}:
        raise OutputError(f"NVENC preset must be P1..P7 or an x264 preset name, got {spec.preset!r}")
    rate = max(1, round(float(fps)))
    # fps as a decimal string: the library reads "29.97" as 2997/100 (rate control only;
    # the container's timing comes from the PTS).
    options = {"codec": codec, "preset": preset, "tuning_info": "high_quality",
               "fps": f"{float(fps):.3f}".rstrip("0").rstrip("."), "gop": 2 * rate,
               "idrperiod": 2 * rate, "bf": 0, "gpu_id": gpu_id}
    if spec.bitrate is not None:
        if spec.bitrate <= 0:
            raise OutputError(f"bitrate must be positive, got {spec.bitrate}")
        options.update(rc="vbr", bitrate=int(spec.bitrate),
                       maxbitrate=int(spec.bitrate * 3 // 2))
    else:
        qp = DEFAULT_QP if spec.crf is None else int(spec.crf)
        if not 0 <= qp <= 51:
            raise OutputError(f"crf (NVENC constant QP) must be 0..51, got {qp}")
        # Which key sets the QP differs between binding versions; unknown keys are ignored.
        options.update(rc="constqp", constqp=qp, initqp=qp)
    if codec == "av1":
        options["use_ivf_container"] = 0  # raw OBUs for the muxer, as PyNvVideoCodec's samples
    return options


class PacketMuxer:
    """Muxes an encoded video elementary stream (Annex B) and copies the input's audio.

    Args:
        path: the output (.mp4/.mov/.mkv), named in messages.
        staging: the file written (``nvpipe.sinks.outputs`` moves it onto ``path``).
        codec: ``"h264"``, ``"hevc"`` or ``"av1"``.
        width, height: the coded picture size.
        fps: the nominal frame rate (container metadata; timing comes from the PTS).
        time_base: the unit of the ``pts``/``dts`` given to ``mux``.
        audio_from: a file whose audio streams are copied (``nvpipe.sinks.audio``), or None.
        audio_start: seconds of ``audio_from`` before the video's time 0 (a trimmed input,
            ``StreamInfo.start_offset``): earlier audio packets are dropped, the rest shifted.
        audio_end: where the audio stops (seconds of the output; None: all of it).

    ``mux(data, pts, dts, keyframe)`` writes one packet; parameter sets are taken from the
    first keyframe (PyAV's extract_extradata). ``finish()`` copies the remaining audio and
    finishes the file; ``discard()`` deletes it.
    """

    # Audio is muxed up to this far ahead of the video (seconds), so the interleaving
    # buffer of the muxer stays small.
    AUDIO_LEAD = 0.5

    def __init__(self, path: str, codec: str, width: int, height: int, fps: Fraction,
                 time_base: Fraction, *, staging: str, audio_from: Optional[str] = None,
                 audio_start: float = 0.0, audio_end: Optional[float] = None):
        import av

        self.path = Path(path)
        if self.path.suffix.lower() not in _CONTAINERS:
            raise OutputError(f"cannot mux video into {self.path.name}: use .mp4, .mov or .mkv")
        self.time_base = Fraction(time_base)
        self.temporary = Path(staging)
        try:
            self._container = av.open(str(self.temporary), "w",
                                      format=_CONTAINERS[self.path.suffix.lower()])
        except Exception as error:  # noqa: BLE001
            raise OutputError(f"cannot write {self.path}: {error}") from None
        try:
            self._video = self._container.add_mux_stream(
                codec, rate=Fraction(fps), width=int(width), height=int(height))
        except ValueError as error:  # the container cannot hold the codec
            self._container.close()
            self.temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {codec} into {self.path.name}: {error}") from None
        self._video.time_base = self.time_base
        self.packets = 0
        self._audio = (AudioCopy(audio_from, self._container, start=audio_start, end=audio_end)
                       if audio_from is not None else None)
        self._finished = False

    @property
    def notes(self) -> list[str]:
        """Audio not copied, and why (``nvpipe.sinks.audio``)."""
        return list(self._audio.notes) if self._audio is not None else []

    def mux(self, data: bytes, pts: int, dts: int, keyframe: bool) -> None:
        """One encoded video packet; ``pts``/``dts`` in ``time_base``, non-decreasing ``dts``."""
        import av

        if self._audio is not None:
            self._audio.pump(float(pts * self.time_base) + self.AUDIO_LEAD)
        packet = av.Packet(bytes(data))
        packet.stream = self._video
        packet.time_base = self.time_base
        packet.pts, packet.dts = int(pts), int(dts)
        packet.is_keyframe = bool(keyframe)
        self._container.mux(packet)
        self.packets += 1

    def _close_container(self, copy_audio: bool) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            if self._audio is not None and copy_audio and self.packets:
                self._audio.finish(None)
            self._container.close()
        finally:
            if self._audio is not None:
                self._audio.close()

    def finish(self) -> None:
        """Copy the rest of the audio and finish the file at ``staging``."""
        if self._finished:
            return
        if self.packets == 0:
            self.discard()
            raise OutputError(f"no frame was encoded for {self.path}")
        try:
            self._close_container(copy_audio=True)
        except Exception as error:  # noqa: BLE001 - the muxer or the disk
            self.discard()
            raise OutputError(f"finishing {self.path} failed ({error})") from None

    def discard(self) -> None:
        """Delete the staging file; ``path`` is left as it was."""
        try:
            self._close_container(copy_audio=False)
        except Exception:  # noqa: BLE001
            pass
        self.temporary.unlink(missing_ok=True)


class _PlaneView:
    def __init__(self, tensor: torch.Tensor):
        self.__cuda_array_interface__ = {
            "shape": tuple(tensor.shape), "strides": tuple(s * tensor.element_size()
                                                           for s in tensor.stride()),
            "data": (tensor.data_ptr(), False), "typestr": "|u1", "version": 3}


class _Nv12Planes:
    """An NV12 CUDA tensor as PyNvVideoCodec's samples hand frames to ``Encode``:
    ``cuda()`` -> [Y ``(H, W, 1)``, UV ``(H/2, W/2, 2)``] CUDA array interfaces."""

    def __init__(self, frame: torch.Tensor, width: int, height: int):
        self._planes = [_PlaneView(frame[:height].view(height, width, 1)),
                        _PlaneView(frame[height:].view(height // 2, width // 2, 2))]

    def cuda(self):
        return self._planes


class NvencSink(SinkBase):
    """Encodes CUDA NV12 frames with NVENC into an .mp4/.mov/.mkv file.

    Args:
        spec: the output (path, kind, codec ``h264``/``hevc``, crf = constant QP, bitrate,
            preset P1..P7); kinds with alpha are refused.
        info: the output's stream facts (display-oriented ``width``/``height``, ``fps``,
            ``time_base`` of the pts given to ``write``).
        staging: the file written (``nvpipe.sinks.outputs`` moves it onto the output's path).
        audio_from: copy this file's audio (normally the input), or None.
        gpu_id: the CUDA device holding the frames and the encoder.

    ``write(frame, pts)``: ``frame`` CUDA uint8 ``(H * 3/2, W)`` NV12 (Y rows then interleaved
    UV rows) in ``color`` (a ``ColorSpec``: BT.601 below 720 lines, else BT.709,
    limited range: what players assume for untagged H.264/HEVC); ``pts`` int in
    ``info.time_base`` (None: the frame-rate grid). Returns the event after which the
    frame's memory may be overwritten. Raises ``OutputError`` on any encoder failure.
    """

    pixel_format = "nv12"
    accepts_cuda = True

    def __init__(self, spec: OutputSpec, info: StreamInfo, *, staging: str,
                 audio_from: Optional[str] = None, gpu_id: int = 0):
        from nvpipe.platform.gpu import import_pynvvideocodec, nvenc_status

        self.spec = spec
        self.codec = nvenc_codec(spec)
        self.width, self.height = int(info.width), int(info.height)
        if self.width % 2 or self.height % 2:
            raise OutputError(f"NVENC needs an even width and height, got {self.width}x{self.height}")
        self.options = nvenc_options(spec, info.fps, gpu_id)
        self._nvc = import_pynvvideocodec()
        if not hasattr(self._nvc, "NV_ENC_PIC_PARAMS"):  # 2.0.0/2.1.0: Encode returns bytes
            raise OutputError("NVENC output needs PyNvVideoCodec >= 2.2 (found "
                              f"{getattr(self._nvc, '__version__', 'an older version')})")
        available, reason = nvenc_status(gpu_id, self.codec)
        if not available:
            raise OutputError(f"no NVENC for {self.codec}: {reason}")
        self.device = torch.device("cuda", gpu_id)
        # What players assume for untagged video (the stream carries no colour tags).
        self.color = untagged_color(self.height)
        self.encoder_name = f"nvenc {self.codec} ({self.options['preset']}, {self.options['rc']})"
        self.time_base = Fraction(info.time_base)
        self._frame_ticks = frame_ticks(info.fps, self.time_base)
        self._encoder = None
        self._context = None
        self._stream: Optional[torch.cuda.Stream] = None
        # The encoder opens here, before any frame (and before the file is created), so a
        # GPU that cannot give one fails the open: ``--encoder auto`` then takes the CPU
        # encoder (nvpipe.sinks.encoders.fallback_opener) instead of failing at frame 1.
        with torch.cuda.device(self.device):
            self._create_encoder()
        try:
            self._muxer = PacketMuxer(spec.path, self.codec, self.width, self.height, info.fps,
                                      self.time_base, staging=staging, audio_from=audio_from,
                                      audio_start=info.start_offset, audio_end=info.duration)
        except BaseException:
            self._release_encoder()
            raise
        self.frames_written = 0
        self._last_pts: Optional[int] = None
        self._pts_by_index: dict[int, int] = {}
        self._in_flight: collections.deque = collections.deque()
        self._closed = False

    def _create_encoder(self) -> None:
        # Created when the sink opens, with the device current; the encode thread uses it.
        from nvpipe.platform.gpu import PrimaryContext, keep_cuda_context

        self._stream = torch.cuda.Stream(self.device)
        self._context = PrimaryContext(self.device.index)
        # The stream must belong to the context the encoder is given (the library checks).
        options = dict(self.options, cudastream=self._stream.cuda_stream,
                       cudacontext=self._context.handle)
        try:
            with keep_cuda_context("CreateEncoder"):  # a failed create leaves a context current
                self._encoder = self._nvc.CreateEncoder(self.width, self.height, "NV12", 0, **options)
        except Exception as error:  # noqa: BLE001
            self._release_encoder()
            raise OutputError(f"NVENC could not start for {self.spec.path}: "
                              f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}") from None

    def _encode(self, frame: torch.Tensor, index: int):
        params = self._nvc.NV_ENC_PIC_PARAMS()
        params.inputTimeStamp = index
        # CAI planes, not the tensor itself: PyNvVideoCodec 2.2 calls ``__dlpack__(stream)``
        # positionally, and torch takes ``stream`` as a keyword only (a TypeError per frame).
        return self._encoder.Encode(_Nv12Planes(frame, self.width, self.height), params)

    def _mux_packets(self, packets) -> None:
        for packet in packets:
            index = int(packet["timestamp"])
            pts = self._pts_by_index.pop(index, None)
            if pts is None:
                raise OutputError(f"NVENC returned a packet for unknown frame {index}")
            kind = int(packet.get("picture_type", -1))
            self._muxer.mux(packet["data"], pts, pts,
                            kind in (_NV_ENC_PIC_TYPE_I, _NV_ENC_PIC_TYPE_IDR))

    def _forget_finished_inputs(self) -> None:
        while self._in_flight and self._in_flight[0][1].query():
            self._in_flight.popleft()

    @property
    def notes(self) -> list[str]:
        return self._muxer.notes

    def write(self, frame: torch.Tensor, pts: Optional[int]) -> torch.cuda.Event:
        """Encode one CUDA NV12 frame (see the class docstring); returns its release event."""
        if self._closed:
            raise OutputError(f"write after close: {self.spec.path}")
        expected = (self.height * 3 // 2, self.width)
        if not (isinstance(frame, torch.Tensor) and frame.is_cuda and frame.dtype == torch.uint8
                and tuple(frame.shape) == expected):
            raise ValueError(f"expected a CUDA uint8 NV12 tensor of {expected}, got "
                             f"{getattr(frame, 'shape', type(frame))} "
                             f"{getattr(frame, 'dtype', '')} {getattr(frame, 'device', '')}")
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._frame_ticks
        if self._last_pts is not None and pts <= self._last_pts:
            raise OutputError(f"frame pts {pts} does not increase (previous {self._last_pts})")
        with torch.cuda.device(self.device):
            writer = torch.cuda.current_stream(self.device)
            frame = frame if frame.is_contiguous() else frame.contiguous()
            self._stream.wait_stream(writer)
            index = self.frames_written
            self._pts_by_index[index] = int(pts)
            try:
                packets = self._encode(frame, index)
            except Exception as error:  # noqa: BLE001
                raise OutputError(f"NVENC failed on frame {index} of {self.spec.path}: "
                                  f"{error}") from None
            done = torch.cuda.Event()
            done.record(self._stream)
            frame.record_stream(self._stream)
            self._in_flight.append((frame, done))
            self._forget_finished_inputs()
        self.frames_written += 1
        self._last_pts = int(pts)
        self._mux_packets(packets)
        return done

    def _flush(self) -> None:
        if self._encoder is not None:
            with torch.cuda.device(self.device):
                packets = self._encoder.EndEncode()
                self._stream.synchronize()
            self._in_flight.clear()
            self._mux_packets(packets)
            self._release_encoder()

    def _release_encoder(self) -> None:
        self._encoder = None
        if self._context is not None:
            self._context.release()
            self._context = None

    def finish(self) -> None:
        """Flush the encoder, copy the audio and finish the file at the staging path."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
        except BaseException:
            self._muxer.discard()
            raise
        self._muxer.finish()

    def discard(self) -> None:
        """Drop everything (an error elsewhere): no file is left behind."""
        self._closed = True
        self._release_encoder()
        self._in_flight.clear()
        self._muxer.discard()


__all__ = ["NvencSink", "PacketMuxer", "nvenc_options", "nvenc_codec", "DEFAULT_QP"]
