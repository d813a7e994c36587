"""Sinks: where output frames go. ``open_sink`` picks one from the output's name and codec.

Every sink implements the contract of :class:`nvpipe.sinks.Sink` (``_base.py``): it writes
into a staging path that ``nvpipe.sinks.outputs.Outputs`` gives it, ``finish()`` completes a
playable file there and ``discard()`` removes it; where the file ends up (the target, or
nowhere) is the run's output policy in ``nvpipe.sinks.outputs``, not the sink's.
"""

from __future__ import annotations

import os
from typing import Optional

from nvpipe.errors import OutputError
from nvpipe.frames import StreamInfo
from nvpipe.job import OutputSpec
from nvpipe.sinks._base import Sink, SinkBase
from nvpipe.sinks.encoders import NVENC_FORMATS, choose_encoder, nvenc_codec, requests_nvenc
from nvpipe.sinks.images import PngSequenceSink, is_sequence_output, sequence_location
from nvpipe.sinks.null import NullSink, is_null_output
from nvpipe.sinks.picture import PictureSink, is_picture_output
from nvpipe.sinks.pyav import CONTAINERS, PyAVSink, resolve_codec
from nvpipe.sinks.stream import StreamSink, is_stream_output


def open_sink(spec: OutputSpec, info: StreamInfo, *, staging: Optional[str],
              audio_from: Optional[str] = None, shares_cores_with_network: bool = True,
              gpu_id: int = 0) -> Sink:
    """Opens the writer for one output.

    Args:
        spec: the output (path, kind, codec, crf/bitrate, preset). A folder path (existing,
            ending in a separator, or without extension) or a ``%05d.png`` pattern writes
            PNGs; a picture name (``cut.png``, ``cut.jpg``) writes the one frame of the
            input as a picture (:class:`PictureSink`); ``os.devnull`` discards the frames (:class:`NullSink`); ``-`` or a URL
            streams (:class:`StreamSink`, muxer ``spec.format``); ``.mp4``/``.mkv``
            H.264 (or ``codec`` hevc/av1), ``.mov`` ProRes 4444, ``.webm`` VP9; an NVENC
            codec (``nvenc``, ``h264_nvenc``...) goes to ``nvpipe.sinks.nvenc``.
        info: the output's stream facts; frames are ``info.display_size``, timestamps in
            ``info.time_base``.
        staging: the file (a folder for PNG sequences) to write; None for the null output.
        audio_from: a file whose audio streams are copied in (containers that take them).
        shares_cores_with_network: the network runs on the CPU too (CPU encoders then take
            fewer threads; see ``pyav.encoder_threads``).
        gpu_id: the CUDA device of an NVENC output.

    Raises:
        OutputError: an unknown codec or extension, a kind or crf the format cannot take.
    """
    path = str(spec.path)
    if is_null_output(path):
        return NullSink(spec, info)
    if is_stream_output(path):
        return StreamSink(spec, info, shares_cores_with_network=shares_cores_with_network,
                          container_format=spec.format)
    if spec.format:
        raise OutputError(f"--format is for stream outputs (- or a URL); {path} takes its "
                          f"format from its extension")
    if is_picture_output(path):
        return PictureSink(spec, info, staging=staging, audio_from=audio_from)
    if is_sequence_output(path):
        return PngSequenceSink(spec, info, staging=staging, audio_from=audio_from)
    if requests_nvenc(spec):
        nvenc_codec(spec)  # OutputError for what NVENC cannot write, before importing it
        try:
            from nvpipe.sinks.nvenc import NvencSink
        except ImportError as error:
            raise OutputError(f"NVENC output is not available ({error})") from None
        return NvencSink(spec, info, staging=staging, audio_from=audio_from, gpu_id=gpu_id)
    extension = os.path.splitext(path)[1].lower()
    if extension not in CONTAINERS:
        raise OutputError(
            f"unsupported output type {extension or '(no extension)'!r}: {path} "
            f"(use .mp4, .mkv, .mov, .webm, a folder or a %05d.png pattern)")
    resolve_codec(extension, spec)  # raises OutputError for a codec or kind the format lacks
    return PyAVSink(spec, info, staging=staging, audio_from=audio_from,
                    shares_cores_with_network=shares_cores_with_network)


__all__ = ["Sink", "SinkBase", "open_sink", "choose_encoder", "nvenc_codec", "NVENC_FORMATS",
           "is_null_output", "is_sequence_output", "sequence_location", "PyAVSink",
           "PngSequenceSink", "NullSink", "StreamSink", "is_stream_output", "PictureSink",
           "is_picture_output"]
