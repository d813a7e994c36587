"""One picture as an output: ``nvpipe run photo.jpg cut.png`` (as rembg's ``i``).

A name with a picture extension (``.png``, ``.webp``, ``.tif``/``.tiff``, ``.jpg``/``.jpeg``,
``.bmp``) that is not a ``%05d`` pattern is a single picture: the input must give exactly
one frame (a picture, or a video with ``--frames 1``). PNG, WebP and TIFF keep alpha (the
default kind for them is ``rgba``, a cut-out); JPEG and BMP do not (``composite``,
``foreground`` or ``alpha``). The picture is written with Pillow into the staging file
that ``nvpipe.sinks.outputs`` moves into place.
"""

from __future__ import annotations

import os
from typing import Optional

from nvpipe.errors import OutputError
from nvpipe.frames import ColorSpec, StreamInfo
from nvpipe.job import ALPHA_KINDS, OutputSpec
from nvpipe.sinks._base import SinkBase
from nvpipe.sinks.images import picture_pixel_format

# extension -> (Pillow format, keeps alpha)
PICTURE_FORMATS = {".png": ("PNG", True), ".webp": ("WEBP", True), ".tif": ("TIFF", True),
                   ".tiff": ("TIFF", True), ".jpg": ("JPEG", False), ".jpeg": ("JPEG", False),
                   ".bmp": ("BMP", False)}


def is_picture_output(path) -> bool:
    """A single picture: a picture extension, no ``%d`` pattern, not an existing folder."""
    from nvpipe.sources.images import is_sequence_pattern

    text = str(path)
    extension = os.path.splitext(text)[1].lower()
    return (extension in PICTURE_FORMATS and not is_sequence_pattern(text)
            and not text.endswith(("/", os.sep)) and not os.path.isdir(text))


def picture_keeps_alpha(path) -> bool:
    return PICTURE_FORMATS.get(os.path.splitext(str(path))[1].lower(), ("", False))[1]


class PictureSink(SinkBase):
    """Writes the one frame of a run as a picture (see the module docstring).

    Attributes:
        pixel_format: ``"rgba"`` (alpha kinds), ``"gray"`` (alpha) or ``"rgb24"``.
    """

    encoder_name = "picture (CPU)"

    def __init__(self, spec: OutputSpec, info: StreamInfo, *, staging: str,
                 audio_from: Optional[str] = None) -> None:
        self.path = str(spec.path)
        extension = os.path.splitext(self.path)[1].lower()
        self.format, keeps_alpha = PICTURE_FORMATS[extension]
        if spec.kind in ALPHA_KINDS and not keeps_alpha:
            raise OutputError(f"{extension} pictures have no alpha: write {spec.kind} to a .png, "
                              f".webp or .tif (or give --type composite/foreground/alpha)")
        if spec.codec not in (None, "png") or spec.bitrate is not None:
            raise OutputError(f"a picture output takes no --codec or --bitrate: {self.path}")
        if info.frame_count is not None and info.frame_count > 1:
            raise OutputError(f"{self.path} is one picture but the input has {info.frame_count} "
                              f"frames: write a sequence (frames/%05d.png) or give --frames 1")
        self.staging = staging
        self.width, self.height = info.display_size
        self.pixel_format = picture_pixel_format(spec.kind)
        self.color = ColorSpec("bt709", True)
        self.frames_written = 0
        self.notes = ([f"{self.path}: a picture carries no audio; the input's audio was not written"]
                      if audio_from is not None else [])
        self._done = False

    def write(self, array, pts: Optional[int] = None) -> None:
        from PIL import Image

        from nvpipe.sinks.pyav import as_numpy

        if self._done:
            raise RuntimeError("write after finish/discard")
        if self.frames_written:
            raise OutputError(f"{self.path} is one picture but the input gives more than one "
                              f"frame: write a sequence (frames/%05d.png) or give --frames 1")
        picture = Image.fromarray(as_numpy(array))
        options = {"quality": 95} if self.format == "JPEG" else {}
        try:
            picture.save(self.staging, format=self.format, **options)
        except OSError as error:
            raise OutputError(f"writing {self.path} failed ({error})") from None
        self.frames_written = 1

    def finish(self) -> None:
        if self._done:
            return
        if not self.frames_written:
            self.discard()
            raise OutputError(f"no frame was written to {self.path}")
        self._done = True

    def discard(self) -> None:
        self._done = True
        try:
            os.remove(self.staging)
        except OSError:
            pass


__all__ = ["PictureSink", "is_picture_output", "picture_keeps_alpha", "PICTURE_FORMATS"]
