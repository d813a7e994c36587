"""Kernel 1 (NV12 / P016 -> RGB, fused downsample): Triton vs reference, reference vs an
independent definition, and FFmpeg (swscale via PyAV) parity on real clips.

Tolerances: float32 outputs 1e-5 (same float32 formula, different operation order);
float16 2**-10 (one FP16 ulp just below 1.0 is 2**-11, and operation order can round
either way); bfloat16 2**-7.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nvpipe.kernels as K
from conftest import poisoned, triton_call
from nvpipe.kernels._common import LUMA_WEIGHTS

from tolerances import KERNEL as TOLERANCE


def random_frame(height, width, *, bits=8, extra_pitch=0, generator=None):
    """A 4:2:0 frame (H + ceil(H/2), 2*ceil(W/2) + extra_pitch) of random samples."""
    rows = height + (height + 1) // 2
    pitch = 2 * ((width + 1) // 2) + extra_pitch
    if bits == 8:
        return torch.randint(0, 256, (rows, pitch), dtype=torch.uint8, generator=generator)
    codes = torch.randint(0, 1 << bits, (rows, pitch), dtype=torch.int32, generator=generator)
    return (codes << (16 - bits)).to(torch.uint16)


def independent_yuv_to_rgb(frame, height, width, matrix, full_range, bits):
    """Straight from the definitions in float64: normalise Y/Cb/Cr, invert the RGB->YCbCr
    matrix numerically, replicate each chroma sample over its 2x2 block, clamp."""
    kr, kb = LUMA_WEIGHTS[matrix]
    kg = 1 - kr - kb
    forward = torch.tensor(
        [[kr, kg, kb],
         [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
         [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))]], dtype=torch.float64)
    inverse = torch.linalg.inv(forward)
    samples = frame.to(torch.float64)
    if bits > 8:
        samples = samples / (1 << (16 - bits))  # undo MSB alignment: integer codes
    scale = 1 << (bits - 8)
    luma = samples[:height, :width]
    hc, wc = (height + 1) // 2, (width + 1) // 2
    u = samples[height:height + hc, 0:2 * wc:2]
    v = samples[height:height + hc, 1:2 * wc:2]
    if full_range:
        top = (1 << bits) - 1
        y_n, u_n, v_n = luma / top, (u - 128 * scale) / top, (v - 128 * scale) / top
    else:
        y_n, u_n, v_n = (luma - 16 * scale) / (219 * scale), (u - 128 * scale) / (224 * scale), (v - 128 * scale) / (224 * scale)
    u_full = u_n.repeat_interleave(2, 0).repeat_interleave(2, 1)[:height, :width]
    v_full = v_n.repeat_interleave(2, 0).repeat_interleave(2, 1)[:height, :width]
    ycc = torch.stack((y_n, u_full, v_full))
    return torch.einsum("ij,jhw->ihw", inverse, ycc).clamp(0, 1)


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("full_range", [False, True])
@pytest.mark.parametrize("bits", [8, 10, 12])
def test_reference_matches_definition(matrix, full_range, bits):
    g = torch.Generator().manual_seed(hash((matrix, full_range, bits)) % 2**31)
    height, width = 47, 63
    frame = random_frame(height, width, bits=bits, extra_pitch=3, generator=g)
    if bits == 8:
        rgb = K.nv12_to_rgb_reference(frame, matrix=matrix, full_range=full_range, width=width, out_dtype=torch.float32)
    else:
        rgb = K.p016_to_rgb_reference(frame, bit_depth=bits, matrix=matrix, full_range=full_range, width=width,
                                      out_dtype=torch.float32)
    expected = independent_yuv_to_rgb(frame, height, width, matrix, full_range, bits)
    torch.testing.assert_close(rgb.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.37, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_reference_downsample_is_interpolate(ratio, dtype):
    g = torch.Generator().manual_seed(7)
    frame = random_frame(47, 63, generator=g)
    rgb, small = K.nv12_to_rgb_reference(frame, downsample=ratio, out_dtype=dtype)
    expected = F.interpolate(rgb[None].float(), scale_factor=ratio, mode="bilinear", align_corners=False,
                             recompute_scale_factor=False)[0]
    assert small.shape == expected.shape and small.dtype == dtype
    torch.testing.assert_close(small.float(), expected, atol=TOLERANCE[dtype], rtol=0)


CASES = [
    # (height, width, extra pitch, downsample, dtype)
    (47, 63, 5, 0.25, torch.float32),
    (47, 63, 0, 0.37, torch.float16),
    (64, 48, 0, 0.5, torch.bfloat16),
    (33, 21, 2, None, torch.float16),
    (1, 1, 0, None, torch.float32),
    (2, 3, 1, 1.0, torch.float32),
    (5, 4, 0, 0.25, torch.float32),  # floor(5 * 0.25) = 1 row, 1 column
]


@pytest.mark.parametrize("height,width,extra,ratio,dtype", CASES)
@pytest.mark.parametrize("bits", [8, 10])
def test_triton_matches_reference(height, width, extra, ratio, dtype, bits):
    g = torch.Generator().manual_seed(height * 1000 + width + bits)
    frame = random_frame(height, width, bits=bits, extra_pitch=extra, generator=g)
    matrix, full_range = ("bt601", True) if bits == 8 else ("bt2020", False)
    convert, reference = (K.nv12_to_rgb, K.nv12_to_rgb_reference) if bits == 8 else (K.p016_to_rgb, K.p016_to_rgb_reference)
    kwargs = dict(matrix=matrix, full_range=full_range, out_dtype=dtype, downsample=ratio, width=width)
    out = poisoned((3, height, width), dtype)
    out_small = None
    if ratio is not None:
        out_small = poisoned((3, *K.small_size(height, width, ratio)), dtype)
    result = triton_call(convert, frame, out=out, out_small=out_small, **kwargs)
    expected = reference(frame, **kwargs)
    if ratio is None:
        result, expected = (result,), (expected,)
    else:
        assert result[1] is out_small
    assert result[0] is out
    for got, want in zip(result, expected):
        assert not torch.isnan(got).any(), "an output element was not written"
        torch.testing.assert_close(got.float(), want.float(), atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("ratio, small_tile", [(0.125, (1, 16)), (0.0625, (1, 8))])
@pytest.mark.parametrize("bits", [8, 10])
def test_triton_gpu_tiles_at_4k_and_8k_ratios(ratio, small_tile, bits, monkeypatch):
    """The GPU's 8 x 128 tiles (the interpreter otherwise takes 32 x 64): at 4K's ratio
    0.125 the small tile is 1 x 16 and at 8K's 0.0625 1 x 8 (one row: tl.arange(0, 1));
    at 0.0625 half the programs have no small row to write. 40 x 300 frames: 5 x 3 programs."""
    from nvpipe.kernels import color

    monkeypatch.setattr(color, "_block_shape", lambda: (8, 128))
    assert (color._pow2_at_most(8 * ratio), color._pow2_at_most(128 * ratio)) == small_tile
    height, width = 40, 300
    g = torch.Generator().manual_seed(bits)
    frame = random_frame(height, width, bits=bits, generator=g)
    convert, reference = (K.nv12_to_rgb, K.nv12_to_rgb_reference) if bits == 8 else (K.p016_to_rgb, K.p016_to_rgb_reference)
    out_small = poisoned((3, *K.small_size(height, width, ratio)), torch.float16)
    rgb, small = triton_call(convert, frame, downsample=ratio, out_small=out_small)
    want_rgb, want_small = reference(frame, downsample=ratio)
    assert small is out_small and not torch.isnan(small).any(), "a small output element was not written"
    torch.testing.assert_close(rgb.float(), want_rgb.float(), atol=TOLERANCE[torch.float16], rtol=0)
    torch.testing.assert_close(small.float(), want_small.float(), atol=TOLERANCE[torch.float16], rtol=0)


def test_triton_strided_frame_and_output():
    """A frame that is a pitched view into a larger buffer (odd offset, int16 bits), an
    output that is an HWC buffer permuted to CHW, and a small output with a row stride."""
    g = torch.Generator().manual_seed(11)
    height, width = 31, 45
    big = random_frame(height, width + 20, bits=12, generator=g)
    frame = big[:, 7:7 + 2 * ((width + 1) // 2)].view(torch.int16)  # pitched, non-zero offset
    assert not frame.is_contiguous()
    hwc = torch.full((height, width, 3), float("nan"))
    small_buffer = torch.full((3, 7, 30), float("nan"))
    small = small_buffer[:, :, 3:3 + 11]
    result, result_small = triton_call(K.p016_to_rgb, frame, width=width, bit_depth=12, full_range=True, matrix="bt709", out_dtype=torch.float32,
                                         downsample=0.25, out=hwc.permute(2, 0, 1), out_small=small)
    expected, expected_small = K.p016_to_rgb_reference(frame.view(torch.uint16).contiguous(), width=width, bit_depth=12,
                                                       full_range=True, matrix="bt709", out_dtype=torch.float32,
                                                       downsample=0.25)
    torch.testing.assert_close(hwc.permute(2, 0, 1), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(result_small, expected_small, atol=1e-5, rtol=0)
    assert torch.isnan(small_buffer[:, :, :3]).all() and torch.isnan(small_buffer[:, :, 14:]).all()


def test_bad_inputs_raise_kernel_error():
    frame = random_frame(8, 8)
    with pytest.raises(K.KernelError, match="matrix"):
        K.nv12_to_rgb(frame, matrix="bt999")
    with pytest.raises(K.KernelError, match="pitch"):
        K.nv12_to_rgb(frame, width=9)
    with pytest.raises(K.KernelError, match="uint8"):
        K.nv12_to_rgb(frame.to(torch.int32))
    with pytest.raises(K.KernelError, match="downsample"):
        K.nv12_to_rgb(frame, downsample=2.0)
    with pytest.raises(K.KernelError, match="out must have shape"):
        K.nv12_to_rgb(frame, out=torch.empty(3, 8, 7, dtype=torch.float16))


def test_import_without_triton():
    """nvpipe.kernels imports and its references run when triton cannot be imported."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, nvpipe.kernels as K\n"
        "assert not K.HAVE_TRITON\n"
        "f = torch.randint(0, 256, (12, 8), dtype=torch.uint8)\n"
        "rgb = K.nv12_to_rgb(f)\n"
        "assert rgb.shape == (3, 8, 8)\n"
        "try:\n"
        "    K.nv12_to_rgb(f, impl='triton')\n"
        "except K.KernelError:\n"
        "    print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


# ------------------------------------------------------------------- FFmpeg parity
#
# PyAV is told the colour space explicitly on both sides: reformat(src_colorspace=<matrix>,
# src_color_range=<MPEG|JPEG>, dst_colorspace=<same>, dst_color_range=JPEG) so swscale
# applies exactly the stream's matrix and range, with interpolation=POINT|ACCURATE_RND:
# POINT replicates each chroma sample over its 2x2 block (our upsampling); ACCURATE_RND
# turns off swscale's fast fixed-point rounding.
# 8-bit clips: compared with swscale's rgb24. Measured (3 frames each): bt601 limited
# 99.77% of values within 2 levels (max 3), bt601 full and bt709 full 100% (max 2).
# 10-bit clips: swscale dithers when it reduces 10-bit to rgb24 (its rgb24 differs from its
# own rgb48 by up to 4 levels), so the reference is its rgb48le scaled to 0-255: 100% within
# 1 level (max 0.99-1.00). For information, vs the dithered rgb24: bt2020 98.9%, h264/h265
# 10-bit 96.6% within 2 levels.

PARITY_CLIPS = [
    ("bt601_limited_range.mp4", "bt601", False, 8),
    ("bt601_full_range.mp4", "bt601", True, 8),
    ("bt709_full_range.mp4", "bt709", True, 8),
    ("bt2020_10bit.mp4", "bt2020", False, 10),
    ("h265_10bits.mp4", "bt709", False, 10),
]


def _decoded_planes(frame, bits):
    """(H + ceil(H/2), 2*ceil(W/2)) tensor: NV12 for 8-bit, P016 (MSB-aligned) for 10-bit."""
    width = 2 * ((frame.width + 1) // 2)
    if bits == 8:
        nv12 = frame.reformat(format="nv12")
        # to_ndarray gives (H * 3 / 2, W) with the planes' padding removed; check it.
        array = nv12.to_ndarray()
        assert array.shape == (frame.height + (frame.height + 1) // 2, width)
        return torch.from_numpy(array.copy())
    p010 = frame.reformat(format="p010le")  # 10-bit codes << 6, i.e. P016 layout
    planes = [np.frombuffer(plane, np.uint16).reshape(plane.height, plane.line_size // 2)[:, :width]
              for plane in p010.planes]
    return torch.from_numpy(np.concatenate(planes).copy())


@pytest.mark.parametrize("clip,matrix,full_range,bits", PARITY_CLIPS)
def test_ffmpeg_parity(footage, clip, matrix, full_range, bits):
    av = pytest.importorskip("av")
    from av.video.reformatter import ColorRange, Colorspace, Interpolation

    colorspace = {"bt601": Colorspace.ITU601, "bt709": Colorspace.ITU709, "bt2020": Colorspace.BT2020}[matrix]
    colour_range = ColorRange.JPEG if full_range else ColorRange.MPEG
    convert = K.nv12_to_rgb if bits == 8 else K.p016_to_rgb
    reference = K.nv12_to_rgb_reference if bits == 8 else K.p016_to_rgb_reference
    with av.open(str(footage(f"color/{clip}"))) as container:
        frames = [frame for _, frame in zip(range(2), container.decode(video=0))]
    for frame in frames:
        kwargs = dict(src_colorspace=colorspace, src_color_range=colour_range, dst_colorspace=colorspace,
                      dst_color_range=ColorRange.JPEG, interpolation=Interpolation.POINT | Interpolation.ACCURATE_RND)
        if bits == 8:
            theirs = frame.reformat(format="rgb24", **kwargs).to_ndarray().astype(np.float64)
        else:
            theirs = frame.reformat(format="rgb48le", **kwargs).to_ndarray().astype(np.float64) / 257.0
        planes = _decoded_planes(frame, bits)
        ours = reference(planes, matrix=matrix, full_range=full_range, out_dtype=torch.float32, width=frame.width)
        ours_255 = (ours * 255).permute(1, 2, 0).numpy()
        if bits == 8:
            ours_255 = np.round(ours_255)
        within = np.mean(np.abs(ours_255 - theirs) <= 2)
        assert within >= 0.99, f"{clip}: only {within:.4f} of values within 2 levels of FFmpeg"

        # The Triton kernel on a crop of the planes (the interpreter is slow), vs the reference.
        top, left, height, width = 64, 96, 24, 40
        crop = torch.cat((planes[top:top + height, left:left + width],
                          planes[frame.height + top // 2:frame.height + (top + height) // 2, left:left + width]))
        got = triton_call(convert, crop, matrix=matrix, full_range=full_range, out_dtype=torch.float16)
        torch.testing.assert_close(got.float(), ours[:, top:top + height, left:left + width], atol=2.0**-10, rtol=0)
