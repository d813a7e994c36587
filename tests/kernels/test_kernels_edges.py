"""The subject tracker's host ops, ``kernels.colour_edges`` (``kernels/edges.py``) and
``kernels.gaussian_blur`` (``kernels/gaussian.py``): the C kernels against SciPy.

Tolerance: none. The C kernel repeats SciPy's arithmetic (double accumulators, float
between passes, SciPy's own weights), and the watershed floods by these values, so the two
must agree to the bit, or the tracker would label differently on another machine.
"""

import numpy as np
import pytest
from scipy import ndimage

from nvpipe import kernels
from nvpipe.kernels import gaussian, native
from nvpipe.kernels._common import KernelError

needs_native = pytest.mark.skipif(
    native.library() is None,
    reason=f"CPU kernels could not be built: {native.unavailable_reason()}")


def _images(seed: int, count: int):
    """Random uint8 crops of odd sizes, every third smoothed (flat areas: equal values),
    each a strided view into a larger image (rows longer than the crop)."""
    rng = np.random.default_rng(seed)
    for trial in range(count):
        height, width = (int(v) for v in rng.integers(10, 70, 2))
        base = rng.integers(0, 256, (height + 5, width + 7, 3), dtype=np.uint8)
        if trial % 3 == 0:
            base = ndimage.uniform_filter(base, (5, 5, 1))
        top, left = int(rng.integers(0, 5)), int(rng.integers(0, 7))
        yield base[top:top + height, left:left + width]


@needs_native
@pytest.mark.parametrize("sigma", [1.0, 2.0, 0.6])
def test_native_equals_scipy_bit_for_bit_on_random_crops(sigma):
    for rgb in _images(int(sigma * 10), 40):
        assert not rgb.flags.c_contiguous
        native_edges = kernels.colour_edges(rgb, sigma, impl="native")
        reference = kernels.colour_edges_reference(rgb, sigma)
        assert native_edges.dtype == np.float32 and native_edges.shape == rgb.shape[:2]
        assert np.array_equal(native_edges, reference), (rgb.shape, sigma)


@needs_native
def test_native_equals_scipy_on_real_footage(footage):
    import av

    with av.open(str(footage("four_people_1080p.mp4"))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24", width=512,
                                                               height=288)
    assert np.array_equal(kernels.colour_edges(frame, 1.0, impl="native"),
                          kernels.colour_edges_reference(frame, 1.0))
    # A channels-last view with its channels reversed is copied, not misread.
    bgr = frame[:, :, ::-1]
    assert np.array_equal(kernels.colour_edges(bgr, 1.0, impl="native"),
                          kernels.colour_edges_reference(bgr, 1.0))


def test_gaussian_weights_are_scipys():
    weights = gaussian.gaussian_weights(1.0)
    assert len(weights) == 5  # radius int(4 * 1 + 0.5)
    impulse = np.zeros(11)
    impulse[5] = 1.0
    assert np.array_equal(ndimage.gaussian_filter1d(impulse, 1.0)[5:10], weights)
    assert weights.sum() * 2 - weights[0] == pytest.approx(1.0, abs=1e-12)


def test_small_or_wrong_inputs():
    tiny = np.zeros((4, 30, 3), np.uint8)  # a side within the radius: SciPy's answer
    assert np.array_equal(kernels.colour_edges(tiny, 1.0),
                          kernels.colour_edges_reference(tiny, 1.0))
    with pytest.raises(KernelError, match="within the Gaussian's radius"):
        kernels.colour_edges(tiny, 1.0, impl="native")
    with pytest.raises(KernelError, match="uint8"):
        kernels.colour_edges(np.zeros((9, 9, 3), np.float32), 1.0)
    with pytest.raises(KernelError, match="impl='triton' needs"):
        kernels.colour_edges(np.zeros((9, 9, 3), np.uint8), 1.0, impl="triton")


@needs_native
def test_default_is_the_c_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(native, "colour_edges", lambda rgb, w: calls.append(rgb.shape) or
                        np.zeros(rgb.shape[:2], np.float32))
    kernels.colour_edges(np.zeros((20, 30, 3), np.uint8), 1.0)
    assert calls == [(20, 30, 3)]


@needs_native
@pytest.mark.parametrize("sigma", [2.0, 1.0, 0.6])
def test_gaussian_blur_equals_scipy_bit_for_bit(sigma):
    """``kernels.gaussian_blur`` on 0/1 masks (the tracker's use), on random floats of both signs
    and on strided views, odd sizes, against ``scipy.ndimage.gaussian_filter``."""
    rng = np.random.default_rng(int(sigma * 100))
    for trial in range(30):
        height, width = (int(v) for v in rng.integers(10, 80, 2))
        if trial % 3 == 0:
            image = (rng.random((height, width)) < 0.4).astype(np.float32)
        elif trial % 3 == 1:
            image = rng.standard_normal((height, width)).astype(np.float32)
        else:
            image = rng.standard_normal((height + 3, 2 * width)).astype(np.float32)[1:-2, ::2]
        ours = kernels.gaussian_blur(image, sigma, impl="native")
        assert ours.dtype == np.float32 and ours.shape == image.shape
        assert np.array_equal(ours, ndimage.gaussian_filter(image, sigma)), (image.shape, sigma)


def test_gaussian_blur_small_or_wrong_inputs():
    thin = np.ones((30, 5), np.float32)  # a side within sigma 2's radius 8: SciPy's answer
    assert np.array_equal(kernels.gaussian_blur(thin, 2.0), ndimage.gaussian_filter(thin, 2.0))
    with pytest.raises(KernelError, match="within the Gaussian's radius"):
        kernels.gaussian_blur(thin, 2.0, impl="native")
    with pytest.raises(KernelError, match="float32"):
        kernels.gaussian_blur(np.zeros((20, 20), np.float64), 1.0)
