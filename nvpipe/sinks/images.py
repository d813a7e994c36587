"""PNG sequences as an output: a folder (files ``00000.png``, ``00001.png``...) or a pattern
such as ``out/frame_%05d.png``. Numbering starts at 0 and counts written frames.

Kinds: ``rgba``/``rgba_premultiplied`` -> RGBA PNGs; ``alpha`` -> 8-bit grey PNGs;
``composite``/``foreground`` -> RGB PNGs. The pictures are written into a staging folder
that ``nvpipe.sinks.outputs`` moves into place. PNGs carry no audio: ``notes`` says when
the input had some.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import av

from nvpipe.errors import OutputError
from nvpipe.frames import ColorSpec, StreamInfo
from nvpipe.job import ALPHA_KINDS, OutputSpec
from nvpipe.sources.images import is_sequence_pattern
from nvpipe.sinks.pyav import as_numpy, video_frame
from nvpipe.sinks._base import SinkBase

DEFAULT_NAME = "%05d.png"


def is_sequence_output(path: str) -> bool:
    """A folder (existing, ending in a separator, or a name without extension) or a
    printf pattern with one integer field (``%05d``). An existing folder named like a video
    file (``dir.mp4``) is not: writing PNGs into it is never what was meant."""
    from nvpipe.sinks.pyav import CONTAINERS

    path = str(path)
    if path == os.devnull:  # the null output (nvpipe.sinks.null), not a folder
        return False
    if is_sequence_pattern(path):
        return True
    if path.endswith(("/", os.sep)):
        return True
    if os.path.isdir(path):
        return os.path.splitext(path)[1].lower() not in CONTAINERS
    return os.path.splitext(path)[1] == "" and not os.path.isfile(path)


def sequence_location(path: str) -> tuple[str, str]:
    """``(folder, name pattern)`` of a sequence output: ``out/`` -> ``(out, %05d.png)``,
    ``out/f_%03d.png`` -> ``(out, f_%03d.png)``; the folder is absolute."""
    path = str(path)
    if is_sequence_pattern(path):
        folder, pattern = os.path.split(os.path.abspath(path))
        return folder, pattern
    return os.path.abspath(path), DEFAULT_NAME


def picture_pixel_format(kind: str) -> str:
    """The pixel format a picture of ``kind`` is written in: RGBA, grey alpha, or RGB."""
    return "rgba" if kind in ALPHA_KINDS else "gray" if kind == "alpha" else "rgb24"


class PngSequenceSink(SinkBase):
    """Writes frames as PNG files into the staging folder, named by the output's pattern.

    Attributes:
        pixel_format: ``"rgba"`` uint8 ``(H, W, 4)``, ``"gray"`` ``(H, W)`` or ``"rgb24"``
            ``(H, W, 3)``, ``H, W`` = ``info.display_size``.
        color: unused by RGB pictures (BT.709 full range, for symmetry with video sinks).
        files: the names written, in order.
    """

    encoder_name = "png (CPU)"

    def __init__(self, spec: OutputSpec, info: StreamInfo, *, staging: str,
                 audio_from: Optional[str] = None) -> None:
        path = str(spec.path)
        self.folder, self.name_pattern = sequence_location(path)
        if not self.name_pattern.lower().endswith(".png"):
            raise OutputError(f"picture sequences are written as PNG: use a %05d.png pattern, not {path}")
        if spec.codec not in (None, "png"):
            raise OutputError(f"picture sequences are PNG; codec {spec.codec!r} does not apply to {path}")
        self.path = path
        self.staging = staging
        self.width, self.height = info.display_size
        self.pixel_format = picture_pixel_format(spec.kind)
        self.color = ColorSpec("bt709", True)
        self.frames_written = 0
        self.files: list[str] = []
        self.notes = ([f"{spec.path}: PNG pictures carry no audio; the input's audio was not written"]
                      if audio_from is not None else [])
        self._finished = False
        self._encoder: Optional[av.CodecContext] = None

    def _encode(self, array) -> bytes:
        if self._encoder is None:
            encoder = av.CodecContext.create("png", "w")
            encoder.width, encoder.height = self.width, self.height
            encoder.pix_fmt = self.pixel_format
            encoder.time_base = 1
            self._encoder = encoder
        frame = video_frame(array, self.pixel_format)
        return b"".join(bytes(packet) for packet in self._encoder.encode(frame))

    def write(self, array, pts: Optional[int] = None) -> None:
        """Writes the next picture. ``array``: uint8 in ``pixel_format``; ``pts`` unused
        (pictures carry no time; they are numbered in write order)."""
        if self._finished:
            raise RuntimeError("write after finish/discard")
        array = as_numpy(array)
        channels = {"rgba": (4,), "rgb24": (3,), "gray": ()}[self.pixel_format]
        expected = (self.height, self.width) + channels
        if array.shape != expected:
            raise ValueError(f"{self.pixel_format} frame for {self.path} must be {expected}, got {array.shape}")
        name = self.name_pattern % self.frames_written
        try:
            with open(os.path.join(self.staging, name), "wb") as file:
                file.write(self._encode(array))
        except (OSError, av.FFmpegError) as error:
            raise OutputError(f"writing {os.path.join(self.folder, name)} failed "
                              f"({getattr(error, 'strerror', None) or error})") from None
        self.files.append(name)
        self.frames_written += 1

    def finish(self) -> None:
        """Every picture is already complete; raises :class:`OutputError` when none was written."""
        if self._finished:
            return
        if self.frames_written == 0:
            self.discard()
            raise OutputError(f"no frames were written to {self.path}")
        self._finished = True

    def discard(self) -> None:
        """Removes the staging folder and its pictures. Never raises; idempotent."""
        self._finished = True
        shutil.rmtree(self.staging, ignore_errors=True)


__all__ = ["PngSequenceSink", "is_sequence_output", "sequence_location"]
