"""Image sequences as a source: a directory of pictures or a printf pattern like
``frames/%05d.png``. Each picture is decoded with PyAV (PNG, JPEG, BMP, TIFF, WebP...)."""

from __future__ import annotations

import os
import re
from fractions import Fraction
from typing import Iterator, Optional, Union

import av
import numpy as np
import torch

from nvpipe.errors import InputError
from nvpipe.frames import ColorSpec, DecodedFrame, StreamInfo

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_PRINTF_INTEGER = re.compile(r"%(0?)(\d*)d")


def is_image_path(path: str) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def is_sequence_pattern(path: str) -> bool:
    """True for a printf pattern with one integer field, e.g. ``out/%05d.png``."""
    return len(_PRINTF_INTEGER.findall(os.path.basename(str(path)))) == 1


def pattern_regex(pattern: str) -> "re.Pattern[str]":
    """The regex matching file names of a printf pattern's basename: ``%05d`` takes
    exactly 5 digits (or more, as printf prints larger numbers), ``%d`` any digits."""
    name = os.path.basename(pattern)
    match = _PRINTF_INTEGER.search(name)
    width = int(match.group(2) or 0) if match.group(1) else 0
    digits = rf"(\d{{{width},}})" if width else r"(\d+)"
    return re.compile(re.escape(name[: match.start()]) + digits + re.escape(name[match.end():]) + r"$")


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_sequence(path: str) -> list[str]:
    """The files of an image sequence in order: a directory's pictures by natural sort
    (``2.png`` before ``10.png``), or a pattern's matches by their number."""
    path = str(path)
    if os.path.isdir(path):
        names = [n for n in os.listdir(path) if is_image_path(n) and not n.startswith(".")]
        return [os.path.join(path, n) for n in sorted(names, key=_natural_key)]
    if is_sequence_pattern(path):
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise InputError(f"input folder not found: {folder}")
        regex = pattern_regex(path)
        numbered = [(int(m.group(1)), n) for n in os.listdir(folder) if (m := regex.match(n))]
        return [os.path.join(folder, n) for _, n in sorted(numbered)]
    if os.path.isfile(path) and is_image_path(path):
        return [path]
    raise InputError(f"input not found: {path}")


def read_image(path: str, pix_fmt: Optional[str] = None) -> np.ndarray:
    """Decodes one picture to uint8 ``(H, W, 3)`` (``"rgb24"``) or ``(H, W, 4)``
    (``"rgba"``); ``pix_fmt`` None picks ``rgba`` when the file has alpha."""
    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0))
    except (av.FFmpegError, StopIteration, IndexError) as error:
        raise InputError(f"not a readable image: {path} ({type(error).__name__})") from None
    if pix_fmt is None:
        has_alpha = any(c.is_alpha for c in frame.format.components) or frame.format.has_palette
        pix_fmt = "rgba" if has_alpha else "rgb24"
    return frame.to_ndarray(format=pix_fmt)


class ImageSequenceSource:
    """Pictures as frames: ``pts`` = index, ``time_base`` = 1/fps.

    Args:
        path: a directory (its pictures in natural order), a pattern (``frames/%05d.png``)
            or one picture.
        fps: the frame rate to assign (default 30).

    Yields :class:`DecodedFrame` with ``pix_fmt`` ``"rgb24"`` (uint8 ``(H, W, 3)``) or
    ``"rgba"`` (uint8 ``(H, W, 4)``, when the first picture has alpha; all pictures are
    then read as RGBA). A picture of another size than the first raises
    :class:`InputError`.
    """

    damage: Optional[str] = None  # pictures that fail to read raise instead
    live = False
    notes: tuple = ()

    def __init__(self, path: str, *, fps: Union[float, Fraction, None] = None) -> None:
        self.path = str(path)
        self.files = list_sequence(self.path)
        if not self.files:
            raise InputError(f"no pictures in {self.path} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        rate = Fraction(fps if fps is not None else 30).limit_denominator(1001)
        if rate <= 0:
            raise InputError(f"fps must be positive, got {fps}")
        self._first = read_image(self.files[0])
        self.pix_fmt = "rgba" if self._first.shape[2] == 4 else "rgb24"
        height, width = self._first.shape[:2]
        self.info = StreamInfo(
            path=self.path, width=width, height=height, fps=rate, time_base=1 / rate,
            frame_count=len(self.files), color=ColorSpec("bt709", True), bit_depth=8,
            codec=os.path.splitext(self.files[0])[1].lstrip(".").lower(), rotation=0,
            has_audio=False, duration=float(len(self.files) / rate))

    def __iter__(self) -> Iterator[DecodedFrame]:
        info = self.info
        for index, file in enumerate(self.files):
            if index == 0 and self._first is not None:
                array, self._first = self._first, None
            else:
                array = read_image(file, self.pix_fmt)
            if array.shape[:2] != (info.height, info.width):
                raise InputError(
                    f"picture size differs in the sequence: {file} is "
                    f"{array.shape[1]}x{array.shape[0]}, the first is {info.width}x{info.height}")
            yield DecodedFrame(data=torch.from_numpy(np.ascontiguousarray(array)),
                               pix_fmt=self.pix_fmt, width=info.width, height=info.height,
                               color=info.color, pts=index, time_base=info.time_base,
                               index=index)

    def close(self) -> None:
        self._first = None

    def __enter__(self) -> "ImageSequenceSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ImageSequenceSource", "list_sequence", "read_image", "is_sequence_pattern",
           "is_image_path", "pattern_regex", "IMAGE_EXTENSIONS"]
