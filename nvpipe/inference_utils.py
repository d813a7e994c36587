"""RVM's ``inference_utils``, on nvpipe's decoders and encoders: a script that imports
``VideoReader``/``VideoWriter``/``ImageSequenceReader``/``ImageSequenceWriter`` from RVM's
``inference_utils`` runs with ``from nvpipe.inference_utils import ...`` instead.

The classes take RVM's arguments and behave as RVM's do:

- ``VideoReader(path, transform=None)``: a ``torch.utils.data.Dataset`` of the video's
  frames as RGB ``PIL.Image`` s passed through ``transform`` (``ToTensor()`` gives
  ``[3, H, W]`` in 0..1); ``frame_rate``; ``len`` the frame count. Frames are decoded by
  ``nvpipe.sources`` (PyAV, rotation applied) and converted by the pipeline's converter.
  Reading in order (what a ``DataLoader`` does) decodes each frame once.
- ``VideoWriter(path, frame_rate, bit_rate=1000000)``: ``write(frames)`` takes ``[T, C, H, W]``
  (or ``[C, H, W]``) tensors in 0..1, ``C`` 3 or 1 (grey is written as RGB, as RVM does),
  on any device; ``close()`` completes the file. H.264 where the container takes it (RVM
  writes H.264 whatever the extension), at ``bit_rate`` bits/s, through nvpipe's encoder
  (``nvpipe.sinks``): the file is written under a hidden name and moved into place by
  ``close()``, replacing an existing file as RVM's writer does.
- ``ImageSequenceReader(path, transform=None)``: the pictures of a folder, sorted by name.
- ``ImageSequenceWriter(path, extension='jpg')``: ``write(frames)`` saves ``0000.jpg``,
  ``0001.jpg``... (C 1, 3 or 4: grey, RGB, RGBA).
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["VideoReader", "VideoWriter", "ImageSequenceReader", "ImageSequenceWriter"]


def _to_pil(rgb: torch.Tensor):
    """``[3, H, W]`` float in 0..1 -> an RGB ``PIL.Image``."""
    from PIL import Image

    array = rgb.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(array.cpu().numpy())


def _frames_of(frames: torch.Tensor) -> torch.Tensor:
    """``[T, C, H, W]`` or ``[C, H, W]`` -> ``[T, C, H, W]`` float on the CPU."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"write takes a torch tensor, got {type(frames).__name__}")
    if frames.dim() == 3:
        frames = frames[None]
    if frames.dim() != 4:
        raise ValueError(f"write takes [T, C, H, W] or [C, H, W] frames, got {tuple(frames.shape)}")
    return frames.detach().to("cpu", torch.float32)


class VideoReader(Dataset):
    """A video's frames as a ``Dataset`` (see the module docstring)."""

    def __init__(self, path: str, transform: Optional[Callable] = None):
        from nvpipe.sources import open_source

        self.path = str(path)
        self.transform = transform
        with open_source(self.path) as source:  # InputError for a missing or unreadable file
            info = source.info
        self.rate = float(info.fps)
        self._declared = info.frame_count
        self._length: Optional[int] = None
        self._reset()

    def _reset(self) -> None:
        self._source = None
        self._frames = None
        self._converter = None
        self._position = -1  # index of the frame in ``_current``
        self._current = None

    def __getstate__(self):  # DataLoader workers receive a copy: decoders do not travel
        state = dict(self.__dict__)
        state.update(_source=None, _frames=None, _converter=None, _position=-1, _current=None)
        return state

    @property
    def frame_rate(self) -> float:
        return self.rate

    def __len__(self) -> int:
        if self._length is None:
            self._length = self._declared if self._declared else self._count()
        return self._length

    def _count(self) -> int:
        import av

        with av.open(self.path) as container:
            return sum(1 for packet in container.demux(video=0) if packet.size)

    def _open(self) -> None:
        from nvpipe.engine.convert import Converter
        from nvpipe.sources import open_source

        self.close()
        self._source = open_source(self.path)
        self._frames = iter(self._source)
        self._converter = Converter(self._source.info, ratio=1.0, device="cpu",
                                    dtype=torch.float32, ring_size=2)
        self._position = -1

    def _frame(self, index: int):
        if index < 0:
            index += len(self)
        if self._frames is None or index < self._position:
            self._open()
        while self._position < index:
            frame = next(self._frames, None)
            if frame is None:
                raise IndexError(f"frame {index} is past the end of {self.path}")
            self._position += 1
            if self._position == index:
                rgb, _ = self._converter(frame)
                self._current = _to_pil(rgb)
        return self._current

    def __getitem__(self, index: int):
        frame = self._frame(int(index))
        return self.transform(frame) if self.transform is not None else frame

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
        self._reset()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _commit(state: dict) -> None:
    """Completes a ``VideoWriter``'s file once (``close``, or the writer's end of life)."""
    if state["closed"]:
        return
    state["closed"] = True
    if state["outputs"] is not None:
        state["outputs"].commit()


class VideoWriter:
    """Writes ``[T, C, H, W]`` frames in 0..1 as an H.264 video (see the module docstring).

    ``close()`` completes the file; a writer never closed (RVM's documented loop does not
    close its writer) completes it when it is garbage-collected or the interpreter exits."""

    def __init__(self, path: str, frame_rate: float, bit_rate: int = 1000000):
        import weakref

        self.path = str(path)
        self.frame_rate = frame_rate
        self.bit_rate = int(bit_rate)
        self._sink = None
        self._count = 0
        self._state = {"outputs": None, "closed": False}
        self._finalizer = weakref.finalize(self, _commit, self._state)

    def _open(self, width: int, height: int) -> None:
        from nvpipe.frames import StreamInfo, untagged_color
        from nvpipe.job import OutputSpec
        from nvpipe.sinks import open_sink
        from nvpipe.sinks.outputs import Outputs
        from nvpipe.sinks.pyav import ALLOWED_CODECS

        extension = os.path.splitext(self.path)[1].lower()
        codec = "h264" if "h264" in ALLOWED_CODECS.get(extension, ("h264",)) else None
        rate = Fraction(self.frame_rate).limit_denominator(1001)
        info = StreamInfo(path="", width=width, height=height, fps=rate, time_base=1 / rate,
                          color=untagged_color(height))
        spec = OutputSpec(self.path, kind="composite", codec=codec, bitrate=self.bit_rate)
        outputs = Outputs([spec], info, overwrite=True, open_sink=open_sink)
        self._state["outputs"] = outputs
        self._sink = outputs.sinks[spec.path]

    def write(self, frames: torch.Tensor) -> None:
        if self._state["closed"]:
            raise RuntimeError(f"{self.path} is closed")
        frames = _frames_of(frames)
        if frames.shape[1] == 1:
            frames = frames.repeat(1, 3, 1, 1)  # grey as RGB, as RVM's writer
        if frames.shape[1] != 3:
            raise ValueError(f"VideoWriter writes RGB or grey frames, got {frames.shape[1]} channels")
        if self._sink is None:
            self._open(frames.shape[3], frames.shape[2])
        from nvpipe import kernels

        sink = self._sink
        for frame in frames.clamp(0, 1):
            if sink.pixel_format == "nv12":
                array = kernels.rgb_to_nv12(frame, matrix=sink.color.matrix,
                                            full_range=sink.color.full_range)
            else:
                array = frame.mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
            sink.write(array.numpy(), self._count)
            self._count += 1

    def close(self) -> None:
        self._finalizer()


class ImageSequenceReader(Dataset):
    """The pictures of a folder, sorted by name, as a ``Dataset`` of RGB ``PIL.Image`` s
    passed through ``transform``."""

    def __init__(self, path: str, transform: Optional[Callable] = None):
        self.path = str(path)
        self.files = sorted(os.listdir(self.path))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        from nvpipe.sources.images import read_image

        picture = Image.fromarray(read_image(os.path.join(self.path, self.files[index]),
                                             "rgb24"))
        return self.transform(picture) if self.transform is not None else picture


class ImageSequenceWriter:
    """Saves ``[T, C, H, W]`` frames in 0..1 as ``0000.<extension>``, ``0001...``."""

    def __init__(self, path: str, extension: str = "jpg"):
        self.path = str(path)
        self.extension = extension
        self.counter = 0
        os.makedirs(self.path, exist_ok=True)

    def write(self, frames: torch.Tensor) -> None:
        from PIL import Image

        for frame in _frames_of(frames).clamp(0, 1):
            if frame.shape[0] not in (1, 3, 4):
                raise ValueError(f"pictures have 1, 3 or 4 channels, got {frame.shape[0]}")
            array = frame.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            # (H, W) uint8 is grey, (H, W, 3) RGB, (H, W, 4) RGBA
            picture = Image.fromarray(np.ascontiguousarray(array[..., 0] if frame.shape[0] == 1
                                                           else array))
            picture.save(os.path.join(self.path, f"{self.counter:04d}.{self.extension}"))
            self.counter += 1

    def close(self) -> None:
        pass
