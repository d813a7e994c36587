"""What every matting implementation shares: state shapes, the refiner switch, the
network's preparation, and the coefficients' layout."""


from __future__ import annotations

import inspect
import math
import warnings
from typing import Optional, Sequence

import torch

from rvm.network import STATE_CHANNELS  # recurrent state channels r1..r4, per variant


def halving_chain(size: int, steps: int = 4) -> list[int]:
    """``[ceil(size/2), ceil(size/4), ...]``, each step rounding up (270 -> 135, 68, 34, 17)."""
    out = []
    for _ in range(steps):
        size = math.ceil(size / 2)
        out.append(size)
    return out


def recurrent_state_shapes(height: int, width: int, variant: str = "mobilenetv3",
                           batch: int = 1) -> list[tuple[int, int, int, int]]:
    """Full shapes of r1..r4 for a ``height x width`` low-resolution input.

    Returns ``[(B, C_k, h_k, w_k)]`` for k = 1..4, with ``C`` from ``rvm.STATE_CHANNELS`` and
    ``h_k``/``w_k`` the ceil-halving chain of the input size (1/2, 1/4, 1/8, 1/16).
    """
    if variant not in STATE_CHANNELS:
        raise ValueError(f"variant must be one of {tuple(STATE_CHANNELS)}, got {variant!r}")
    heights, widths = halving_chain(height), halving_chain(width)
    return [(batch, c, h, w) for c, h, w in zip(STATE_CHANNELS[variant], heights, widths)]


def coefficient_kwargs(network: torch.nn.Module, downsample_ratio: Optional[float]) -> dict:
    """Keyword arguments that tell ``network.coefficients`` whether the refiner runs.

    The model's definition skips the refiner at ratio exactly 1. ``rvm.MattingNetwork`` takes
    ``use_refiner``; a network taking ``downsample_ratio`` gets the ratio itself.
    """
    if downsample_ratio is None:
        return {}
    parameters = inspect.signature(network.coefficients).parameters
    if "use_refiner" in parameters:
        return {"use_refiner": downsample_ratio != 1}
    if "downsample_ratio" in parameters:
        return {"downsample_ratio": downsample_ratio}
    return {}


def prepare_network(network: torch.nn.Module, device: torch.device | str,
                    dtype: torch.dtype) -> torch.nn.Module:
    """Move ``network`` IN PLACE to ``device``/``dtype``, eval mode, channels_last.

    CUDA: channels_last lets cuDNN run the convolutions in NHWC (tensor cores) without
    transposes. CPU: ``rvm.optimize_for_cpu`` (weights and inputs channels_last: the low-res
    network ~80 ms instead of ~103 ms at 1080p/0.25 on 2 cores), for every entry point (the
    CLI, ``convert_video``, ``MattingSession``) alike. Returns the same module.
    """
    import rvm

    device = torch.device(device)
    network.to(device=device, dtype=dtype)
    if device.type == "cuda":
        network.to(memory_format=torch.channels_last)
    elif isinstance(network, rvm.MattingNetwork) and dtype in (torch.float32, torch.bfloat16):
        rvm.optimize_for_cpu(network)
    return network.eval()


def default_coefficient_format(device: torch.device | str) -> torch.memory_format:
    """channels_last on CUDA (the Triton tail's vector loads), NCHW elsewhere (the C tail)."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


def check_chunk_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4) or shape[-3] != 3 or min(shape) < 1:
        raise ValueError(f"src_sm must be [3, h, w] or [T, 3, h, w] RGB, got {shape = }")
    return shape


def as_coefficients(coeff: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``network.coefficients``' ``[1, 4, h, w]``/``[1, T, 4, h, w]`` output as the stage's
    ``[4, h, w]``/``[T, 4, h, w]`` in ``memory_format`` (a view where it already is)."""
    coeff = coeff[0]
    if coeff.ndim == 4:
        return coeff.contiguous(memory_format=memory_format)
    return coeff[None].contiguous(memory_format=memory_format)[0]
