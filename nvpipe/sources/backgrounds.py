"""Backgrounds for the composite: a solid colour, a picture, a (looping) video, or the
input itself blurred.

``open_background(spec, width, height)`` returns one of:

- :class:`SolidBackground` with ``.color`` = ``(r, g, b)`` floats in [0, 1] (the kernels
  composite over the constant; no frame is ever built);
- :class:`ImageBackground` / :class:`VideoBackground` with ``frame(index)`` -> uint8
  ``[3, H, W]`` CPU tensors, resized to *cover* ``width x height`` (scaled by
  ``max(W / w, H / h)``, then centre-cropped).  A video shorter than the input loops;
- :class:`BlurBackground` (``blur[:RADIUS]``) with ``.radius``: each input frame blurred
  (``nvpipe.engine.blur``, on the frame's device).
"""

from __future__ import annotations

import functools
import math
import os
import re
from typing import Optional, Union

import av
import numpy as np
import torch

from nvpipe.errors import NvpipeError

# Colour names: every CSS/X11 name PIL.ImageColor knows (148, rebeccapurple included), with
# one exception: "green" keeps its X11 meaning, pure #00ff00 (the usual keying colour, and
# nvpipe's default), where CSS says #008000 ("lime" is #00ff00 in both).
KEYING_NAMES = {"green": "#00ff00"}
BLUR = "blur"  # --background blur[:RADIUS]: the input itself, blurred (BlurBackground)


@functools.lru_cache(maxsize=1)
def _color_names() -> dict[str, str]:
    from PIL import ImageColor

    names = {name: "#%02x%02x%02x" % ImageColor.getrgb(name)[:3] for name in ImageColor.colormap}
    names.update(KEYING_NAMES)
    return names


def __getattr__(name: str):
    """``COLOR_NAMES`` (name -> ``#rrggbb``) is built on first use: its 148 ``getrgb`` calls
    cost ~90 ms, which every run's start-up paid at import."""
    if name == "COLOR_NAMES":
        return _color_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


def parse_color(text: str) -> tuple[float, float, float]:
    """Reads a colour: ``"#00ff00"``, ``"#0f0"``, any CSS/X11 name (``"rebeccapurple"``;
    ``"green"`` is #00ff00, see :data:`KEYING_NAMES`), CSS forms PIL knows
    (``"rgb(0, 255, 0)"``, ``"hsl(120, 100%, 50%)"``), ``"0,255,0"`` (integers 0..255) or
    ``"0,1.0,0"`` (floats 0..1 when any component has a decimal point).

    Returns:
        ``(r, g, b)`` floats in [0, 1].

    Raises:
        NvpipeError: the text is none of these, naming it.
    """
    from PIL import ImageColor

    raw = str(text).strip()
    value = KEYING_NAMES.get(raw.lower(), raw)
    match = _HEX.fullmatch(value)
    if match and (value.startswith("#") or len(value) == 6):
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return tuple(int(digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore
    parts = [p.strip() for p in value.split(",")]
    if len(parts) == 3 and "(" not in value:
        try:
            if any("." in p for p in parts):
                rgb = tuple(float(p) for p in parts)
                if all(0.0 <= c <= 1.0 for c in rgb):
                    return rgb  # type: ignore
            else:
                ints = tuple(int(p) for p in parts)
                if all(0 <= c <= 255 for c in ints):
                    return tuple(c / 255.0 for c in ints)  # type: ignore
        except ValueError:
            pass
    elif value and not value.startswith("#"):
        try:
            rgb = ImageColor.getrgb(value)[:3]
        except ValueError:
            pass
        else:
            return tuple(c / 255.0 for c in rgb)  # type: ignore
    raise NvpipeError(
        f"not a colour: {text!r} (use #rrggbb, #rgb, r,g,b with 0-255, or a CSS/X11 name such "
        f"as green or rebeccapurple)")


def is_color(text: str) -> bool:
    try:
        parse_color(text)
        return True
    except NvpipeError:
        return False


def parse_blur(text: str) -> Optional[Optional[float]]:
    """``"blur"`` -> None (the default radius), ``"blur:12"`` -> 12.0; raises
    :class:`NvpipeError` for ``"blur:x"``; returns ``False`` for anything else."""
    name, colon, radius = str(text).strip().partition(":")
    if name.lower() != BLUR:
        return False
    if not colon:
        return None
    try:
        value = float(radius)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise NvpipeError(f"blur radius must be a positive number of pixels, got {text!r} "
                          f"(use blur or blur:RADIUS, e.g. blur:20)")
    return value


class BlurBackground:
    """The input frame itself, blurred, behind the subject (``--background blur[:RADIUS]``).

    ``radius``: the Gaussian's standard deviation in output pixels (CSS ``blur()``'s
    meaning); by default ``default_blur_radius(width, height)``. The engine blurs each
    frame where it is (``nvpipe.engine.blur``), so ``color`` is None and ``frame`` is not
    used: ``from_source`` says so.
    """

    color = None
    from_source = True

    def __init__(self, radius: Optional[float], width: int, height: int) -> None:
        self.width, self.height = width, height
        self.radius = float(radius) if radius is not None else default_blur_radius(width, height)

    def frame(self, index: int) -> torch.Tensor:
        raise RuntimeError("a blurred background is made from each input frame (nvpipe.engine.blur)")

    def close(self) -> None:
        pass


def default_blur_radius(width: int, height: int) -> float:
    """2% of the frame's longer side (13 px at 640, 38 px at 1080p): a background blurred
    out of recognition, as video-call tools do."""
    return max(2.0, 0.02 * max(width, height))


def _cover_geometry(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Scaled size ``(sw, sh)`` covering ``width x height`` and the crop offset ``(x, y)``."""
    scale = max(width / src_w, height / src_h)
    scaled_w = max(width, math.ceil(src_w * scale - 1e-6))
    scaled_h = max(height, math.ceil(src_h * scale - 1e-6))
    return scaled_w, scaled_h, (scaled_w - width) // 2, (scaled_h - height) // 2


def cover_frame(frame: av.VideoFrame, width: int, height: int, reformatter=None) -> torch.Tensor:
    """Resizes a decoded picture to cover ``width x height`` (bicubic, swscale) and crops
    the centre.

    Returns:
        uint8 ``[3, height, width]`` CPU tensor (contiguous), RGB.
    """
    scaled_w, scaled_h, x, y = _cover_geometry(frame.width, frame.height, width, height)
    if reformatter is None:
        rgb = frame.to_ndarray(format="rgb24", width=scaled_w, height=scaled_h,
                               interpolation="BICUBIC")
    else:
        rgb = reformatter.reformat(frame, width=scaled_w, height=scaled_h, format="rgb24",
                                   interpolation="BICUBIC").to_ndarray()
    crop = rgb[y : y + height, x : x + width]
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))


class SolidBackground:
    """A constant colour: ``color`` is ``(r, g, b)`` floats in [0, 1].

    ``frame(index)`` exists for code that wants pixels anyway: uint8 ``[3, H, W]``."""

    def __init__(self, color: tuple[float, float, float], width: int, height: int) -> None:
        self.color = tuple(float(c) for c in color)
        self.width, self.height = width, height

    def frame(self, index: int) -> torch.Tensor:
        rgb = torch.tensor([round(c * 255) for c in self.color], dtype=torch.uint8)
        return rgb.view(3, 1, 1).expand(3, self.height, self.width).contiguous()

    def close(self) -> None:
        pass


class ImageBackground:
    """One picture resized to cover the frame; ``frame(index)`` is the same uint8
    ``[3, H, W]`` tensor for every index."""

    color = None

    def __init__(self, path: str, width: int, height: int) -> None:
        self.path = path
        try:
            with av.open(path) as container:
                picture = next(container.decode(video=0))
        except (av.FFmpegError, StopIteration, IndexError) as error:
            raise NvpipeError(f"background is not a readable image: {path} ({type(error).__name__})") from None
        self._tensor = cover_frame(picture, width, height)

    def frame(self, index: int) -> torch.Tensor:
        return self._tensor

    def close(self) -> None:
        pass


class VideoBackground:
    """A video resized to cover the frame, decoded sequentially; frame ``i`` of the input
    gets frame ``i mod n`` of the background (``n`` its frame count, learnt at its end, when
    it is reopened from the start). Asking for the previous index again returns the cached
    frame; any other backwards step reopens and decodes forward.

    ``frame(index)`` -> uint8 ``[3, H, W]`` CPU tensor (owned: later calls never change it).
    """

    color = None

    def __init__(self, path: str, width: int, height: int) -> None:
        from av.video.reformatter import VideoReformatter

        self.path, self.width, self.height = path, width, height
        self._reformatter = VideoReformatter()
        self._length: Optional[int] = None
        self._container = None
        self._position = -1  # background frame index of ``_current``
        self._current: Optional[torch.Tensor] = None
        self._open()
        self._advance()
        if self._current is None:
            raise NvpipeError(f"background video has no frames: {path}")

    def _open(self) -> None:
        if self._container is not None:
            self._container.close()
        try:
            self._container = av.open(self.path)
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as error:
            raise NvpipeError(f"background is not a readable video: {self.path} ({type(error).__name__})") from None
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        self._position = -1

    def _advance(self) -> bool:
        """Decodes the next background frame; False at the end of the file."""
        try:
            frame = next(self._frames, None)
        except av.FFmpegError as error:
            raise NvpipeError(f"background video failed to decode: {self.path} ({type(error).__name__})") from None
        if frame is None:
            return False
        self._current = cover_frame(frame, self.width, self.height, self._reformatter)
        self._position += 1
        return True

    def frame(self, index: int) -> torch.Tensor:
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        target = index % self._length if self._length else index
        if target == self._position:
            return self._current
        if target < self._position:
            self._open()
        while self._position < target:
            if not self._advance():
                self._length = self._position + 1
                target = index % self._length
                if target != self._position:
                    self._open()
                    while self._position < target:
                        self._advance()
                break
        return self._current

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


Background = Union[SolidBackground, ImageBackground, VideoBackground, BlurBackground]
_PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def open_background(spec: str, width: int, height: int) -> Background:
    """A background for ``width x height`` frames from a colour or a file path.

    Args:
        spec: a colour (see :func:`parse_color`), ``blur[:RADIUS]``, a picture or a video file.
        width, height: the output frame size (after rotation).

    Returns:
        :class:`SolidBackground` (``.color``), :class:`BlurBackground` (``.radius``),
        :class:`ImageBackground` or :class:`VideoBackground` (``frame(index)`` -> uint8
        ``[3, height, width]``).

    Raises:
        NvpipeError: neither a colour nor a readable picture/video file.
    """
    spec = str(spec)
    blur = parse_blur(spec)
    if blur is not False:
        return BlurBackground(blur, width, height)
    if is_color(spec):
        return SolidBackground(parse_color(spec), width, height)
    if not os.path.isfile(spec):
        raise NvpipeError(
            f"background not found: {spec!r} is neither a colour (#rrggbb, r,g,b, a name), "
            f"blur[:RADIUS] nor a file")
    if os.path.splitext(spec)[1].lower() in _PICTURE_EXTENSIONS:
        return ImageBackground(spec, width, height)
    return VideoBackground(spec, width, height)


__all__ = ["parse_color", "parse_blur", "open_background", "Background", "SolidBackground",
           "ImageBackground", "VideoBackground", "BlurBackground", "COLOR_NAMES", "KEYING_NAMES",
           "cover_frame", "default_blur_radius"]
