"""The CPU inference configuration, chosen with bench/network_cpu.py."""

from __future__ import annotations

import torch

from .fuse import fuse
from .network import MattingNetwork


def optimize_for_cpu(network: MattingNetwork, *, compile: bool = False) -> MattingNetwork:
    """Prepare a network for CPU inference, in place; returns it.

    BatchNorm folded (if not yet), eval mode, weights channels_last, and ``coefficients``
    feeding its input channels_last (its outputs stay NCHW for the full-size tail). Measured
    at 1080p, ratio 0.25 on 2 shared cores (bench/results/network_cpu.json): the low-res part
    ~80 ms instead of ~103 ms with NCHW.

    Args:
        network: a ``MattingNetwork`` (folded or not), float32 or bfloat16 on the CPU.
        compile: also wrap ``coefficients`` in ``torch.compile`` (inductor). About 15% faster
            again, but the first call compiles for 40-60 s on 2 cores and every new input
            size recompiles, so it only pays on long clips.

    Outputs agree with the plain folded network within about 1e-4 (summation order).
    """
    if not network.folded:
        fuse(network.eval())
    network.eval()
    network.to(memory_format=torch.channels_last)
    network.channels_last = True
    if compile:
        network.coefficients = torch.compile(network.coefficients)
    return network
