"""The subject tracker's colour edges: its watershed's elevation, a host op (NumPy in, NumPy out).

``colour_edges(rgb, sigma, impl=None)``: uint8 ``rgb (h, w, 3)`` -> float32 ``(h, w)``, per
channel a Gaussian of ``sigma`` pixels (truncated at 4 sigma) then the Sobel gradient's
magnitude, ``hypot(sobel(axis 0), sobel(axis 1))``; the largest over the channels. Both
implementations give the same bits:

- ``"reference"``: ``scipy.ndimage`` (``gaussian_filter``, ``sobel``, mode ``reflect``);
- ``"native"``: one C pass per filter axis (``kernels/cpu/nvpipe_cpu.c``
  ``nvp_colour_edges``), with SciPy's arithmetic: double accumulators over reflected lines,
  float between passes, SciPy's own Gaussian weights. 5.2 against 15.2 ms at 512x288 (the
  2-core CPU VM, one thread): the tracker's largest single cost on a frame of four people.

``_dispatch.choose_implementation`` decides, as for every op: None is the C kernel where it
loads and fits (each side longer than the Gaussian's radius), else the reference.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from . import native
from ._common import KernelError
from ._dispatch import NATIVE, choose_implementation

TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: the radius is int(4 sigma + 0.5)


def colour_edges_reference(rgb: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    image = rgb.astype(np.float32) / 255.0
    edges = np.zeros(image.shape[:2], np.float32)
    for c in range(3):
        channel = ndimage.gaussian_filter(image[..., c], sigma)
        np.maximum(edges, np.hypot(ndimage.sobel(channel, 0), ndimage.sobel(channel, 1)),
                   out=edges)
    return edges


@functools.lru_cache(maxsize=8)
def gaussian_weights(sigma: float) -> np.ndarray:
    """SciPy's own weights for ``sigma``: the centre one, then those 1..radius from it (the
    filter of a unit impulse, so they are SciPy's to the last bit)."""
    from scipy import ndimage

    radius = int(TRUNCATE * float(sigma) + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    kernel = ndimage.gaussian_filter1d(impulse, sigma, truncate=TRUNCATE, mode="constant")
    return np.ascontiguousarray(kernel[radius::-1])


def colour_edges(rgb: np.ndarray, sigma: float, *, impl: Optional[str] = None) -> np.ndarray:
    """uint8 ``rgb (h, w, 3)`` -> float32 edges ``(h, w)`` (see the module's docstring)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise KernelError(f"colour_edges takes uint8 (h, w, 3), got {rgb.dtype} {rgb.shape}")
    radius = int(TRUNCATE * float(sigma) + 0.5)
    unfit = (f"a side of {rgb.shape[:2]} is within the Gaussian's radius {radius}"
             if min(rgb.shape[:2]) <= radius else None)
    if choose_implementation(impl, rgb, native_unfit=unfit) != NATIVE:
        return colour_edges_reference(rgb, sigma)
    if rgb.strides[1:] != (3, 1):
        rgb = np.ascontiguousarray(rgb)
    return native.colour_edges(rgb, gaussian_weights(sigma))
