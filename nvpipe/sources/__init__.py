"""Sources: where frames come from. ``open_source`` picks one from the path and device.

A ``Source`` has ``.info`` (:class:`nvpipe.frames.StreamInfo`), ``.live`` (it arrives in
real time: ``nvpipe.sources.live``), yields :class:`nvpipe.frames.DecodedFrame` in
presentation order when iterated (once), then has ``.damage`` (None, or what could not be
decoded: the run fails on it) and ``.notes`` (what the run's summary should say: packets a
stream lost, how it ended), has ``.close()`` and is a context manager.
"""

from __future__ import annotations

import os
import warnings
from fractions import Fraction
from typing import Iterator, Optional, Protocol, Sequence, Union, runtime_checkable

from nvpipe.errors import DeviceError, InputError
from nvpipe.frames import DecodedFrame, StreamInfo
from nvpipe.sources.images import ImageSequenceSource, is_image_path, is_sequence_pattern
from nvpipe.sources.trim import TrimmedSource, trim


@runtime_checkable
class Source(Protocol):
    info: StreamInfo
    live: bool
    damage: Optional[str]
    notes: Sequence[str]

    def __iter__(self) -> Iterator[DecodedFrame]: ...

    def close(self) -> None: ...


def open_source(path: str, *, device: str = "cpu", fps: Union[float, Fraction, None] = None,
                input_format: Optional[str] = None, input_options: Optional[dict] = None,
                timeout: Optional[float] = None, live: Optional[bool] = None,
                stop=None) -> Source:
    """Opens a video file, a directory of pictures, a ``%05d.png`` pattern, one picture, or
    a stream (standard input, a named pipe, an FFmpeg URL, a capture device: see
    ``nvpipe.sources.live``; streams always decode with PyAV, ``input_format``,
    ``input_options``, ``timeout``, ``live`` and ``stop`` are
    :class:`~nvpipe.sources.pyav.PyAVSource`'s).

    Args:
        path: the input.
        device: ``"cpu"`` (PyAV; pictures always decode here) or ``"cuda"``/``"cuda:N"``
            (NVDEC of that GPU through ``nvpipe.sources.nvdec``, imported only then). Where NVDEC cannot run (no
            PyNvVideoCodec, the driver's video libraries missing, a stream NVDEC does not
            take) the file decodes on the CPU with PyAV, after a one-line warning: the GPU
            pipeline then converts the frames after a host-to-device copy.
        fps: frame rate assigned to picture sequences (default 30); ignored for videos,
            whose own timestamps are kept.

    Raises:
        InputError: missing, unreadable, non-video or truncated input.
    """
    from nvpipe.sources.live import locate_input

    from nvpipe.job import device_type, gpu_index

    path = str(path)
    kind = device_type(device)  # ValueError for anything but cpu, cuda, cuda:N
    stream = dict(input_format=input_format, input_options=input_options, timeout=timeout,
                  live=live, stop=stop)
    if not locate_input(path, live=live, input_format=input_format).is_file or input_format:
        from nvpipe.sources.pyav import PyAVSource

        return PyAVSource(path, **stream)
    if is_picture_input(path):
        return ImageSequenceSource(path, fps=fps)
    if not os.path.exists(path):
        raise InputError(f"input not found: {path}")
    if kind == "cuda":
        nvdec = _open_nvdec(path, gpu_index(device))
        if nvdec is not None:
            return nvdec
    from nvpipe.sources.pyav import PyAVSource

    return PyAVSource(path, **stream)


def is_picture_input(path: str) -> bool:
    """A directory of pictures, a ``%05d.png`` pattern or one picture (not a video)."""
    path = str(path)
    return os.path.isdir(path) or (not os.path.exists(path) and is_sequence_pattern(path)) \
        or (os.path.isfile(path) and is_image_path(path))


def _open_nvdec(path: str, gpu_id: int = 0):
    """An ``NvdecSource`` for ``path``, or None (after a one-line warning) where NVDEC
    cannot decode it here; ``InputError`` for a file that no decoder can read."""
    try:
        from nvpipe.sources.nvdec import NvdecSource, NvdecUnsupported
    except ImportError as error:
        warnings.warn(f"{path}: NVDEC decoding is not available ({error}); decoding on the CPU",
                      stacklevel=3)
        return None
    try:
        return NvdecSource(path, gpu_id)
    except NvdecUnsupported as error:
        # A stream NVDEC cannot take (4:2:2, a codec this GPU lacks).
        warnings.warn(f"{path}: {error}; decoding on the CPU", stacklevel=3)
    except DeviceError as error:
        # No PyNvVideoCodec, or the driver's video libraries are missing (a container
        # without NVIDIA_DRIVER_CAPABILITIES=video): --device auto/cuda promise CPU decoding.
        warnings.warn(f"{path}: NVDEC cannot run ({error}); decoding on the CPU", stacklevel=3)
    return None


__all__ = ["Source", "open_source", "is_picture_input", "ImageSequenceSource", "TrimmedSource", "trim"]
