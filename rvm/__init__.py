"""Robust Video Matting (Lin et al., WACV 2022), written from the published architecture.

Public API:
- ``MattingNetwork(variant, folded=False)``: ``forward(src, r1..r4, downsample_ratio,
  segmentation_pass=False)`` (RVM's), ``coefficients(src_sm, r1..r4, use_refiner=True)``;
  scriptable (``torch.jit.script``) and freezable (``torch.jit.freeze``).
- ``refine(coeff_a, coeff_b, src)``: the full-resolution tail; ``downsample(src, ratio)``.
- ``load(source=None, variant, device, dtype)``: eval-mode, BatchNorm-folded network from a
  ``.pth`` or ONNX file (or the default weights); ``load_network``, ``fuse``.
- ``optimize_for_cpu(net)``: the fastest measured CPU configuration.
- Weights: ``resolve_weights``, ``describe_weights``, ``fetch_default_weights``,
  ``cache_dir``, ``DEFAULT_WEIGHTS``; every weights problem raises ``WeightsError``.
"""

from .errors import WeightsError
from .fuse import fuse
from .load import detect_format, load, load_network
from .network import STATE_CHANNELS, VARIANTS, MattingNetwork
from .optimize import optimize_for_cpu
from .refiner import downsample, refine
from .weights import (
    DEFAULT_WEIGHTS,
    WeightsInfo,
    cache_dir,
    describe_weights,
    fetch_default_weights,
    resolve_weights,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "MattingNetwork",
    "STATE_CHANNELS",
    "VARIANTS",
    "WeightsError",
    "WeightsInfo",
    "cache_dir",
    "describe_weights",
    "detect_format",
    "downsample",
    "fetch_default_weights",
    "fuse",
    "load",
    "load_network",
    "optimize_for_cpu",
    "refine",
    "resolve_weights",
]
