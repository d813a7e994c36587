"""Kernel 3 (RGB / alpha -> NV12) and the fused tail -> NV12: Triton vs reference, the
reference vs the YCbCr definition, and the NV12 -> RGB -> NV12 round trip.

Tolerance: NV12 codes within 1 level (both round float32 values half up; the Triton
kernel averages per-pixel U/V where the reference converts the averaged RGB, equal in exact
arithmetic); the fraction of codes that differ at all is also bounded.
"""

import pytest
import torch
import torch.nn.functional as F

import nvpipe.kernels as K
from conftest import POISON_BYTE, triton_call
from nvpipe.kernels._common import LUMA_WEIGHTS



def poisoned_nv12(height, width, extra_pitch=0):
    rows, pitch = K.nv12_shape(height, width)
    return torch.full((rows, pitch + extra_pitch), POISON_BYTE, dtype=torch.uint8)


def valid_regions(nv12, height, width):
    """(luma [H, W], chroma [ceil(H/2), 2*ceil(W/2)]) views: the defined samples."""
    hc, wc = (height + 1) // 2, (width + 1) // 2
    return nv12[:height, :width], nv12[height:height + hc, :2 * wc]


def assert_codes_close(got, want, height, width, max_differing=0.01):
    for g, w in zip(valid_regions(got, height, width), valid_regions(want, height, width)):
        diff = (g.int() - w.int()).abs()
        assert diff.max().item() <= 1
        assert (diff > 0).float().mean().item() <= max_differing


def definition_nv12(rgb, matrix, full_range):
    """From the definitions in float64: replicate-pad to even size, 2x2 means for chroma."""
    kr, kb = LUMA_WEIGHTS[matrix]
    kg = 1 - kr - kb
    rgb = rgb.double()
    height, width = rgb.shape[-2:]
    luma = kr * rgb[0] + kg * rgb[1] + kb * rgb[2]
    padded = F.pad(rgb[None], (0, width % 2, 0, height % 2), mode="replicate")[0]
    mean = padded.unfold(1, 2, 2).unfold(2, 2, 2).mean(dim=(-1, -2))  # [3, hc, wc]
    mean_luma = kr * mean[0] + kg * mean[1] + kb * mean[2]
    cb = (mean[2] - mean_luma) / (2 * (1 - kb))
    cr = (mean[0] - mean_luma) / (2 * (1 - kr))
    y_scale, y_off, c_scale = (255, 0, 255) if full_range else (219, 16, 224)
    codes = lambda x: torch.floor(x + 0.5).clamp(0, 255).to(torch.uint8)  # noqa: E731
    out = torch.zeros(K.nv12_shape(height, width), dtype=torch.uint8)
    out[:height, :width] = codes(luma * y_scale + y_off)
    out[height:, 0::2] = codes(cb * c_scale + 128)
    out[height:, 1::2] = codes(cr * c_scale + 128)
    return out


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("full_range", [False, True])
@pytest.mark.parametrize("size", [(47, 63), (1, 1), (4, 6)])
def test_reference_matches_definition(matrix, full_range, size):
    g = torch.Generator().manual_seed(hash((matrix, full_range, size)) % 2**31)
    rgb = torch.rand(3, *size, generator=g)
    got = K.rgb_to_nv12_reference(rgb, matrix=matrix, full_range=full_range)
    assert_codes_close(got, definition_nv12(rgb, matrix, full_range), *size, max_differing=0.002)


def test_alpha_reference_is_grey():
    g = torch.Generator().manual_seed(5)
    pha = torch.rand(1, 9, 13, generator=g)
    for full_range, (scale, offset) in ((False, (219, 16)), (True, (255, 0))):
        got = K.alpha_to_nv12_reference(pha, full_range=full_range)
        luma, chroma = valid_regions(got, 9, 13)
        torch.testing.assert_close(luma, torch.floor(pha[0].double() * scale + offset + 0.5).to(torch.uint8))
        assert (chroma == 128).all()


@pytest.mark.parametrize("size,extra_pitch", [((47, 63), 3), ((1, 1), 0), ((5, 3), 1), ((16, 16), 0)])
@pytest.mark.parametrize("input_kind", ["float", "uint8_hwc", "half_strided"])
def test_triton_rgb_matches_reference(size, extra_pitch, input_kind):
    g = torch.Generator().manual_seed(size[0] * 7 + extra_pitch)
    height, width = size
    if input_kind == "float":
        rgb = torch.rand(3, height, width, generator=g)
    elif input_kind == "uint8_hwc":
        rgb = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1)
    else:
        rgb = torch.rand(5, height, width + 4, generator=g).half()[1:4, :, 2:2 + width]
    out = poisoned_nv12(height, width, extra_pitch)
    got = triton_call(K.rgb_to_nv12, rgb, matrix="bt601", full_range=False, out=out)
    want = K.rgb_to_nv12_reference(rgb, matrix="bt601", full_range=False)
    assert got is out
    assert_codes_close(got, want, height, width)
    pitch = K.nv12_shape(height, width)[1]
    assert (out[:, pitch:] == POISON_BYTE).all(), "padding columns must be left alone"
    if width % 2:  # the luma padding column of an odd width is also left alone
        assert (out[:height, width:] == POISON_BYTE).all()


def test_triton_alpha_matches_reference():
    g = torch.Generator().manual_seed(9)
    pha = torch.rand(1, 31, 47, generator=g)
    for full_range in (False, True):
        out = poisoned_nv12(31, 47)
        triton_call(K.alpha_to_nv12, pha[0], full_range=full_range, out=out)
        assert_codes_close(out, K.alpha_to_nv12_reference(pha, full_range=full_range), 31, 47)


@pytest.mark.parametrize("output", K.NV12_OUTPUTS)
@pytest.mark.parametrize("size,low", [((47, 63), (12, 16)), ((3, 5), (1, 2)), ((20, 24), (20, 24))])
def test_fused_tail_nv12(output, size, low):
    """Triton fused == reference fused == rgb_to_nv12(matting_tail(...)) (the unfused pair)."""
    g = torch.Generator().manual_seed(hash((output, size)) % 2**31)
    height, width = size
    coeff_a = torch.randn(4, *low, generator=g)
    coeff_b = torch.randn(4, *low, generator=g) * 0.4
    if low == (12, 16):  # the network's channels_last layout: the kernel's vector-load path
        coeff_a, coeff_b = (c[None].contiguous(memory_format=torch.channels_last)[0] for c in (coeff_a, coeff_b))
        assert coeff_a.stride() == (1, 64, 4)
    src = torch.rand(3, height, width, generator=g)
    background = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g) \
        if low == (20, 24) else (0.0, 0.7, 0.2)
    kwargs = dict(output=output, background=background if output == "composite" else None,
                  matrix="bt709", full_range=True)
    out = poisoned_nv12(height, width, 2)
    triton_call(K.matting_tail_nv12, coeff_a, coeff_b, src, out=out, **kwargs)
    want = K.matting_tail_nv12_reference(coeff_a, coeff_b, src, **kwargs)
    assert_codes_close(out, want, height, width)
    assert (out[:, K.nv12_shape(height, width)[1]:] == POISON_BYTE).all()
    tail = K.matting_tail_reference(coeff_a, coeff_b, src, output=output, background=kwargs["background"],
                                    out_dtype=torch.float32)
    unfused = (K.alpha_to_nv12_reference(tail, full_range=True) if output == "alpha"
               else K.rgb_to_nv12_reference(tail, matrix="bt709", full_range=True))
    assert_codes_close(want, unfused, height, width, max_differing=0.0)


@pytest.mark.parametrize("matrix,full_range", [("bt601", False), ("bt709", True), ("bt2020", False)])
def test_round_trip_through_rgb(matrix, full_range):
    """RGB constant over each 2x2 block: NV12 -> RGB (kernel 1) -> NV12 gives the same codes,
    since kernel 1 replicates chroma and kernel 3 averages it back."""
    g = torch.Generator().manual_seed(13)
    blocks = torch.rand(3, 12, 16, generator=g) * 0.8 + 0.1  # away from the gamut's edges
    rgb = blocks.repeat_interleave(2, 1).repeat_interleave(2, 2)
    nv12 = triton_call(K.rgb_to_nv12, rgb, matrix=matrix, full_range=full_range)
    decoded = triton_call(K.nv12_to_rgb, nv12, matrix=matrix, full_range=full_range, out_dtype=torch.float32)
    again = triton_call(K.rgb_to_nv12, decoded, matrix=matrix, full_range=full_range)
    assert torch.equal(again, nv12)


def test_bad_inputs_raise_kernel_error():
    rgb = torch.rand(3, 8, 8)
    with pytest.raises(K.KernelError, match="rgb"):
        K.rgb_to_nv12(rgb[:2])
    with pytest.raises(K.KernelError, match="out"):
        K.rgb_to_nv12(rgb, out=torch.empty(12, 7, dtype=torch.uint8))
    with pytest.raises(K.KernelError, match="output"):
        K.matting_tail_nv12(torch.zeros(4, 2, 2), torch.zeros(4, 2, 2), rgb, output="rgba")
