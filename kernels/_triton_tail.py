"""Kernel 2 in Triton: the full-resolution tail fused with compositing, into any
strided destination (``kernels.tail`` launches it).

Imported only where a Triton kernel launches (a CUDA tensor, or ``impl="triton"`` under
``TRITON_INTERPRET=1``): the CPU pipeline never imports Triton (0.16 s of start-up on the
2-core CPU VM)."""

import triton
import triton.language as tl

from ._triton_tiles import compose_tile, fgr_pha_tile


@triton.jit
def _matting_tail_kernel(
    a_ptr, sa_n, sa_c, sa_h, sa_w,
    b_ptr, sb_n, sb_c, sb_h, sb_w,
    src_ptr, ss_n, ss_c, ss_h, ss_w,
    bg_ptr, sg_n, sg_c, sg_h, sg_w, bg_r, bg_g, bg_b,
    out_ptr, so_n, so_c, so_h, so_w,
    height, width, low_h, low_w, scale_h, scale_w,
    CHANNELS: tl.constexpr, KIND: tl.constexpr, BG_TENSOR: tl.constexpr, BG_U8: tl.constexpr,
    OUT_U8: tl.constexpr, COEFF_VEC4: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid_h = tl.program_id(0)
    pid_w = tl.program_id(1)
    image = tl.program_id(2).to(tl.int64)
    rows = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    cols = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    mask = (rows < height) & (cols < width)
    a_image, b_image = image * sa_n, image * sb_n
    if COEFF_VEC4:  # keeps the taps' 4-channel vectors aligned (batch strides are multiples of 4)
        a_image, b_image = tl.multiple_of(a_image, 4), tl.multiple_of(b_image, 4)
    fgr_pha = fgr_pha_tile(a_ptr + a_image, sa_c, sa_h, sa_w, b_ptr + b_image, sb_c, sb_h, sb_w,
                            src_ptr + image * ss_n, ss_c, ss_h, ss_w,
                            rows, cols, mask, low_h, low_w, scale_h, scale_w, COEFF_VEC4)
    result = compose_tile(fgr_pha, bg_ptr + image * sg_n, sg_c, sg_h, sg_w, bg_r, bg_g, bg_b,
                           rows, cols, mask, KIND, BG_TENSOR, BG_U8)
    if OUT_U8:
        result = tl.minimum(tl.maximum(result * 255.0 + 0.5, 0.0), 255.0).to(tl.uint8)
    channel = tl.arange(0, 4)[None, None, :]
    tl.store(out_ptr + image * so_n + (rows * so_h + cols * so_w)[:, :, None] + channel * so_c,
             result, mask=mask[:, :, None] & (channel < CHANNELS))
