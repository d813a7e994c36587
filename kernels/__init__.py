"""GPU kernels of the pipeline (Triton), each beside its plain PyTorch reference.

Every public function takes ``impl`` (``"triton"``, ``"native"``: the C kernels,
``"reference"``: plain PyTorch, or None: the default for the tensor's device); one function,
``_dispatch.choose_implementation``, decides which runs, and its docstring states the rule.
Importing this package works without Triton installed (the references and C kernels
still run), and does not import Triton: each op's module (``color``, ``nv12``, ``tail``)
holds its launcher, its reference and its dispatch; the ``@triton.jit`` bodies sit beside
it in ``_triton_<op>.py`` and load on the first Triton launch (the CPU pipeline saves
Triton's 0.16 s import). ``HAVE_TRITON`` / ``have_triton()``: whether Triton imports here.

``small_size(H, W, r)`` is the network's low-resolution size, ``(floor(H*r), floor(W*r))``:
every stage that sizes ``rgb_small`` / ``src_sm`` buffers should take it from here.

Shapes (C, H, W order; see each docstring):
- ``nv12_to_rgb(frame)``: uint8 ``(H + ceil(H/2), P)`` -> ``rgb [3, H, W]`` in [0, 1]
  (+ ``rgb_small [3, *small_size(H, W, r)]`` with ``downsample=r``); ``p016_to_rgb``: uint16.
- ``matting_tail(coeff_a, coeff_b, src)``: ``[4, h, w]`` x2 + ``[3, H, W]`` -> ``[C, H, W]``
  (or all with a leading batch ``N``).
- ``rgb_to_nv12(rgb)`` ``[3, H, W]``, ``alpha_to_nv12(pha)`` ``[1, H, W]``,
  ``matting_tail_nv12(coeff_a, coeff_b, src)`` -> uint8 ``(H + ceil(H/2), 2*ceil(W/2))``.
- ``colour_edges(rgb, sigma)``, ``gaussian_blur(image, sigma)``: the subject tracker's host
  ops, NumPy uint8 ``(h, w, 3)`` / float32 ``(h, w)`` -> float32 ``(h, w)`` (C kernel or
  SciPy, the same bits).
"""

from ._common import KernelError, have_triton, small_size
from .edges import colour_edges, colour_edges_reference
from .gaussian import gaussian_blur, gaussian_blur_reference
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


def __getattr__(name: str):
    if name == "HAVE_TRITON":  # whether Triton imports here, asked when read
        return have_triton()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HAVE_TRITON",
    "KernelError",
    "NV12_OUTPUTS",
    "OUTPUT_CHANNELS",
    "alpha_to_nv12",
    "alpha_to_nv12_reference",
    "colour_edges",
    "colour_edges_reference",
    "gaussian_blur",
    "gaussian_blur_reference",
    "have_triton",
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
    "small_size",
]
