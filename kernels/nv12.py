"""Kernel 3: RGB (or the matting composite) -> NV12 for the encoder; alpha -> grey NV12.

NV12 here is uint8 ``(H + ceil(H/2), P)``, ``P >= 2*ceil(W/2)``: Y rows, then interleaved
U, V rows (see docs/design.md). Chroma is the average of each 2x2 block (of the pixels that
exist, at odd edges). Codes are ``round(x)`` half up, clamped to 0..255.

``matting_tail_nv12`` fuses kernel 2 (``kernels.tail``) with this one: the source frame is
read once and the encoder's NV12 written once, with no RGB frame in between.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._common import LAUNCH_LOCK, KIND_CODES, KernelError, cdiv, check_float_dtype, rgb_to_yuv_coefficients
from ._dispatch import NATIVE, TRITON, choose_implementation
from . import native
from ._tiles import Background, TailArgs, background_args, compose_reference, fgr_pha_reference, tail_block_shape

NV12_OUTPUTS = ("composite", "foreground", "alpha")


def nv12_shape(height: int, width: int) -> tuple[int, int]:
    """Shape of a tightly packed NV12 frame: ``(H + ceil(H/2), 2*ceil(W/2))``."""
    return height + (height + 1) // 2, 2 * ((width + 1) // 2)


def _alpha_coefficients(full_range: bool):
    # Grey: Y from alpha (limited: 16 + 219 a, full: 255 a), U = V = 128.
    span, offset = (255.0, 0.0) if full_range else (219.0, 16.0)
    return (span, 0.0, 0.0, offset), (0.0, 0.0, 0.0, 128.0), (0.0, 0.0, 0.0, 128.0)


def _nv12_out(out: Optional[torch.Tensor], height: int, width: int, device) -> torch.Tensor:
    rows, min_pitch = nv12_shape(height, width)
    if out is None:
        return torch.empty((rows, min_pitch), dtype=torch.uint8, device=device)
    if out.dtype != torch.uint8 or out.dim() != 2 or out.shape[0] != rows or out.shape[1] < min_pitch:
        raise KernelError(f"out must be uint8 ({rows}, >= {min_pitch}) for a {width}x{height} NV12 frame, "
                          f"got {out.dtype} {tuple(out.shape)}")
    if out.device != device:
        raise KernelError(f"out is on {out.device} but the input is on {device}")
    return out


# ----------------------------------------------------------------------- reference


def _to_nv12_reference(values: torch.Tensor, coefficients, out: torch.Tensor) -> torch.Tensor:
    """values: float32 [C, H, W] (C = 3, or 1 for grey) in [0, 1]; writes NV12 into ``out``."""
    channels, height, width = values.shape
    hc, wc = (height + 1) // 2, (width + 1) // 2

    def weighted(planes: torch.Tensor, row) -> torch.Tensor:
        # row: (c0, c1, c2, offset); + 0.5 so the uint8 cast (truncation) rounds half up.
        acc = planes[0] * row[0]
        for c in range(1, channels):
            acc.add_(planes[c], alpha=row[c])
        return acc.add_(row[3] + 0.5).clamp_(0.0, 255.0)

    y_row, u_row, v_row = coefficients
    out[:height, :width].copy_(weighted(values, y_row))
    # 2x2 means; with ceil_mode and no padding, the odd edge windows divide by the
    # pixels they hold (PyTorch clips the window before counting).
    means = F.avg_pool2d(values[None], kernel_size=2, stride=2, ceil_mode=True)[0]  # [C, hc, wc]
    chroma = out[height : height + hc, : 2 * wc].view(hc, wc, 2)
    chroma[..., 0].copy_(weighted(means, u_row))
    chroma[..., 1].copy_(weighted(means, v_row))
    return out


def _as_float(values: torch.Tensor) -> torch.Tensor:
    if values.dtype == torch.uint8:
        return values.to(torch.float32).mul_(1.0 / 255.0)
    return values.to(torch.float32)


# -------------------------------------------------------------------------- Triton



def _nv12_block_shape():
    # Even tile sizes (whole 2x2 chroma blocks); the tail's tiles (see tail_block_shape):
    # a program writes 16 x 64 luma bytes and 8 x 64 chroma bytes as contiguous row runs.
    return tail_block_shape()


def _flat(coefficients) -> list[float]:
    return [float(c) for row in coefficients for c in row]


def _to_nv12(values: torch.Tensor, coefficients, out: Optional[torch.Tensor], impl: Optional[str]) -> torch.Tensor:
    channels, height, width = values.shape
    out = _nv12_out(out, height, width, values.device)
    which = choose_implementation(impl, values, native_unfit="no C kernel converts RGB or alpha to "
                                  "NV12 (the CPU pipeline uses matting_tail_nv12)")
    if which != TRITON:
        return _to_nv12_reference(_as_float(values), coefficients, out)
    block_h, block_w, warps = _nv12_block_shape()
    grid = (cdiv(height, block_h), cdiv(width, block_w))
    from ._triton_nv12 import _to_nv12_kernel

    with LAUNCH_LOCK:
        _to_nv12_kernel[grid](
            values, *values.stride(), channels, out, *out.stride(), height, width, *_flat(coefficients),
            IN_U8=values.dtype == torch.uint8, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=warps,
        )
    return out


def _check_image(values: torch.Tensor, channels: int, name: str) -> None:
    if values.dim() != 3 or values.shape[0] != channels:
        raise KernelError(f"{name} must be [{channels},H,W], got {tuple(values.shape)}")
    check_float_dtype(values.dtype, name, allow_uint8=True)


# -------------------------------------------------------------------------- public


def rgb_to_nv12(
    rgb: torch.Tensor,
    *,
    matrix: str = "bt709",
    full_range: bool = False,
    out: Optional[torch.Tensor] = None,
    impl: Optional[str] = None,
) -> torch.Tensor:
    """Planar RGB -> NV12 for an encoder.

    Args:
        rgb: ``[3, H, W]``, float in [0, 1] or uint8 (0-255), any strides (an HWC buffer
            permuted to CHW is fine). Odd H, W allowed.
        matrix: ``"bt601"``, ``"bt709"`` or ``"bt2020"``.
        full_range: False: Y 16-235, U/V 16-240; True: 0-255.
        out: optional uint8 ``(H + ceil(H/2), P)``, ``P >= 2*ceil(W/2)``, any strides
            (padding columns are left alone).
        impl: ``"triton"``, ``"reference"``, ``"native"`` or None: the dispatch rule of
            :mod:`nvpipe.kernels`.

    Returns:
        uint8 ``(H + ceil(H/2), 2*ceil(W/2))`` (or ``out``): Y, then interleaved U, V, each
        chroma sample from the mean of its 2x2 block.
    """
    _check_image(rgb, 3, "rgb")
    return _to_nv12(rgb, rgb_to_yuv_coefficients(matrix, full_range), out, impl)


def rgb_to_nv12_reference(rgb: torch.Tensor, *, matrix: str = "bt709", full_range: bool = False,
                          out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain PyTorch :func:`rgb_to_nv12`: the CPU path."""
    return rgb_to_nv12(rgb, matrix=matrix, full_range=full_range, out=out, impl="reference")


def alpha_to_nv12(
    pha: torch.Tensor,
    *,
    full_range: bool = False,
    out: Optional[torch.Tensor] = None,
    impl: Optional[str] = None,
) -> torch.Tensor:
    """Alpha matte -> grey NV12 (Y from alpha, U = V = 128), for alpha-as-video outputs.

    Args:
        pha: ``[1, H, W]`` or ``[H, W]``, float in [0, 1] or uint8, any strides.
        full_range: False: Y = 16 + 219 * alpha; True: Y = 255 * alpha.
        out, impl: as :func:`rgb_to_nv12`.

    Returns:
        uint8 ``(H + ceil(H/2), 2*ceil(W/2))`` (or ``out``).
    """
    if pha.dim() == 2:
        pha = pha[None]
    _check_image(pha, 1, "pha")
    return _to_nv12(pha, _alpha_coefficients(full_range), out, impl)


def alpha_to_nv12_reference(pha: torch.Tensor, *, full_range: bool = False,
                            out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain PyTorch :func:`alpha_to_nv12`: the CPU path."""
    return alpha_to_nv12(pha, full_range=full_range, out=out, impl="reference")


def matting_tail_nv12(
    coeff_a: torch.Tensor,
    coeff_b: torch.Tensor,
    src: torch.Tensor,
    *,
    output: str = "composite",
    background: Background = None,
    matrix: str = "bt709",
    full_range: bool = False,
    out: Optional[torch.Tensor] = None,
    impl: Optional[str] = None,
) -> torch.Tensor:
    """Kernels 2 + 3 fused: the matting tail, composited, written straight as NV12.

    Args:
        coeff_a, coeff_b: float ``[4, h, w]``, any strides (one frame, not batched).
        src: float ``[3, H, W]`` in [0, 1], any strides.
        output: ``"composite"``, ``"foreground"`` or ``"alpha"`` (grey NV12 of the matte;
            ``matrix`` is then unused).
        background: as :func:`nvpipe.kernels.matting_tail` (composite only).
        matrix, full_range, out, impl: as :func:`rgb_to_nv12`.

    Returns:
        uint8 ``(H + ceil(H/2), 2*ceil(W/2))`` (or ``out``), equal to
        ``rgb_to_nv12(matting_tail(..., out_dtype=torch.float32))`` up to float rounding.
    """
    if output not in NV12_OUTPUTS:
        raise KernelError(f"output must be one of {NV12_OUTPUTS} for NV12, got {output!r}")
    if src.dim() != 3:
        raise KernelError(f"matting_tail_nv12 takes one frame: src [3,H,W], got {tuple(src.shape)}")
    args = TailArgs(coeff_a, coeff_b, src, output, background, None, torch.float32)
    coefficients = _alpha_coefficients(full_range) if output == "alpha" else rgb_to_yuv_coefficients(matrix, full_range)
    out = _nv12_out(out, args.height, args.width, src.device)
    which = choose_implementation(impl, src, native_unfit=None)
    if which == NATIVE:
        return native.matting_tail_nv12(args, coefficients, out)
    if which != TRITON:
        values = compose_reference(fgr_pha_reference(args), args)[0]
        return _to_nv12_reference(values, coefficients, out)
    block_h, block_w, warps = _nv12_block_shape()
    (bg, _, *bg_strides), bg_tensor, bg_u8 = background_args(args, args.src)
    low_h, low_w = args.coeff_a.shape[-2:]
    grid = (cdiv(args.height, block_h), cdiv(args.width, block_w))
    from ._triton_nv12 import _matting_tail_nv12_kernel

    with LAUNCH_LOCK:
        _matting_tail_nv12_kernel[grid](
            coeff_a, *coeff_a.stride(), coeff_b, *coeff_b.stride(), src, *src.stride(),
            bg, *bg_strides, *args.colour,
            out, *out.stride(), args.height, args.width, low_h, low_w, low_h / args.height, low_w / args.width,
            *_flat(coefficients),
            KIND=KIND_CODES[output], BG_TENSOR=bg_tensor, BG_U8=bg_u8, COEFF_VEC4=args.coeff_vec4,
            BLOCK_H=block_h, BLOCK_W=block_w, num_warps=warps,
        )
    return out


def matting_tail_nv12_reference(coeff_a, coeff_b, src, *, output="composite", background=None, matrix="bt709",
                                full_range=False, out=None) -> torch.Tensor:
    """Plain PyTorch :func:`matting_tail_nv12`: the CPU path."""
    return matting_tail_nv12(coeff_a, coeff_b, src, output=output, background=background, matrix=matrix,
                             full_range=full_range, out=out, impl="reference")
