"""The subject tracker's colour edges: its watershed's elevation, a host op (NumPy in, NumPy out).

``colour_edges(rgb, sigma, impl=None)``: uint8 ``rgb (h, w, 3)`` -> float32 ``(h, w)``, per
channel a Gaussian of ``sigma`` pixels (truncated at 4 sigma) then the Sobel gradient's
magnitude, ``hypot(sobel(axis 0), sobel(axis 1))``; the largest over the channels. Both
implementations give the same bits:

- ``"reference"``: ``scipy.ndimage`` (``gaussian_filter``, ``sobel``, mode ``reflect``);
- ``"native"``: one C pass per filter axis (``kernels/cpu/nvpipe_cpu.c``
  ``nvp_colour_edges``), with SciPy's arithmetic: double accumulators over reflected lines,
  float between passes, SciPy's own Gaussian weights (``kernels.gaussian``). 5.2 against
  15.2 ms at 512x288 (the 2-core CPU VM, one thread): the tracker's largest single cost on a
  frame of four people.

``_dispatch.choose_implementation`` decides, as for every op: None is the C kernel where it
loads and fits (each side longer than the Gaussian's radius), else the reference.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import native
from ._common import KernelError
from ._dispatch import NATIVE, choose_implementation
from .gaussian import gaussian_weights, native_unfit


def colour_edges_reference(rgb: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    image = rgb.astype(np.float32) / 255.0
    edges = np.zeros(image.shape[:2], np.float32)
    for c in range(3):
        channel = ndimage.gaussian_filter(image[..., c], sigma)
        np.maximum(edges, np.hypot(ndimage.sobel(channel, 0), ndimage.sobel(channel, 1)),
                   out=edges)
    return edges


def colour_edges(rgb: np.ndarray, sigma: float, *, impl: Optional[str] = None) -> np.ndarray:
    """uint8 ``rgb (h, w, 3)`` -> float32 edges ``(h, w)`` (see the module's docstring)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise KernelError(f"colour_edges takes uint8 (h, w, 3), got {rgb.dtype} {rgb.shape}")
    unfit = native_unfit(rgb.shape[:2], sigma)
    if choose_implementation(impl, rgb, native_unfit=unfit) != NATIVE:
        return colour_edges_reference(rgb, sigma)
    if rgb.strides[1:] != (3, 1):
        rgb = np.ascontiguousarray(rgb)
    return native.colour_edges(rgb, gaussian_weights(sigma))
