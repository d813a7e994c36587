"""The tail's Triton tiles, shared by ``kernels.tail`` and ``kernels.nv12``: bilinear
taps of the coefficients, fgr/pha of a tile, the chosen output of a tile.

Imported only where a Triton kernel launches (a CUDA tensor, or ``impl="triton"`` under
``TRITON_INTERPRET=1``): the CPU pipeline never imports Triton (0.16 s of start-up on the
2-core CPU VM)."""

import triton
import triton.language as tl


@triton.jit
def bilerp(v00, v01, v10, v11, wy, wx):
    top = v00 + (v01 - v00) * wx
    bottom = v10 + (v11 - v10) * wx
    return top + (bottom - top) * wy


@triton.jit
def tap_offsets(y, x, s_c, s_h, s_w, channel, COEFF_VEC4: tl.constexpr):
    """[BH, BW, 4] element offsets of the 4 channels of coefficient texels (y, x)."""
    if COEFF_VEC4:  # channels_last, s_w == 4, s_h % 4 == 0: 4 contiguous, aligned channels
        return tl.max_contiguous(tl.multiple_of((y * s_h + x * 4)[:, :, None] + channel, [1, 1, 4]), [1, 1, 4])
    return (y * s_h + x * s_w)[:, :, None] + channel * s_c


@triton.jit
def upsampled(ptr, s_c, s_h, s_w, y0, x0, y1, x1, wy, wx, channel, mask4, COEFF_VEC4: tl.constexpr):
    """float32 [BH, BW, 4]: the coefficient texels (y0|y1, x0|x1) at ``ptr`` blended by
    (wy, wx), all four channels at once."""
    t00 = tl.load(ptr + tap_offsets(y0, x0, s_c, s_h, s_w, channel, COEFF_VEC4), mask=mask4, other=0.0)
    t01 = tl.load(ptr + tap_offsets(y0, x1, s_c, s_h, s_w, channel, COEFF_VEC4), mask=mask4, other=0.0)
    t10 = tl.load(ptr + tap_offsets(y1, x0, s_c, s_h, s_w, channel, COEFF_VEC4), mask=mask4, other=0.0)
    t11 = tl.load(ptr + tap_offsets(y1, x1, s_c, s_h, s_w, channel, COEFF_VEC4), mask=mask4, other=0.0)
    return bilerp(t00.to(tl.float32), t01.to(tl.float32), t10.to(tl.float32), t11.to(tl.float32), wy, wx)


@triton.jit
def fgr_pha_tile(
    a_ptr, sa_c, sa_h, sa_w, b_ptr, sb_c, sb_h, sb_w, src_ptr, ss_c, ss_h, ss_w,
    rows, cols, mask, low_h, low_w, scale_h, scale_w, COEFF_VEC4: tl.constexpr,
):
    """float32 [BH, BW, 4]: (fgr r, g, b, pha) of the pixels ``rows`` x ``cols``.

    ``rows`` is [BH, 1], ``cols`` [1, BW]; the pointers already point at this image.
    The four channels of A and b sit in the last axis; with COEFF_VEC4 (channels_last
    coefficients, see ``TailArgs.coeff_vec4``) each tap is one vector load: on sm_90,
    32 8-byte loads a thread instead of 128 2-byte ones (bench/kernel_compile.py).
    """
    channel = tl.arange(0, 4)[None, None, :]
    mask4 = mask[:, :, None] & (channel < 4)
    # PyTorch's bilinear source index, align_corners=False, scale = in / out:
    # s = max((d + 0.5) * scale - 0.5, 0); i0 = min(floor(s), n - 1); i1 = min(i0 + 1, n - 1).
    src_y = tl.maximum((rows.to(tl.float32) + 0.5) * scale_h - 0.5, 0.0)
    src_x = tl.maximum((cols.to(tl.float32) + 0.5) * scale_w - 0.5, 0.0)
    y0 = tl.minimum(src_y.to(tl.int32), low_h - 1)
    x0 = tl.minimum(src_x.to(tl.int32), low_w - 1)
    wy = tl.minimum(tl.maximum(src_y - y0.to(tl.float32), 0.0), 1.0)[:, :, None]
    wx = tl.minimum(tl.maximum(src_x - x0.to(tl.float32), 0.0), 1.0)[:, :, None]
    y1 = tl.minimum(y0 + 1, low_h - 1)
    x1 = tl.minimum(x0 + 1, low_w - 1)

    up_a = upsampled(a_ptr, sa_c, sa_h, sa_w, y0, x0, y1, x1, wy, wx, channel, mask4, COEFF_VEC4)
    up_b = upsampled(b_ptr, sb_c, sb_h, sb_w, y0, x0, y1, x1, wy, wx, channel, mask4, COEFF_VEC4)

    # src in channels 0-2, 0 in channel 3 (masked), so fgr = out + src needs no split.
    src = tl.load(src_ptr + (rows * ss_h + cols * ss_w)[:, :, None] + channel * ss_c,
                  mask=mask4 & (channel < 3), other=0.0).to(tl.float32)
    mean = tl.sum(src, axis=2) / 3.0
    guide = tl.where(channel == 3, mean[:, :, None], src)  # [src, mean_c(src)]
    out = up_a * guide + up_b + src
    return tl.minimum(tl.maximum(out, 0.0), 1.0)


@triton.jit
def compose_tile(fgr_pha, bg_ptr, sg_c, sg_h, sg_w, bg_r, bg_g, bg_b, rows, cols, mask,
                  KIND: tl.constexpr, BG_TENSOR: tl.constexpr, BG_U8: tl.constexpr):
    """float32 [BH, BW, 4] of the chosen output (channels past its count are ignored).

    KIND: 0 composite, 1 foreground, 2 alpha (in every channel), 3 rgba, 4 premultiplied.
    """
    channel = tl.arange(0, 4)[None, None, :]
    pha = tl.sum(tl.where(channel == 3, fgr_pha, 0.0), axis=2)[:, :, None]
    if KIND == 0:
        if BG_TENSOR:
            bg = tl.load(bg_ptr + (rows * sg_h + cols * sg_w)[:, :, None] + channel * sg_c,
                         mask=mask[:, :, None] & (channel < 3), other=0.0).to(tl.float32)
            if BG_U8:
                bg = bg * (1.0 / 255.0)
        else:
            bg = tl.where(channel == 0, bg_r, tl.where(channel == 1, bg_g, bg_b)) + tl.zeros_like(fgr_pha)
        result = bg + pha * (fgr_pha - bg)
    elif KIND == 1:
        result = fgr_pha
    elif KIND == 2:
        result = pha + tl.zeros_like(fgr_pha)
    elif KIND == 3:
        result = fgr_pha
    else:
        result = fgr_pha * tl.where(channel < 3, pha, 1.0)
    return result
