"""Compose stage: refiner coefficients + the full-resolution frame -> what each sink takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from nvpipe.engine.buffers import BufferRing


@dataclass
class ComposeTarget:
    """One output of the job: its kind (``composite``, ``alpha``, ``foreground``, ``rgba``,
    ``rgba_premultiplied``) and the sink's ``pixel_format`` (``rgb24``, ``rgba``, ``gray``,
    ``nv12``)."""

    name: str
    kind: str
    pixel_format: str
    matrix: str = "bt709"
    full_range: bool = False


def buffer_shape(pixel_format: str, height: int, width: int) -> tuple[int, ...]:
    """The uint8 array a sink of ``pixel_format`` takes for an ``height x width`` frame."""
    return {"rgb24": (height, width, 3), "rgba": (height, width, 4), "gray": (height, width),
            "nv12": (height + (height + 1) // 2, 2 * ((width + 1) // 2))}[pixel_format]


def _planar_view(buffer: torch.Tensor) -> torch.Tensor:
    """(H, W, C) or (H, W) memory viewed as (C, H, W), for kernels that write planes."""
    return buffer[None] if buffer.dim() == 2 else buffer.permute(2, 0, 1)


class Composer:
    """``(coeff_a [4,h,w], coeff_b [4,h,w], src [3,H,W], frame_index)`` -> ``{name: uint8 array}``.

    Each array is written by one pass of the fused tail kernel straight into the layout
    its sink encodes (interleaved RGB/RGBA, grey, or NV12), so the full frame is read once
    per output and nothing is converted again on the way to the encoder.
    """

    def __init__(self, targets: list[ComposeTarget], background=None, ring_size: int = 12):
        """``ring_size``: how many of one target's frames may be alive at once downstream
        (its encoder's queue, the one its encoder holds, the one being composed), plus one."""
        self.targets = targets
        self.background = background
        # One ring per target: two outputs of one shape must not share buffers.
        self._rings = {target.name: BufferRing(ring_size) for target in targets}
        # The last background frame and its copy on the frames' device: a picture (the same
        # tensor every frame) or a repeated video frame is uploaded once, not per frame
        # (a 4K frame is 25 MB of pageable memory, a host-blocking copy).
        self._uploaded: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def warm_up(self, coeff_a: torch.Tensor, coeff_b: torch.Tensor, src: torch.Tensor) -> None:
        """Composes one frame for every target from coefficients laid out as the network's
        (memory format included), so each output's kernel variant compiles (Triton, on
        CUDA) before the first real frame. The results are dropped."""
        self(coeff_a, coeff_b, src, 0)

    def _background_for(self, index: int, src: torch.Tensor):
        if self.background is None:
            return None
        color = getattr(self.background, "color", None)
        if color is not None:
            return tuple(color)
        if getattr(self.background, "from_source", False):  # blur[:RADIUS]: the input itself
            from nvpipe.engine.blur import blur_frame

            return blur_frame(src, self.background.radius)
        frame = self.background.frame(index)  # owned: never changed once returned
        if frame.device == src.device:
            return frame
        if self._uploaded is not None and self._uploaded[0] is frame \
                and self._uploaded[1].device == src.device:
            return self._uploaded[1]
        on_device = frame.to(src.device, non_blocking=True)
        self._uploaded = (frame, on_device)
        return on_device

    def __call__(self, coeff_a: torch.Tensor, coeff_b: torch.Tensor, src: torch.Tensor,
                 index: int) -> dict[str, torch.Tensor]:
        from nvpipe import kernels

        height, width = src.shape[-2:]
        outputs = {}
        background: Optional[object] = None
        for target in self.targets:
            if target.kind == "composite" and background is None:
                background = self._background_for(index, src)
            out = self._rings[target.name].take(
                buffer_shape(target.pixel_format, height, width), torch.uint8, src.device)
            if target.pixel_format == "nv12":
                kernels.matting_tail_nv12(coeff_a, coeff_b, src, output=target.kind,
                                          background=background, matrix=target.matrix,
                                          full_range=target.full_range, out=out)
            else:
                kind = target.kind
                if target.pixel_format == "gray":
                    kind = "alpha"
                kernels.matting_tail(coeff_a, coeff_b, src, output=kind, background=background,
                                     out=_planar_view(out), out_dtype=torch.uint8)
            outputs[target.name] = out
        return outputs
