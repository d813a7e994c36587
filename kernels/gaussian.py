"""A Gaussian blur of one float32 image, SciPy's to the bit: a host op (NumPy in, NumPy out).

``gaussian_blur(image, sigma, impl=None)``: float32 ``image (h, w)`` -> float32 ``(h, w)``,
``scipy.ndimage.gaussian_filter(image, sigma)`` (truncated at 4 sigma, mode ``reflect``,
axis 0 then axis 1). The subject tracker smooths each person's region with it where people
touch (``nvpipe.engine.subject.smooth_labels``). Both implementations give the same bits:

- ``"reference"``: ``scipy.ndimage.gaussian_filter``;
- ``"native"``: ``kernels/cpu/nvpipe_cpu.c`` ``nvp_gaussian_f32``, the two passes of
  ``nvp_colour_edges`` (double accumulators over reflected lines, float between passes,
  SciPy's own weights: ``gaussian_weights``), one thread.

``_dispatch.choose_implementation`` decides: None is the C kernel where it loads and fits
(each side longer than the radius), else the reference.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from . import native
from ._common import KernelError
from ._dispatch import NATIVE, choose_implementation

TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: the radius is int(4 sigma + 0.5)


def gaussian_radius(sigma: float) -> int:
    return int(TRUNCATE * float(sigma) + 0.5)


@functools.lru_cache(maxsize=8)
def gaussian_weights(sigma: float) -> np.ndarray:
    """SciPy's own weights for ``sigma``: the centre one, then those 1..radius from it (the
    filter of a unit impulse, so they are SciPy's to the last bit)."""
    from scipy import ndimage

    radius = gaussian_radius(sigma)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    kernel = ndimage.gaussian_filter1d(impulse, sigma, truncate=TRUNCATE, mode="constant")
    return np.ascontiguousarray(kernel[radius::-1])


def native_unfit(shape: tuple[int, int], sigma: float) -> Optional[str]:
    """Why an image of ``shape`` does not fit the C kernels (a side within the radius:
    SciPy reflects such lines more than once), or None."""
    radius = gaussian_radius(sigma)
    return (f"a side of {tuple(shape)} is within the Gaussian's radius {radius}"
            if min(shape) <= radius else None)


def gaussian_blur_reference(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(image, sigma)


def gaussian_blur(image: np.ndarray, sigma: float, *,
                  impl: Optional[str] = None) -> np.ndarray:
    """float32 ``image (h, w)`` -> float32 ``(h, w)`` (see the module's docstring)."""
    if image.dtype != np.float32 or image.ndim != 2:
        raise KernelError(f"gaussian_blur takes float32 (h, w), got {image.dtype} "
                          f"{image.shape}")
    unfit = native_unfit(image.shape, sigma)
    if choose_implementation(impl, image, native_unfit=unfit) != NATIVE:
        return gaussian_blur_reference(image, sigma)
    return native.gaussian_blur(image, gaussian_weights(sigma))
