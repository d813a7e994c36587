"""The NV12 writers in Triton: RGB or alpha -> NV12, and the tail fused with the NV12
write (``kernels.nv12`` launches them).

Imported only where a Triton kernel launches (a CUDA tensor, or ``impl="triton"`` under
``TRITON_INTERPRET=1``): the CPU pipeline never imports Triton (0.16 s of start-up on the
2-core CPU VM)."""

import triton
import triton.language as tl

from ._triton_tiles import compose_tile, fgr_pha_tile


@triton.jit
def _store_nv12_tile(
    values, rows, cols, mask, out_ptr, so_r, so_c, height, width, pid_h, pid_w,
    yr, yg, yb, y0, ur, ug, ub, u0, vr, vg, vb, v0,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Writes a [BH, BW, 4] float tile (channels r, g, b, -) as NV12 luma + chroma.

    The tile origin is even, so its 2x2 chroma blocks are whole: they are summed with a
    reshape to [BH/2, 2, BW/2, 2], and U, V interleaved with a join, so both planes are
    written as contiguous rows.
    """
    channel = tl.arange(0, 4)[None, None, :]
    luma = tl.sum(values * tl.where(channel == 0, yr, tl.where(channel == 1, yg, tl.where(channel == 2, yb, 0.0))),
                  axis=2) + y0
    luma_code = tl.minimum(tl.maximum(luma + 0.5, 0.0), 255.0).to(tl.uint8)
    tl.store(out_ptr + rows * so_r + cols * so_c, luma_code, mask=mask)

    u = tl.sum(values * tl.where(channel == 0, ur, tl.where(channel == 1, ug, tl.where(channel == 2, ub, 0.0))),
               axis=2)
    v = tl.sum(values * tl.where(channel == 0, vr, tl.where(channel == 1, vg, tl.where(channel == 2, vb, 0.0))),
               axis=2)
    present = mask.to(tl.float32)
    u_sum = tl.sum(tl.sum(tl.reshape(tl.where(mask, u, 0.0), (BLOCK_H // 2, 2, BLOCK_W // 2, 2)), axis=3), axis=1)
    v_sum = tl.sum(tl.sum(tl.reshape(tl.where(mask, v, 0.0), (BLOCK_H // 2, 2, BLOCK_W // 2, 2)), axis=3), axis=1)
    count = tl.sum(tl.sum(tl.reshape(present, (BLOCK_H // 2, 2, BLOCK_W // 2, 2)), axis=3), axis=1)
    count = tl.maximum(count, 1.0)
    uv = tl.reshape(tl.join(u_sum / count + u0, v_sum / count + v0), (BLOCK_H // 2, BLOCK_W))
    uv_code = tl.minimum(tl.maximum(uv + 0.5, 0.0), 255.0).to(tl.uint8)
    chroma_rows = pid_h * (BLOCK_H // 2) + tl.arange(0, BLOCK_H // 2)[:, None]
    chroma_cols = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    chroma_mask = (chroma_rows < (height + 1) // 2) & (chroma_cols < 2 * ((width + 1) // 2))
    tl.store(out_ptr + (height + chroma_rows) * so_r + chroma_cols * so_c, uv_code, mask=chroma_mask)


@triton.jit
def _to_nv12_kernel(
    in_ptr, si_c, si_h, si_w, in_channels, out_ptr, so_r, so_c, height, width,
    yr, yg, yb, y0, ur, ug, ub, u0, vr, vg, vb, v0,
    IN_U8: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid_h = tl.program_id(0)
    pid_w = tl.program_id(1)
    rows = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    cols = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    mask = (rows < height) & (cols < width)
    channel = tl.arange(0, 4)[None, None, :]
    values = tl.load(in_ptr + (rows * si_h + cols * si_w)[:, :, None] + channel * si_c,
                     mask=mask[:, :, None] & (channel < in_channels), other=0.0).to(tl.float32)
    if IN_U8:
        values = values * (1.0 / 255.0)
    _store_nv12_tile(values, rows, cols, mask, out_ptr, so_r, so_c, height, width, pid_h, pid_w,
                     yr, yg, yb, y0, ur, ug, ub, u0, vr, vg, vb, v0, BLOCK_H, BLOCK_W)


@triton.jit
def _matting_tail_nv12_kernel(
    a_ptr, sa_c, sa_h, sa_w, b_ptr, sb_c, sb_h, sb_w, src_ptr, ss_c, ss_h, ss_w,
    bg_ptr, sg_c, sg_h, sg_w, bg_r, bg_g, bg_b,
    out_ptr, so_r, so_c, height, width, low_h, low_w, scale_h, scale_w,
    yr, yg, yb, y0, ur, ug, ub, u0, vr, vg, vb, v0,
    KIND: tl.constexpr, BG_TENSOR: tl.constexpr, BG_U8: tl.constexpr, COEFF_VEC4: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid_h = tl.program_id(0)
    pid_w = tl.program_id(1)
    rows = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    cols = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    mask = (rows < height) & (cols < width)
    fgr_pha = fgr_pha_tile(a_ptr, sa_c, sa_h, sa_w, b_ptr, sb_c, sb_h, sb_w, src_ptr, ss_c, ss_h, ss_w,
                            rows, cols, mask, low_h, low_w, scale_h, scale_w, COEFF_VEC4)
    values = compose_tile(fgr_pha, bg_ptr, sg_c, sg_h, sg_w, bg_r, bg_g, bg_b, rows, cols, mask,
                           KIND, BG_TENSOR, BG_U8)
    _store_nv12_tile(values, rows, cols, mask, out_ptr, so_r, so_c, height, width, pid_h, pid_w,
                     yr, yg, yb, y0, ur, ug, ub, u0, vr, vg, vb, v0, BLOCK_H, BLOCK_W)
