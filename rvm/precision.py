"""Precision modes of the matting network: FP16 where it is safe, FP32 where the recurrence is.

RVM's alpha feeds back through four ConvGRUs, so an error made once in the recurrent state
is carried (and can be amplified) over the rest of the clip. ``bench/fp16_fidelity.py``
measures each mode's alpha against FP32 per frame over every shared clip
(``bench/results/fp16-fidelity.json``); its figures chose ``GPU_DEFAULT``.

Modes (``PRECISIONS``):
- ``"fp32"``: everything float32.
- ``"fp16"``: everything float16, the recurrent state too.
- ``"fp16-gru32"``: float16 except the four ConvGRUs, which compute in float32 and keep the
  recurrent state (r1..r4) in float32; the features they pass on are float16.
- ``"fp16-gru32-refiner32"``: also the refiner's low-resolution coefficient step (the
  guided filter's ``box(x*y) - box(x)*box(y)`` cancels badly in float16) in float32;
  ``coeff_a``/``coeff_b`` then come out float32 (the tail kernels take them).
- ``"bf16"``: everything bfloat16 (8 mantissa bits; for comparison).

Use, on the float32 network ``rvm.load`` returns, before moving it (``Module.to(dtype=...)``
would undo a mixed mode)::

    network = rvm.precision.set_precision(rvm.load(weights), rvm.precision.GPU_DEFAULT)
    network.to(device="cuda", memory_format=torch.channels_last)   # no dtype here
    input_dtype(network)   # the dtype of src_sm
    state_dtype(network)   # the dtype r1..r4 must be kept in between frames

The module tree and ``state_dict`` keys are unchanged (the ConvGRU and refiner modules are
swapped for subclasses with the same parameters), so weights load either way.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .blocks import ConvGRU
from .refiner import DeepGuidedFilterRefiner

PRECISIONS = ("fp32", "fp16", "fp16-gru32", "fp16-gru32-refiner32", "bf16")
# Chosen from bench/results/fp16-fidelity.json (CPU, FP16 emulated op by op; README there):
# plain FP16 met the target on every shared clip (worst frame MAD 7.7e-4, a first frame;
# 1080p/0.25 over 100 frames: 2.1e-4, last quarter 3.6e-5 against 5.5e-5 in the first), and
# fp16-gru32 was no closer to FP32 (within 7% of FP16 frame by frame on the people clips,
# closer on some frames, further on others), so the GPU runs
# plain FP16: no FP32 state buffers, no casts. The device call re-measures it.
GPU_DEFAULT = "fp16"

_MAIN_DTYPE = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "fp16-gru32": torch.float16,
    "fp16-gru32-refiner32": torch.float16,
    "bf16": torch.bfloat16,
}


class Float32ConvGRU(ConvGRU):
    """A ConvGRU that computes in float32 whatever its input's dtype: the state it returns
    is float32 (fed back next frame), the output passed on has the input's dtype."""

    def forward(self, x: torch.Tensor, h: Optional[torch.Tensor], steps: int):
        out, h_last = super().forward(x.float(), None if h is None else h.float(), steps)
        return out.to(x.dtype), h_last


class Float32Refiner(DeepGuidedFilterRefiner):
    """The refiner's coefficient step in float32; returns float32 ``(A, b)``."""

    def coefficients(self, src_sm, fgr_residual, pha, hid):
        return super().coefficients(src_sm.float(), fgr_residual.float(), pha.float(), hid.float())


def _swap_class(module: nn.Module, cls: type) -> None:
    # Same attributes and parameters, another forward: module paths and keys stay.
    module.__class__ = cls


def _restore(network: nn.Module) -> None:
    for module in network.modules():
        if isinstance(module, Float32ConvGRU):
            _swap_class(module, ConvGRU)
        elif isinstance(module, Float32Refiner):
            _swap_class(module, DeepGuidedFilterRefiner)


def _float32_modules(network: nn.Module, precision: str) -> list[nn.Module]:
    kept = []
    if precision.startswith("fp16-gru32"):
        kept += [m for m in network.modules() if isinstance(m, ConvGRU)]
    if precision == "fp16-gru32-refiner32":
        kept.append(network.refiner)
    return kept


def set_precision(network: nn.Module, precision: str) -> nn.Module:
    """Converts ``network`` (an ``rvm.MattingNetwork`` on any device) IN PLACE to
    ``precision`` (one of ``PRECISIONS``) and returns it. Memory format and device stay.

    The modules a mode keeps in float32 are converted to float32 without passing through
    float16, so from a float32 network (``rvm.load``'s) their weights stay exact. Move the
    network afterwards without a dtype (``network.to(device)``): ``.to(dtype)`` would
    undo the mode. Raises ``ValueError`` for an unknown mode.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    _restore(network)
    kept = _float32_modules(network, precision)
    inside_kept = {id(m) for k in kept for m in k.modules()}
    dtype = _MAIN_DTYPE[precision]
    for module in network.modules():
        if id(module) not in inside_kept:
            module._apply(lambda t: t.to(dtype) if t.is_floating_point() else t, recurse=False)
    for module in kept:
        module.float()
        _swap_class(module, Float32Refiner if isinstance(module, DeepGuidedFilterRefiner) else Float32ConvGRU)
    network.precision = precision
    return network


def precision_of(network: nn.Module) -> str:
    """The mode ``set_precision`` put the network in ("fp32"/"fp16"/"bf16" guessed from the
    parameters when it was never called)."""
    mode = getattr(network, "precision", None)
    if mode is not None:
        return mode
    dtype = next(network.parameters()).dtype
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


def input_dtype(network: nn.Module) -> torch.dtype:
    """The dtype ``src_sm`` should have for ``network.coefficients``."""
    return _MAIN_DTYPE[precision_of(network)]


def state_dtype(network: nn.Module) -> torch.dtype:
    """The dtype of the recurrent states r1..r4 the network returns (and should be fed):
    float32 in the ``fp16-gru32*`` modes; keeping them in float16 buffers between frames
    would round the state each frame and undo the mode."""
    mode = precision_of(network)
    return torch.float32 if mode.startswith("fp16-gru32") else _MAIN_DTYPE[mode]


__all__ = ["GPU_DEFAULT", "PRECISIONS", "Float32ConvGRU", "Float32Refiner", "input_dtype",
           "precision_of", "set_precision", "state_dtype"]
