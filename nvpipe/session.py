"""A streaming matting session for embedding: frames in, mattes out, state kept."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from nvpipe.engine.convert import downsample
from nvpipe.job import MAX_SIDE, auto_ratio, check_ratio
from nvpipe.engine.matting import MattingStage
from nvpipe.engine.runner import check_ratio_leaves_pixels, default_dtype
from nvpipe.errors import NvpipeError


@dataclass
class Matte:
    """One frame's result. ``alpha`` ``[1,H,W]`` and ``foreground`` ``[3,H,W]`` in [0, 1],
    on the session's device, in its dtype; ``source`` is the input as ``[3,H,W]``."""

    alpha: torch.Tensor
    foreground: torch.Tensor
    source: torch.Tensor

    def composite(self, background: Union[tuple, torch.Tensor] = (0.0, 1.0, 0.0)) -> torch.Tensor:
        """``[3,H,W]`` foreground over ``background`` (an RGB colour in [0,1] or ``[3,H,W]``)."""
        if not isinstance(background, torch.Tensor):
            background = torch.tensor(background, dtype=self.alpha.dtype,
                                      device=self.alpha.device).view(3, 1, 1)
        return self.foreground * self.alpha + background.to(self.alpha) * (1 - self.alpha)

    def rgba(self) -> torch.Tensor:
        """``[4,H,W]`` straight RGBA."""
        return torch.cat([self.foreground, self.alpha])


class MattingSession:
    """Matte a stream of frames one at a time, carrying the network's memory across them.

    ``process(frame)`` takes an RGB frame: a uint8 ``(H, W, 3)`` NumPy array, or a torch
    tensor ``[3,H,W]`` (float in [0,1] or uint8) on the CPU or a CUDA device, and returns
    when the matte is ready (on CUDA, after its stream finished). Scene cuts are detected
    on the network's low-resolution input (``nvpipe.engine.cuts``) and reset the memory there,
    as the command line does, unless ``cut_reset=False``; ``reset()`` does it by hand.
    ``cuts`` lists the frames (counted from 0) where a cut reset it; ``latency()`` gives
    the p50/p99 seconds of ``process`` calls. The ratio defaults to
    ``min(512 / max(H, W), 1)`` of the first frame.

    ``subject`` (``"main"``, ``(x, y)``/``"X,Y"`` pixels of the first frame, or a list of
    points) or ``subject_mask`` (an image path, white where the people to keep are) keeps
    only those people: everyone else's alpha is zero (``nvpipe.engine.subject``);
    ``session.subject`` is the tracker (its ``reports``, ``describe()``).
    """

    def __init__(self, *, device: str = "cpu", ratio: Optional[float] = None,
                 variant: str = "mobilenetv3", weights: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None, network: Optional[torch.nn.Module] = None,
                 cut_reset: bool = True, subject=None, subject_mask: Optional[str] = None):
        import rvm

        from nvpipe.engine.cuts import CutDetector
        from nvpipe.engine.pacing import LatencyLog

        self.device = torch.device(device)
        self.dtype = dtype or default_dtype(self.device.type)
        self.network = network if network is not None else rvm.load(
            weights, variant=variant, device=self.device, dtype=self.dtype)
        self.ratio = check_ratio(ratio) if ratio is not None else None
        self._stage: Optional[MattingStage] = None
        self._size: Optional[tuple[int, int]] = None
        self._cuts = CutDetector() if cut_reset else None
        self.cuts: list[int] = []
        self.frames = 0
        self._latency = LatencyLog()
        from nvpipe.job import subject_spec

        self._subject_spec = subject_spec(subject, subject_mask)
        self._selector = None
        self.subject = None  # nvpipe.engine.subject.SubjectTracker, from the first frame on

    def reset(self) -> None:
        """Forget the recurrent state (a scene cut)."""
        if self._stage is not None:
            self._stage.reset()

    def latency(self) -> Optional[tuple[float, float]]:
        """(p50, p99) seconds of the ``process`` calls so far (None before the first)."""
        return self._latency.percentiles()

    def _as_tensor(self, frame) -> torch.Tensor:
        """The frame as ``[3,H,W]`` in [0, 1], or a one-line ``ValueError``/``TypeError``
        saying what is accepted (issue 22: nothing is taken silently unscaled)."""
        if isinstance(frame, np.ndarray):
            if frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.dtype != np.uint8:
                raise ValueError(f"frame: expected a uint8 (H, W, 3) array, got {frame.dtype} "
                                 f"{frame.shape}")
            frame = torch.from_numpy(np.ascontiguousarray(frame[..., :3])).permute(2, 0, 1)
        if not isinstance(frame, torch.Tensor) or frame.dim() != 3 or frame.shape[0] != 3:
            raise ValueError(f"frame: expected a [3,H,W] tensor, got "
                             f"{tuple(frame.shape) if hasattr(frame, 'shape') else type(frame).__name__}")
        height, width = frame.shape[1:]
        if height == 0 or width == 0:
            raise ValueError(f"frame: empty ({height}x{width} pixels)")
        if max(height, width) > MAX_SIDE:
            raise ValueError(f"frame: {width}x{height} is too large: each side at most "
                             f"{MAX_SIDE} pixels")
        if frame.dtype != torch.uint8 and not frame.is_floating_point():
            raise TypeError(f"frame: expected uint8 (0..255) or float (0..1) values, got "
                            f"{frame.dtype}")
        frame = frame.to(self.device, non_blocking=True)
        if frame.dtype == torch.uint8:
            return frame.to(self.dtype).div_(255)
        low, high = torch.aminmax(frame)
        if not (0.0 <= float(low) and float(high) <= 1.0):  # NaN fails both
            raise ValueError(f"frame: float values must be in [0, 1], got "
                             f"{float(low):g}..{float(high):g} (uint8 frames are scaled: "
                             f"divide floats in 0..255 by 255)")
        return frame.to(self.dtype)

    @torch.inference_mode()
    def process(self, frame) -> Matte:
        from nvpipe import kernels

        called = time.monotonic()
        src = self._as_tensor(frame)
        height, width = src.shape[-2:]
        if self._size != (height, width):
            # A new size starts a new stream: the state's shapes depend on it.
            ratio = self.ratio if self.ratio is not None else auto_ratio(width, height)
            try:
                check_ratio_leaves_pixels(ratio, width, height)
            except NvpipeError as error:
                raise ValueError(str(error).replace("--ratio 1", "ratio=1")) from None
            self._stage = MattingStage(self.network, ratio=ratio, device=self.device,
                                       dtype=self.dtype)
            self._size = (height, width)
            if self._cuts is not None:
                self._cuts.reset()
            if self._subject_spec is not None:
                from nvpipe.engine.subject import SubjectSelector

                self._selector = SubjectSelector(self._subject_spec, (width, height))
                self.subject = self._selector.tracker
        small = downsample(src, self._stage.ratio)
        cut = False
        if self._cuts is not None and self._cuts(small):
            self._stage.reset()
            self.cuts.append(self.frames)
            cut = True
        self.frames += 1
        coeff_a, coeff_b = self._stage(small[None], [src])
        if self._selector is not None:
            self._selector(coeff_a[0], coeff_b[0], small, cut=cut)
        fgr_pha = kernels.matting_tail(coeff_a[0], coeff_b[0], src, output="rgba",
                                       out_dtype=self.dtype)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self._latency.record(called)
        return Matte(alpha=fgr_pha[3:], foreground=fgr_pha[:3], source=src)
