"""The CPU pipeline's C kernels (kernels/cpu/nvpipe_cpu.c) against the PyTorch references.

Tolerances: float32 outputs 2e-6 (same float32 arithmetic, different association order);
uint8 and NV12 outputs at most 1 level, on at most 0.1% of the values (a value within
float rounding of a .5 boundary may round either way).
"""

import subprocess
import sys

import pytest
import torch

from nvpipe import kernels
from nvpipe.kernels import native

pytestmark = pytest.mark.skipif(native.library() is None,
                                reason=f"CPU kernels could not be built: {native.unavailable_reason()}")

SIZES = [(47, 63, 0.25), (64, 48, 0.5), (5, 3, 0.5), (33, 21, 1.0), (90, 160, 0.125), (1, 1, 1.0)]


def _assert_levels(actual: torch.Tensor, expected: torch.Tensor) -> None:
    difference = (actual.int() - expected.int()).abs()
    assert difference.max().item() <= 1
    assert (difference > 0).float().mean().item() <= 1e-3


def _coefficients(height: int, width: int, ratio: float, generator):
    low_h, low_w = max(1, int(height * ratio)), max(1, int(width * ratio))
    return (torch.randn(4, low_h, low_w, generator=generator) * 0.3,
            torch.randn(4, low_h, low_w, generator=generator) * 0.3)


@pytest.mark.parametrize("height,width,ratio", SIZES)
@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("matrix,full_range", [("bt601", False), ("bt709", True), ("bt2020", False)])
def test_yuv420_to_rgb_matches_reference(height, width, ratio, bits, matrix, full_range):
    generator = torch.Generator().manual_seed(height * 1000 + width + bits)
    rows, pitch = height + (height + 1) // 2, 2 * ((width + 1) // 2) + 6  # pitched
    if bits == 8:
        frame = torch.randint(0, 256, (rows, pitch), generator=generator, dtype=torch.uint8)
        convert, reference = kernels.nv12_to_rgb, kernels.nv12_to_rgb_reference
    else:
        codes = torch.randint(0, 1024, (rows, pitch), generator=generator, dtype=torch.int32)
        frame = (codes << 6).to(torch.uint16)
        convert, reference = kernels.p016_to_rgb, kernels.p016_to_rgb_reference
    options = dict(matrix=matrix, full_range=full_range, out_dtype=torch.float32,
                   height=height, width=width, downsample=ratio)
    rgb, small = convert(frame, impl="native", **options)
    rgb_ref, small_ref = reference(frame, **options)
    torch.testing.assert_close(rgb, rgb_ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(small, small_ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("height,width,ratio", SIZES)
@pytest.mark.parametrize("output,background_kind", [
    ("composite", "colour"), ("composite", "uint8"), ("composite", "float"),
    ("foreground", "colour"), ("alpha", "colour"), ("rgba", "colour"),
    ("rgba_premultiplied", "colour")])
def test_tail_u8_matches_reference_into_interleaved_buffer(height, width, ratio, output,
                                                           background_kind):
    generator = torch.Generator().manual_seed(height + 7 * width)
    coeff_a, coeff_b = _coefficients(height, width, ratio, generator)
    src = torch.rand(3, height, width, generator=generator)
    background = {"colour": (0.1, 0.9, 0.3),
                  "uint8": torch.randint(0, 256, (3, height, width), generator=generator,
                                         dtype=torch.uint8),
                  "float": torch.rand(3, height, width, generator=generator)}[background_kind]
    channels = kernels.OUTPUT_CHANNELS[output]
    # An interleaved (H, W, C) buffer seen as (C, H, W), poisoned so unwritten values show.
    buffer = torch.full((height, width, channels), 0xAB, dtype=torch.uint8)
    out = buffer.permute(2, 0, 1)
    kernels.matting_tail(coeff_a, coeff_b, src, output=output, background=background, out=out,
                         impl="native")
    expected = kernels.matting_tail_reference(coeff_a, coeff_b, src, output=output,
                                              background=background, out_dtype=torch.uint8)
    _assert_levels(out, expected)


def test_tail_u8_takes_strided_channels_last_coefficients():
    generator = torch.Generator().manual_seed(3)
    coeff_a, coeff_b = _coefficients(63, 47, 0.25, generator)
    coeff_a = coeff_a[None].to(memory_format=torch.channels_last)[0]
    src = torch.rand(3, 63, 47, generator=generator)
    got = kernels.matting_tail(coeff_a, coeff_b, src, output="rgba", out_dtype=torch.uint8,
                               impl="native")
    expected = kernels.matting_tail_reference(coeff_a, coeff_b, src, output="rgba",
                                              out_dtype=torch.uint8)
    _assert_levels(got, expected)


@pytest.mark.parametrize("height,width,ratio", SIZES)
@pytest.mark.parametrize("output", ["composite", "foreground", "alpha"])
@pytest.mark.parametrize("matrix,full_range", [("bt709", False), ("bt601", True)])
def test_tail_nv12_matches_reference(height, width, ratio, output, matrix, full_range):
    generator = torch.Generator().manual_seed(11 * height + width)
    coeff_a, coeff_b = _coefficients(height, width, ratio, generator)
    src = torch.rand(3, height, width, generator=generator)
    rows, pitch = kernels.nv12_shape(height, width)
    out = torch.full((rows, pitch), 0xAB, dtype=torch.uint8)
    options = dict(output=output, background=(0.0, 1.0, 0.0), matrix=matrix,
                   full_range=full_range)
    kernels.matting_tail_nv12(coeff_a, coeff_b, src, out=out, impl="native", **options)
    expected = kernels.matting_tail_nv12_reference(coeff_a, coeff_b, src, **options)
    _assert_levels(out[:height, :width], expected[:height, :width])
    _assert_levels(out[height:], expected[height:])


def test_native_refuses_what_it_does_not_do():
    src = torch.rand(3, 8, 8)
    coeff = torch.zeros(4, 2, 2)
    with pytest.raises(kernels.KernelError):
        kernels.matting_tail(coeff, coeff, src, output="rgba", out_dtype=torch.float32,
                             impl="native")


def test_turned_off_falls_back_to_reference():
    code = ("import torch; from nvpipe.kernels import native, nv12_to_rgb;"
            "assert native.library() is None and 'NVPIPE_NATIVE' in native.unavailable_reason();"
            "f = torch.randint(0, 256, (6, 4), dtype=torch.uint8);"
            "print(nv12_to_rgb(f, out_dtype=torch.float32).shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "NVPIPE_NATIVE": "0",
                               "TRITON_INTERPRET": "0"})
    assert done.returncode == 0, done.stderr
    assert "torch.Size([3, 4, 4])" in done.stdout
