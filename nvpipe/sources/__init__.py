"""Sources: where frames come from. ``open_source`` picks one from the path and device.

A ``Source`` has ``.info`` (:class:`nvpipe.frames.StreamInfo`), yields
:class:`nvpipe.frames.DecodedFrame` in presentation order when iterated (once), then has
``.damage`` (None, or what could not be decoded: the run fails on it), has ``.close()``
and is a context manager.
"""

from __future__ import annotations

import os
import warnings
from fractions import Fraction
from typing import Iterator, Optional, Protocol, Union, runtime_checkable

from ..errors import DeviceError, InputError
from ..frames import DecodedFrame, StreamInfo
from .images import ImageSequenceSource, is_image_path, is_sequence_pattern


@runtime_checkable
class Source(Protocol):
    info: StreamInfo
    damage: Optional[str]

    def __iter__(self) -> Iterator[DecodedFrame]: ...

    def close(self) -> None: ...


def open_source(path: str, *, device: str = "cpu", fps: Union[float, Fraction, None] = None) -> Source:
    """Opens a video file, a directory of pictures, a ``%05d.png`` pattern or one picture.

    Args:
        path: the input.
        device: ``"cpu"`` (PyAV; pictures always decode here) or ``"cuda"`` (NVDEC through
            ``nvpipe.sources.nvdec``, imported only then).
        fps: frame rate assigned to picture sequences (default 30); ignored for videos,
            whose own timestamps are kept.

    Raises:
        InputError: missing, unreadable, non-video or truncated input.
        DeviceError: ``device="cuda"`` and the NVDEC source is not available.
    """
    path = str(path)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if os.path.isdir(path) or (not os.path.exists(path) and is_sequence_pattern(path)) \
            or (os.path.isfile(path) and is_image_path(path)):
        return ImageSequenceSource(path, fps=fps)
    if not os.path.exists(path):
        raise InputError(f"input not found: {path}")
    if device == "cuda":
        try:
            from .nvdec import NvdecSource, NvdecUnsupported
        except ImportError as error:
            raise DeviceError(f"NVDEC decoding is not available ({error})") from None
        try:
            return NvdecSource(path)
        except NvdecUnsupported as error:
            # A stream NVDEC cannot take (4:2:2, a codec this GPU lacks) decodes on the CPU;
            # the conversion then runs on the GPU after a host-to-device copy.
            warnings.warn(f"{path}: {error}; decoding on the CPU", stacklevel=2)
    from .pyav import PyAVSource

    return PyAVSource(path)


__all__ = ["Source", "open_source", "ImageSequenceSource"]
