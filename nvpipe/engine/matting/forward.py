"""``ForwardOnlyMatting``: a network that has only RVM's ``forward`` (a frozen TorchScript
module, ``nvpipe.model.adapters.ForwardMatting``) runs on the full-size frames, eagerly, and
gives full-size coefficients (``coeff_a = 0``, ``coeff_b = [fgr - src, pha]``)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch


class ForwardOnlyMatting:
    """The matting interface (``__call__(src_sm, src)``, ``state``, ``load_state``,
    ``reset``) over a forward-only network. ``src``: the chunk's full-size frames,
    ``[T, 3, H, W]`` or a sequence of ``[3, H, W]``; required."""

    def __init__(self, network: torch.nn.Module, downsample_ratio: float):
        self.network = network  # already on its device and dtype (frozen)
        self.ratio = float(downsample_ratio)
        self._states: list[Optional[torch.Tensor]] = [None] * 4

    @torch.inference_mode()
    def __call__(self, src_sm: torch.Tensor,
                 src: torch.Tensor | Sequence[torch.Tensor] | None = None):
        if src is None:
            raise ValueError("this network runs on the full-size frames: pass src")
        full = src if isinstance(src, torch.Tensor) else torch.stack(list(src))
        coeff_a, coeff_b, *self._states = self.network.coefficients(
            src_sm[None], *self._states, downsample_ratio=self.ratio, src=full[None])
        return coeff_a[0], coeff_b[0]

    def state(self) -> tuple[torch.Tensor, ...]:
        return tuple(s for s in self._states if s is not None)

    def load_state(self, states: Sequence[torch.Tensor]) -> None:
        self._states = list(states) if states else [None] * 4

    def reset(self) -> None:
        self._states = [None] * 4
