"""Sinks: where output frames go. ``open_sink`` picks one from the output's name and codec.

A ``Sink`` has:

- ``pixel_format``: what ``write`` takes, uint8 numpy arrays (CPU torch tensors accepted):
  ``"rgb24"`` ``(H, W, 3)``, ``"rgba"`` ``(H, W, 4)``, ``"gray"`` ``(H, W)`` or ``"nv12"``
  ``(H + H/2, W)`` (even sizes only), ``H, W`` the input's ``display_size``;
- ``color``: the :class:`~nvpipe.frames.ColorSpec` an ``"nv12"`` array must be encoded
  with (and the stream is tagged with); meaningless for the RGB formats;
- ``write(array, pts)``: ``pts`` in the input's ``time_base`` (the output keeps it);
- ``close()``: finishes a playable file (renamed from its temporary name);
- ``abort()``: keeps a playable file of the frames written so far, or nothing if none.

Every sink writes to a hidden temporary name beside the target
(``.name.partial.ext``) and renames on ``close``/``abort``, so the target is never a
broken file. ``open_sink`` refuses, before writing anything: an existing output without
``overwrite``, a missing output folder, an output that is the input, a kind the format
cannot hold, an unknown codec or extension.
"""

from __future__ import annotations

import os
from typing import Optional, Protocol, runtime_checkable

from ..errors import OutputError
from ..frames import ColorSpec, StreamInfo
from ..job import OutputSpec
from .images import PngSequenceSink, is_sequence_output
from .null import NullSink, is_null_output
from .pyav import CONTAINERS, PyAVSink, resolve_codec

NVENC_CODECS = ("nvenc", "h264_nvenc", "hevc_nvenc", "av1_nvenc")


@runtime_checkable
class Sink(Protocol):
    pixel_format: str
    color: ColorSpec

    def write(self, array, pts: int) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def same_file(a: str, b: str) -> bool:
    """True when two paths name the same file or folder (existing or not)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(path: str, info: StreamInfo, overwrite: bool) -> None:
    """The checks every single-file output passes before anything is written.

    Raises:
        OutputError: ``path`` is the input, its folder is missing, it is a folder, or it
            exists and ``overwrite`` is False.
    """
    if info is not None and info.path and same_file(path, info.path):
        raise OutputError(f"output is the input file: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"output folder does not exist: {folder}")
    if os.path.isdir(path):
        raise OutputError(f"output is a folder, not a file: {path}")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"output exists: {path} (use --overwrite to replace it)")


def open_sink(spec: OutputSpec, info: StreamInfo, *, overwrite: bool = False,
              audio_from: Optional[str] = None) -> Sink:
    """Opens the writer for one output.

    Args:
        spec: the output (path, kind, codec, crf/bitrate, preset). A folder path (existing,
            ending in a separator, or without extension) or a ``%05d.png`` pattern writes
            PNGs; ``os.devnull`` discards the frames (:class:`NullSink`); ``.mp4``/``.mkv``
            H.264 (or ``codec`` hevc/av1), ``.mov`` ProRes 4444, ``.webm`` VP9; codec ``nvenc``/``h264_nvenc``/``hevc_nvenc`` goes to
            ``nvpipe.sinks.nvenc`` (imported only then).
        info: the input's stream facts; frames are ``info.display_size``, timestamps in
            ``info.time_base``.
        overwrite: replace an existing output (else :class:`OutputError`).
        audio_from: a file whose audio streams are copied in (containers that take them).

    Raises:
        OutputError: see the module docstring.
    """
    path = str(spec.path)
    if is_null_output(path):
        return NullSink(spec, info)
    if is_sequence_output(path):
        return PngSequenceSink(spec, info, overwrite=overwrite)
    check_output_file(path, info, overwrite)
    codec = (spec.codec or "").lower()
    if codec in NVENC_CODECS:
        try:
            from .nvenc import NvencSink
        except ImportError as error:
            raise OutputError(f"NVENC output is not available ({error})") from None
        return NvencSink(spec, info, overwrite=overwrite, audio_from=audio_from)
    extension = os.path.splitext(path)[1].lower()
    if extension not in CONTAINERS:
        raise OutputError(
            f"unsupported output type {extension or '(no extension)'!r}: {path} "
            f"(use .mp4, .mkv, .mov, .webm, a folder or a %05d.png pattern)")
    resolve_codec(extension, spec)  # raises OutputError for a codec or kind the format lacks
    return PyAVSink(spec, info, overwrite=overwrite, audio_from=audio_from)


__all__ = ["Sink", "open_sink", "check_output_file", "same_file", "PyAVSink", "PngSequenceSink", "NullSink"]
