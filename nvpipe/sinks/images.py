"""PNG sequences as an output: a folder (files ``00000.png``, ``00001.png``...) or a pattern
such as ``out/frame_%05d.png``. Numbering starts at 0 and counts written frames.

Kinds: ``rgba``/``rgba_premultiplied`` -> RGBA PNGs; ``alpha`` -> 8-bit grey PNGs;
``composite``/``foreground`` -> RGB PNGs. Each picture is written under a hidden
temporary name and renamed, so every file present is complete: ``abort`` keeps the
pictures written (or removes the folder it created when there are none).
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import av

from ..errors import OutputError
from ..frames import ColorSpec, StreamInfo
from ..job import OutputSpec
from ..sources.images import is_sequence_pattern, pattern_regex
from .pyav import as_numpy
from ._base import SinkBase

DEFAULT_NAME = "%05d.png"


def is_sequence_output(path: str) -> bool:
    """A folder (existing, ending in a separator, or a name without extension) or a
    printf pattern with one integer field (``%05d``)."""
    path = str(path)
    if path == os.devnull:  # the null output (nvpipe.sinks.null), not a folder
        return False
    if is_sequence_pattern(path):
        return True
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        return True
    return os.path.splitext(path)[1] == "" and not os.path.isfile(path)


class PngSequenceSink(SinkBase):
    """Writes frames as PNG files.

    Attributes:
        pixel_format: ``"rgba"`` uint8 ``(H, W, 4)``, ``"gray"`` ``(H, W)`` or ``"rgb24"``
            ``(H, W, 3)``, ``H, W`` = ``info.display_size``.
        color: unused by RGB pictures (BT.709 full range, for symmetry with video sinks).
        files: the paths written, in order.
    """

    def __init__(self, spec: OutputSpec, info: StreamInfo, *, overwrite: bool = False) -> None:
        from . import same_file

        path = str(spec.path)
        self.encoder_name = "png (CPU)"
        if is_sequence_pattern(path):
            self.folder, self.name_pattern = os.path.split(os.path.abspath(path))
        else:
            self.folder, self.name_pattern = os.path.abspath(path), DEFAULT_NAME
        if not self.name_pattern.lower().endswith(".png"):
            raise OutputError(f"picture sequences are written as PNG: use a %05d.png pattern, not {path}")
        if spec.codec not in (None, "png"):
            raise OutputError(f"picture sequences are PNG; codec {spec.codec!r} does not apply to {path}")
        if info is not None and info.path and (same_file(self.folder, info.path)
                                               or same_file(path, info.path)):
            raise OutputError(f"output is the input: {path}")
        parent = os.path.dirname(self.folder)
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise OutputError(f"output folder is a file: {self.folder}")
        if not os.path.isdir(self.folder) and not os.path.isdir(parent):
            raise OutputError(f"output folder does not exist: {parent}")
        regex = pattern_regex(self.name_pattern)
        existing = [n for n in os.listdir(self.folder) if regex.match(n)] \
            if os.path.isdir(self.folder) else []
        if existing and not overwrite:
            raise OutputError(f"output exists: {path} holds {len(existing)} frames "
                              f"(use --overwrite to replace them)")
        for name in existing:
            os.remove(os.path.join(self.folder, name))
        self._created_folder = not os.path.isdir(self.folder)
        if self._created_folder:
            os.mkdir(self.folder)

        self.path = path
        self.width, self.height = info.display_size
        self.pixel_format = {"rgba": "rgba", "rgba_premultiplied": "rgba", "alpha": "gray"}.get(
            spec.kind, "rgb24")
        self.color = ColorSpec("bt709", True)
        self.frames_written = 0
        self.files: list[str] = []
        self._finished = False
        self._encoder: Optional[av.CodecContext] = None

    def _encode(self, array) -> bytes:
        if self._encoder is None:
            encoder = av.CodecContext.create("png", "w")
            encoder.width, encoder.height = self.width, self.height
            encoder.pix_fmt = self.pixel_format
            encoder.time_base = 1
            self._encoder = encoder
        frame = av.VideoFrame.from_numpy_buffer(array, format=self.pixel_format)
        return b"".join(bytes(packet) for packet in self._encoder.encode(frame))

    def write(self, array, pts: Optional[int] = None) -> None:
        """Writes the next picture. ``array``: uint8 in ``pixel_format``; ``pts`` unused
        (pictures carry no time; they are numbered in write order)."""
        if self._finished:
            raise RuntimeError("write after close/abort")
        array = as_numpy(array)
        channels = {"rgba": (4,), "rgb24": (3,), "gray": ()}[self.pixel_format]
        expected = (self.height, self.width) + channels
        if array.shape != expected:
            raise ValueError(f"{self.pixel_format} frame for {self.path} must be {expected}, got {array.shape}")
        name = self.name_pattern % self.frames_written
        target = os.path.join(self.folder, name)
        temporary = os.path.join(self.folder, f".{name}.partial")
        try:
            with open(temporary, "wb") as file:
                file.write(self._encode(array))
            os.replace(temporary, target)
        except (OSError, av.FFmpegError) as error:
            raise OutputError(f"writing {target} failed ({error})") from None
        self.files.append(target)
        self.frames_written += 1

    def close(self) -> None:
        """Ends the sequence. Raises :class:`OutputError` when no picture was written (the
        folder this sink created is removed)."""
        if self._finished:
            return
        if self.frames_written == 0:
            self.abort()
            raise OutputError(f"no frames were written to {self.path}")
        self._finished = True

    def abort(self) -> None:
        """Keeps the pictures written; with none, removes the folder this sink created."""
        if self._finished:
            return
        self._finished = True
        if self.frames_written == 0 and self._created_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["PngSequenceSink", "is_sequence_output"]
