"""Kernel 1 in Triton: NV12/P016 -> RGB, with the downsampled copy in the same pass
(``kernels.color`` launches it).

Imported only where a Triton kernel launches (a CUDA tensor, or ``impl="triton"`` under
``TRITON_INTERPRET=1``): the CPU pipeline never imports Triton (0.16 s of start-up on the
2-core CPU VM)."""

import triton
import triton.language as tl

from ._triton_tiles import bilerp


@triton.jit
def _yuv_to_rgb_at(frame_ptr, rows, cols, mask, luma_rows, stride_row, stride_col,
                   ky, rv, gu, gv, bu, r0, g0, b0):
    """RGB (float32, clamped to [0, 1]) of the pixels at ``rows``/``cols``."""
    luma = tl.load(frame_ptr + rows * stride_row + cols * stride_col, mask=mask, other=0).to(tl.float32)
    uv_offsets = (luma_rows + rows // 2) * stride_row + (cols // 2) * 2 * stride_col
    u = tl.load(frame_ptr + uv_offsets, mask=mask, other=0).to(tl.float32)
    v = tl.load(frame_ptr + uv_offsets + stride_col, mask=mask, other=0).to(tl.float32)
    y_term = luma * ky
    red = tl.minimum(tl.maximum(y_term + v * rv + r0, 0.0), 1.0)
    green = tl.minimum(tl.maximum(y_term + u * gu + v * gv + g0, 0.0), 1.0)
    blue = tl.minimum(tl.maximum(y_term + u * bu + b0, 0.0), 1.0)
    return red, green, blue


@triton.jit
def _yuv420_to_rgb_kernel(
    frame_ptr, stride_row, stride_col, height, width,
    rgb_ptr, stride_oc, stride_oh, stride_ow,
    small_ptr, stride_sc, stride_sh, stride_sw, small_height, small_width,
    inv_ratio_h, inv_ratio_w,
    ky, rv, gu, gv, bu, r0, g0, b0,
    HAS_SMALL: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    SMALL_BLOCK_H: tl.constexpr, SMALL_BLOCK_W: tl.constexpr,
):
    # Program (i, j) writes full-resolution tile (i, j) and small tile (i, j); the small
    # tiles are sized ratio x the full ones, so both cover about the same source region
    # and the small tile's taps hit lines this program has just brought into cache.
    pid_h = tl.program_id(0)
    pid_w = tl.program_id(1)
    rows = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    cols = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    mask = (rows < height) & (cols < width)
    red, green, blue = _yuv_to_rgb_at(frame_ptr, rows, cols, mask, height, stride_row, stride_col,
                                      ky, rv, gu, gv, bu, r0, g0, b0)
    out_offsets = rows * stride_oh + cols * stride_ow
    tl.store(rgb_ptr + out_offsets, red, mask=mask)
    tl.store(rgb_ptr + stride_oc + out_offsets, green, mask=mask)
    tl.store(rgb_ptr + 2 * stride_oc + out_offsets, blue, mask=mask)

    if HAS_SMALL:
        out_type = rgb_ptr.dtype.element_ty
        small_rows = pid_h * SMALL_BLOCK_H + tl.arange(0, SMALL_BLOCK_H)[:, None]
        small_cols = pid_w * SMALL_BLOCK_W + tl.arange(0, SMALL_BLOCK_W)[None, :]
        small_mask = (small_rows < small_height) & (small_cols < small_width)
        # PyTorch's bilinear source index (align_corners=False, scale given):
        # src = max((dst + 0.5) / ratio - 0.5, 0); i0 = min(floor(src), n-1); i1 = min(i0+1, n-1).
        src_y = tl.maximum((small_rows.to(tl.float32) + 0.5) * inv_ratio_h - 0.5, 0.0)
        src_x = tl.maximum((small_cols.to(tl.float32) + 0.5) * inv_ratio_w - 0.5, 0.0)
        y0 = tl.minimum(src_y.to(tl.int32), height - 1)
        x0 = tl.minimum(src_x.to(tl.int32), width - 1)
        wy = tl.minimum(tl.maximum(src_y - y0.to(tl.float32), 0.0), 1.0)
        wx = tl.minimum(tl.maximum(src_x - x0.to(tl.float32), 0.0), 1.0)
        y1 = tl.minimum(y0 + 1, height - 1)
        x1 = tl.minimum(x0 + 1, width - 1)
        r00, g00, b00 = _yuv_to_rgb_at(frame_ptr, y0, x0, small_mask, height, stride_row, stride_col,
                                       ky, rv, gu, gv, bu, r0, g0, b0)
        r01, g01, b01 = _yuv_to_rgb_at(frame_ptr, y0, x1, small_mask, height, stride_row, stride_col,
                                       ky, rv, gu, gv, bu, r0, g0, b0)
        r10, g10, b10 = _yuv_to_rgb_at(frame_ptr, y1, x0, small_mask, height, stride_row, stride_col,
                                       ky, rv, gu, gv, bu, r0, g0, b0)
        r11, g11, b11 = _yuv_to_rgb_at(frame_ptr, y1, x1, small_mask, height, stride_row, stride_col,
                                       ky, rv, gu, gv, bu, r0, g0, b0)
        # Taps rounded to the output dtype first: rgb_small interpolates the stored rgb.
        red_small = bilerp(r00.to(out_type).to(tl.float32), r01.to(out_type).to(tl.float32),
                            r10.to(out_type).to(tl.float32), r11.to(out_type).to(tl.float32), wy, wx)
        green_small = bilerp(g00.to(out_type).to(tl.float32), g01.to(out_type).to(tl.float32),
                              g10.to(out_type).to(tl.float32), g11.to(out_type).to(tl.float32), wy, wx)
        blue_small = bilerp(b00.to(out_type).to(tl.float32), b01.to(out_type).to(tl.float32),
                             b10.to(out_type).to(tl.float32), b11.to(out_type).to(tl.float32), wy, wx)
        small_offsets = small_rows * stride_sh + small_cols * stride_sw
        tl.store(small_ptr + small_offsets, red_small, mask=small_mask)
        tl.store(small_ptr + stride_sc + small_offsets, green_small, mask=small_mask)
        tl.store(small_ptr + 2 * stride_sc + small_offsets, blue_small, mask=small_mask)
