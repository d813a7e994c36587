"""Which encoder an output goes to: the one table of what NVENC can take.

NVENC encodes 8-bit 4:2:0 without alpha; PyAV's CPU encoders take everything else.
``choose_encoder`` is the single place that routes an output to NVENC.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable

from nvpipe.errors import DeviceError, OutputError
from nvpipe.job import ALPHA_KINDS, OutputSpec

# Container -> the codecs NVENC output can be muxed into it as.
NVENC_FORMATS = {".mp4": ("h264", "hevc", "av1"), ".mkv": ("h264", "hevc", "av1"),
                 ".mov": ("h264", "hevc")}
# Codec names an output may give -> the codec NVENC encodes. The ``*nvenc`` names ask for
# NVENC explicitly; the plain ones are what ``--encoder auto`` may route to it.
NVENC_CODEC_NAMES = {"nvenc": "h264", "h264_nvenc": "h264", "hevc_nvenc": "hevc",
                     "av1_nvenc": "av1", "h264": "h264", "avc": "h264", "hevc": "hevc",
                     "h265": "hevc", "av1": "av1"}
NVENC_REQUESTS = ("nvenc", "h264_nvenc", "hevc_nvenc", "av1_nvenc")
DEFAULT_CODEC_BY_CONTAINER = {".mp4": "h264", ".mkv": "h264", ".mov": "prores"}


def requests_nvenc(spec: OutputSpec) -> bool:
    """The output names an NVENC codec (``nvenc``, ``h264_nvenc``...)."""
    return (spec.codec or "").lower() in NVENC_REQUESTS


def nvenc_codec(spec: OutputSpec) -> str:
    """``"h264"``, ``"hevc"`` or ``"av1"``: what NVENC encodes for ``spec``.

    Raises:
        OutputError: NVENC cannot write it (alpha, another codec or container).
    """
    suffix = os.path.splitext(str(spec.path))[1].lower()
    if suffix not in NVENC_FORMATS:
        raise OutputError(f"NVENC output must be {', '.join(NVENC_FORMATS)}, got {spec.path}")
    if spec.kind in ALPHA_KINDS:
        raise OutputError(f"NVENC cannot encode alpha ({spec.kind}); use a .mov/.webm CPU codec")
    name = (spec.codec or DEFAULT_CODEC_BY_CONTAINER[suffix]).lower()
    codec = NVENC_CODEC_NAMES.get(name)
    if codec is None or codec not in NVENC_FORMATS[suffix]:
        raise OutputError(f"NVENC encodes {', '.join(NVENC_FORMATS[suffix])} into {suffix}, "
                          f"not {spec.codec or name!r}")
    return codec


def choose_encoder(spec: OutputSpec, *, device: str, policy: str,
                   has_nvenc: Callable[[str], bool]) -> OutputSpec:
    """``spec`` with its codec routed to NVENC (``<codec>_nvenc``) or left to the CPU.

    ``policy``: ``"cpu"`` never NVENC; ``"nvenc"`` always (``OutputError`` where it cannot);
    ``"auto"`` NVENC on CUDA where ``has_nvenc(codec)`` says the GPU has one for the codec
    (H100, H200, A100 have none). An output that names an NVENC codec always goes there.
    """
    if requests_nvenc(spec):
        return spec
    if device != "cuda" or policy == "cpu":
        return spec
    try:
        codec = nvenc_codec(spec)
    except OutputError:
        if policy == "nvenc":
            raise
        return spec
    if policy == "auto" and not has_nvenc(codec):
        return spec
    return replace(spec, codec=f"{codec}_nvenc")


def fallback_opener(open_sink: Callable[..., object], cpu_specs: dict[str, OutputSpec],
                    notes: list[str]) -> Callable[..., object]:
    """``open_sink`` for outputs ``--encoder auto`` routed to NVENC: where the NVENC sink
    cannot open (no encoder on this GPU, a session limit, a driver error), the output opens
    with its CPU spec from ``cpu_specs`` (keyed by path) and ``notes`` gets one line saying
    why. Outputs not in ``cpu_specs`` (the CPU ones, or NVENC asked for by name) open as
    they are, and their errors propagate. The encoder opens before the first frame
    (``NvencSink.__init__``), so nothing has been written when this falls back.
    """
    def open_with_fallback(spec: OutputSpec, info, **kwargs):
        try:
            return open_sink(spec, info, **kwargs)
        except (OutputError, DeviceError) as error:  # DeviceError: PyNvVideoCodec cannot load
            cpu_spec = cpu_specs.get(str(spec.path))
            if cpu_spec is None:
                raise
            sink = open_sink(cpu_spec, info, **kwargs)
            notes.append(f"{spec.path}: NVENC could not start ({error}); encoded on the CPU "
                         f"({getattr(sink, 'encoder_name', 'CPU encoder')}) instead")
            return sink

    return open_with_fallback


__all__ = ["NVENC_FORMATS", "choose_encoder", "fallback_opener", "nvenc_codec", "requests_nvenc"]
