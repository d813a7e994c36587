"""Kernel 2 (the fused matting tail + compositing): Triton vs reference, the reference vs
the refiner formula written directly, and the tail composed with the network.

Tolerances: float32 outputs 1e-5 (both compute in float32, in a different order); float16
2**-10 (one FP16 ulp below 1.0 is 2**-11); uint8 1 level (round(x*255) may flip at .5).
"""

import pytest
import torch
import torch.nn.functional as F

import nvpipe.kernels as K
from conftest import poisoned, triton_call

from tolerances import KERNEL as TOLERANCE


def assert_close(got, want, dtype):
    if dtype == torch.uint8:
        assert (got.int() - want.int()).abs().max().item() <= 1
    else:
        assert not torch.isnan(got).any(), "an output element was not written"
        torch.testing.assert_close(got.float(), want.float(), atol=TOLERANCE[dtype], rtol=0)


def random_inputs(n, height, width, low_h, low_w, *, generator, dtype=torch.float32):
    shape = (n,) if n else ()
    coeff_a = (torch.randn(*shape, 4, low_h, low_w, generator=generator) * 0.8).to(dtype)
    coeff_b = (torch.randn(*shape, 4, low_h, low_w, generator=generator) * 0.4).to(dtype)
    src = torch.rand(*shape, 3, height, width, generator=generator).to(dtype)
    return coeff_a, coeff_b, src


def definition(coeff_a, coeff_b, src, output, background):
    """The refiner's formula, written directly in float64 from the docs."""
    coeff_a, coeff_b, src = coeff_a.double()[None], coeff_b.double()[None], src.double()[None]
    size = src.shape[-2:]
    up_a = F.interpolate(coeff_a, size=size, mode="bilinear", align_corners=False)
    up_b = F.interpolate(coeff_b, size=size, mode="bilinear", align_corners=False)
    out = up_a * torch.cat([src, src.mean(1, keepdim=True)], dim=1) + up_b
    fgr = (out[:, :3] + src).clamp(0, 1)[0]
    pha = out[:, 3:].clamp(0, 1)[0]
    if output == "foreground":
        return fgr
    if output == "alpha":
        return pha
    if output == "rgba":
        return torch.cat([fgr, pha])
    if output == "rgba_premultiplied":
        return torch.cat([fgr * pha, pha])
    if isinstance(background, torch.Tensor):
        bg = background.double() / (255.0 if background.dtype == torch.uint8 else 1.0)
    else:
        bg = torch.tensor(background, dtype=torch.float64).view(3, 1, 1)
    return fgr * pha + bg * (1 - pha)


@pytest.mark.parametrize("output", list(K.OUTPUT_CHANNELS))
@pytest.mark.parametrize("low", [(12, 16), (47, 63), (5, 3)])
def test_reference_matches_definition(output, low):
    g = torch.Generator().manual_seed(hash((output, low)) % 2**31)
    coeff_a, coeff_b, src = random_inputs(0, 47, 63, *low, generator=g)
    background = torch.randint(0, 256, (3, 47, 63), dtype=torch.uint8, generator=g) if low == (5, 3) else (0.2, 0.9, 0.4)
    got = K.matting_tail_reference(coeff_a, coeff_b, src, output=output, background=background)
    want = definition(coeff_a, coeff_b, src, output, background)
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def _background(kind, n, height, width, g):
    if kind == "colour":
        return (0.1, 0.6, 0.95)
    if kind == "uint8_hwc":  # an HWC image viewed as CHW
        shape = (n, height, width, 3) if n else (height, width, 3)
        image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        return image.movedim(-1, -3)
    return torch.rand(*((n,) if n else ()), 3, height, width, generator=g, dtype=torch.float32)


@pytest.mark.parametrize("output", list(K.OUTPUT_CHANNELS))
@pytest.mark.parametrize("out_dtype", [torch.uint8, torch.float16, torch.float32])
def test_triton_matches_reference(output, out_dtype):
    """Odd size 47x63, 1/4-ish coefficients, interleaved (HWC) output views, poisoned."""
    g = torch.Generator().manual_seed(hash((output, str(out_dtype))) % 2**31)
    height, width = 47, 63
    coeff_a, coeff_b, src = random_inputs(0, height, width, 12, 16, generator=g)
    background = _background("uint8_hwc" if out_dtype == torch.uint8 else "colour", 0, height, width, g)
    channels = K.OUTPUT_CHANNELS[output]
    buffer = poisoned((height, width, channels), out_dtype)
    got = triton_call(K.matting_tail, coeff_a, coeff_b, src, output=output, background=background,
                      out=buffer.permute(2, 0, 1))
    want = K.matting_tail_reference(coeff_a, coeff_b, src, output=output, background=background, out_dtype=out_dtype)
    assert got.data_ptr() == buffer.data_ptr() and got.shape == (channels, height, width)
    assert_close(buffer.permute(2, 0, 1), want, out_dtype)
    if out_dtype == torch.uint8:
        assert (buffer != 0xAB).float().mean() > 0.9  # most values differ from the poison


@pytest.mark.parametrize("size,low", [((1, 1), (1, 1)), ((2, 3), (1, 2)), ((20, 24), (20, 24)), ((33, 17), (9, 5))])
def test_triton_edge_sizes(size, low):
    g = torch.Generator().manual_seed(size[0] * 31 + low[1])
    coeff_a, coeff_b, src = random_inputs(0, *size, *low, generator=g)
    want = K.matting_tail_reference(coeff_a, coeff_b, src, output="rgba")
    out = poisoned((4, *size), torch.float32)
    triton_call(K.matting_tail, coeff_a, coeff_b, src, output="rgba", out=out)
    assert_close(out, want, torch.float32)


def test_triton_strided_half_inputs_and_batch():
    """channels_last FP16 coefficients (channel stride 1), a channel-split src view, a
    float background batch, batched N=2, FP16 output."""
    g = torch.Generator().manual_seed(3)
    n, height, width, low_h, low_w = 2, 29, 37, 8, 10
    packed = torch.randn(n, 8, low_h, low_w, generator=g).half().contiguous(memory_format=torch.channels_last)
    coeff_a, coeff_b = packed.split([4, 4], dim=1)  # strided views, channel stride 1
    assert coeff_a.stride(1) == 1
    six = torch.rand(n, 6, height, width, generator=g).half()
    src = six[:, 2:5]  # a channel-split view
    background = _background("float", n, height, width, g)
    out = poisoned((n, 3, height, width), torch.float16)
    triton_call(K.matting_tail, coeff_a, coeff_b, src, output="composite", background=background, out=out)
    want = K.matting_tail_reference(coeff_a, coeff_b, src, output="composite", background=background,
                                    out_dtype=torch.float16)
    assert_close(out, want, torch.float16)
    for i in range(n):  # batched == per image
        single = K.matting_tail_reference(coeff_a[i], coeff_b[i], src[i], output="composite",
                                          background=background[i], out_dtype=torch.float32)
        assert_close(out[i], single, torch.float16)


def _channels_last(n, low_h, low_w, generator, scale):
    """A and b as the network hands them over: [N, 4, h, w] FP16 in channels_last memory."""
    return (torch.randn(n, 4, low_h, low_w, generator=generator) * scale).half().contiguous(
        memory_format=torch.channels_last)


def test_vector_load_hint_only_where_its_layout_holds():
    """COEFF_VEC4 (4 aligned, contiguous channels per texel) is set for channels_last A and b
    and their per-image views, and not for planar, 8-channel-split or misaligned ones."""
    from nvpipe.kernels._tiles import TailArgs

    g = torch.Generator().manual_seed(5)
    src = torch.rand(3, 11, 13, generator=g)

    def vec4(a, b):
        return TailArgs(a, b, src if a.dim() == 3 else src.expand(a.shape[0], 3, 11, 13),
                         "alpha", None, None, None).coeff_vec4

    a, b = _channels_last(2, 5, 7, g, 1.0), _channels_last(2, 5, 7, g, 1.0)
    assert vec4(a, b) and vec4(a[1], b[1])
    assert not vec4(a[1].contiguous(), b[1])  # planar [4, h, w]
    packed = torch.randn(2, 8, 5, 7, generator=g).half().contiguous(memory_format=torch.channels_last)
    assert not vec4(*packed.split([4, 4], dim=1))  # pixel stride 8
    storage = torch.randn(4 * 5 * 7 + 1, generator=g).half()
    shifted = storage[1:].view(1, 5, 7, 4).permute(0, 3, 1, 2)  # channels_last, base 2 bytes off
    assert shifted.stride() == a[:1].stride() and not vec4(shifted, b[:1])


@pytest.mark.parametrize("n,low", [(0, (5, 7)), (3, (4, 9))])
def test_triton_channels_last_coefficients(n, low):
    """The network's layout (COEFF_VEC4 on): one image and a batch, odd sizes, against the
    reference, every output kind."""
    g = torch.Generator().manual_seed(11 + n)
    height, width = 21, 35
    coeff_a, coeff_b = _channels_last(max(n, 1), *low, g, 0.8), _channels_last(max(n, 1), *low, g, 0.4)
    src = torch.rand(max(n, 1), 3, height, width, generator=g).half()
    if n == 0:
        coeff_a, coeff_b, src = coeff_a[0], coeff_b[0], src[0]
    for output in K.OUTPUT_CHANNELS:
        background = (0.1, 0.7, 0.3) if output == "composite" else None
        want = K.matting_tail_reference(coeff_a, coeff_b, src, output=output, background=background,
                                        out_dtype=torch.float32)
        got = triton_call(K.matting_tail, coeff_a, coeff_b, src, output=output, background=background,
                          out_dtype=torch.float32)
        assert_close(got, want, torch.float32)


def test_bad_inputs_raise_kernel_error():
    a, b, src = random_inputs(0, 8, 8, 2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(K.KernelError, match="output"):
        K.matting_tail(a, b, src, output="nope")
    with pytest.raises(K.KernelError, match="background"):
        K.matting_tail(a, b, src, output="composite")
    with pytest.raises(K.KernelError, match="coeff_a"):
        K.matting_tail(a[:3], b, src, output="alpha")
    with pytest.raises(K.KernelError, match="out must have shape"):
        K.matting_tail(a, b, src, output="rgba", out=torch.empty(3, 8, 8))
    with pytest.raises(K.KernelError, match="impl"):
        K.matting_tail(a, b, src, output="alpha", impl="cuda")


def test_tail_composed_with_network_equals_forward():
    """rvm's coefficients + our tail == the network's own forward (random weights).

    float32 reference tail: 1e-5; Triton tail on FP16 inputs with FP16 outputs: 2e-3 (FP16
    rounding of src/coefficients, about 4 ulp near 1)."""
    rvm = pytest.importorskip("rvm")
    if not hasattr(rvm, "MattingNetwork") or not hasattr(rvm.MattingNetwork, "coefficients"):
        pytest.skip("rvm.MattingNetwork.coefficients is not available")
    torch.manual_seed(0)
    net = rvm.MattingNetwork("mobilenetv3").eval()
    src = torch.rand(1, 3, 64, 48)
    ratio = 0.5
    with torch.no_grad():
        fgr, pha, *_ = net(src, downsample_ratio=ratio)
        coeff_a, coeff_b, *_ = net.coefficients(rvm.downsample(src, ratio))
    want = torch.cat([fgr, pha], dim=1)
    got = K.matting_tail_reference(coeff_a, coeff_b, src, output="rgba", out_dtype=torch.float32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    got_half = triton_call(K.matting_tail, coeff_a.half(), coeff_b.half(), src.half(), output="rgba")
    assert got_half.dtype == torch.float16
    torch.testing.assert_close(got_half.float(), want, atol=2e-3, rtol=0)


def test_call_on_another_device_keeps_layout_and_identity():
    """conftest.call_on, which the kernel tests use to run on a GPU, checked here with a
    copy on the CPU: strided, offset inputs arrive with their layout; an out= view written
    there comes back into the caller's buffer (gaps untouched) as the caller's own object."""
    from conftest import call_on

    seen = {}

    def kernel(values, *, out):
        seen.update(strides=values.stride(), offset=values.storage_offset(), ptr=values.data_ptr())
        out.copy_(values[:, :2] * 2)
        return out

    base = torch.arange(60, dtype=torch.float16).view(3, 4, 5)
    values = base[:, 1:, ::2]  # strided, offset view
    buffer = torch.full((3, 3, 4), -1.0, dtype=torch.float16)
    out = buffer[:, :2, 1:4]
    got = call_on(torch.device("cpu"), kernel, values, out=out)
    assert seen["strides"] == values.stride() and seen["offset"] == values.storage_offset()
    assert seen["ptr"] != values.data_ptr()  # it ran on a copy
    assert got is out
    torch.testing.assert_close(out, values[:, :2] * 2)
    assert (buffer[:, 2] == -1).all() and (buffer[:, :, 0] == -1).all()
