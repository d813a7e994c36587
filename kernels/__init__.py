"""GPU kernels of the pipeline (Triton), each beside its plain PyTorch reference.

Every public function dispatches: CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``)
go to the Triton kernel, anything else to the ``*_reference`` function, which is also the
CPU pipeline's path. ``impl="triton"`` / ``impl="reference"`` forces one. Importing this
package works without Triton installed (the references still run).

Shapes (C, H, W order; see each docstring):
- ``nv12_to_rgb(frame)``: uint8 ``(H + ceil(H/2), P)`` -> ``rgb [3, H, W]`` in [0, 1]
  (+ ``rgb_small [3, floor(H*r), floor(W*r)]`` with ``downsample=r``); ``p016_to_rgb``: uint16.
- ``matting_tail(coeff_a, coeff_b, src)``: ``[4, h, w]`` x2 + ``[3, H, W]`` -> ``[C, H, W]``
  (or all with a leading batch ``N``).
- ``rgb_to_nv12(rgb)`` ``[3, H, W]``, ``alpha_to_nv12(pha)`` ``[1, H, W]``,
  ``matting_tail_nv12(coeff_a, coeff_b, src)`` -> uint8 ``(H + ceil(H/2), 2*ceil(W/2))``.
"""

from ._common import HAVE_TRITON, KernelError
from .color import nv12_to_rgb, nv12_to_rgb_reference, p016_to_rgb, p016_to_rgb_reference
from .nv12 import (
    NV12_OUTPUTS,
    alpha_to_nv12,
    alpha_to_nv12_reference,
    matting_tail_nv12,
    matting_tail_nv12_reference,
    nv12_shape,
    rgb_to_nv12,
    rgb_to_nv12_reference,
)
from .tail import OUTPUT_CHANNELS, matting_tail, matting_tail_reference

__all__ = [
    "HAVE_TRITON",
    "KernelError",
    "NV12_OUTPUTS",
    "OUTPUT_CHANNELS",
    "alpha_to_nv12",
    "alpha_to_nv12_reference",
    "matting_tail",
    "matting_tail_nv12",
    "matting_tail_nv12_reference",
    "matting_tail_reference",
    "nv12_shape",
    "nv12_to_rgb",
    "nv12_to_rgb_reference",
    "p016_to_rgb",
    "p016_to_rgb_reference",
    "rgb_to_nv12",
    "rgb_to_nv12_reference",
]
