"""Kernel 2: RVM's full-resolution tail (the refiner's upsample-and-apply step) fused with
compositing.

    out = up(A) * [src, mean_c(src)] + up(b)        up: bilinear, align_corners=False, size (H, W)
    fgr = clamp(out[:3] + src, 0, 1)                pha = clamp(out[3], 0, 1)

then one of: composite over a colour or a background frame, foreground, alpha, straight or
premultiplied RGBA, written in one pass into any strided destination (e.g. an interleaved
HWC uint8 buffer viewed as CHW, which is what encoders take).
"""

from __future__ import annotations

from typing import Optional

import torch

from . import native
from ._common import LAUNCH_LOCK, KIND_CODES, cdiv
from ._dispatch import NATIVE, TRITON, choose_implementation
from ._tiles import (
    OUTPUT_CHANNELS,
    Background,
    TailArgs,
    background_args,
    compose_reference,
    fgr_pha_reference,
    tail_block_shape,
)

__all__ = ["OUTPUT_CHANNELS", "matting_tail", "matting_tail_reference", "tail_block_shape"]


# ----------------------------------------------------------------------- reference


def _store_reference(values: torch.Tensor, destination: torch.Tensor) -> None:
    """Writes float [0, 1] values into ``destination`` (uint8: round(x * 255), half up)."""
    if destination.dtype == torch.uint8:
        values = values.mul(255.0).add_(0.5).clamp_(0.0, 255.0)  # the uint8 cast truncates
    destination.copy_(values)


def _matting_tail_reference(args: TailArgs) -> torch.Tensor:
    result = args.allocate()
    _store_reference(compose_reference(fgr_pha_reference(args), args), result)
    return args.unbatch(result)


# -------------------------------------------------------------------------- Triton



def _image_strides(tensor: torch.Tensor) -> tuple[int, ...]:
    """Strides of an [N, C, H, W] tensor with the batch stride 0 for one image: a [C, H, W]
    view's [None] has an arbitrary batch stride (4 for channels_last A and b) that would
    hide the base pointer's 16-byte alignment from Triton."""
    return (tensor.stride(0) if tensor.shape[0] > 1 else 0, *tensor.stride()[1:])


def _matting_tail_triton(args: TailArgs) -> torch.Tensor:
    result = args.allocate()
    block_h, block_w, warps = tail_block_shape()
    (bg, *bg_strides), bg_tensor, bg_u8 = background_args(args, args.src)
    low_h, low_w = args.coeff_a.shape[-2:]
    grid = (cdiv(args.height, block_h), cdiv(args.width, block_w), args.n)
    from ._triton_tail import _matting_tail_kernel

    with LAUNCH_LOCK:
        _matting_tail_kernel[grid](
            args.coeff_a, *_image_strides(args.coeff_a),
            args.coeff_b, *_image_strides(args.coeff_b),
            args.src, *_image_strides(args.src),
            bg, *bg_strides, *args.colour,
            result, *_image_strides(result),
            args.height, args.width, low_h, low_w, low_h / args.height, low_w / args.width,
            CHANNELS=args.channels, KIND=KIND_CODES[args.output], BG_TENSOR=bg_tensor, BG_U8=bg_u8,
            OUT_U8=args.out_dtype == torch.uint8, COEFF_VEC4=args.coeff_vec4, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=warps,
        )
    return args.unbatch(result)


# -------------------------------------------------------------------------- public


def matting_tail(
    coeff_a: torch.Tensor,
    coeff_b: torch.Tensor,
    src: torch.Tensor,
    *,
    output: str = "composite",
    background: Background = None,
    out: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
    impl: Optional[str] = None,
) -> torch.Tensor:
    """RVM's full-resolution tail and compositing, in one pass over the frame.

    Args:
        coeff_a, coeff_b: float ``[4, h, w]`` (or ``[N, 4, h, w]``), the refiner's
            low-resolution coefficients; any strides (channels_last views are fastest);
            ``h, w`` may equal ``H, W`` (no upsampling).
        src: float ``[3, H, W]`` (or ``[N, 3, H, W]``) in [0, 1], any strides.
        output: ``"composite"`` (``fgr * pha + bg * (1 - pha)``, 3 channels),
            ``"foreground"`` (fgr, 3), ``"alpha"`` (pha, 1), ``"rgba"`` (straight, 4) or
            ``"rgba_premultiplied"`` (``[fgr * pha, pha]``, 4).
        background: for ``"composite"``: an ``(r, g, b)`` colour in [0, 1], or a
            ``[3, H, W]`` (or ``[N, 3, H, W]``) tensor, uint8 (0-255) or float (0-1).
        out: optional destination ``[C, H, W]`` (or ``[N, C, H, W]``), any strides, e.g.
            ``hwc_uint8.permute(2, 0, 1)``; its dtype wins over ``out_dtype``.
        out_dtype: float16, bfloat16, float32 or uint8 (``round(x * 255)``); default src's.
        impl: ``"triton"``, ``"reference"``, ``"native"`` or None: the dispatch rule of
            :mod:`nvpipe.kernels`.

    Returns:
        ``[C, H, W]`` (``[N, C, H, W]`` when batched), C from ``output``; ``out`` if given.

    With ``up = F.interpolate(size=(H, W), mode="bilinear", align_corners=False)``:
    ``o = up(A) * cat[src, mean_c(src)] + up(b)``, ``fgr = clamp(o[:3] + src, 0, 1)``,
    ``pha = clamp(o[3:], 0, 1)``. Arithmetic is float32 throughout.
    """
    args = TailArgs(coeff_a, coeff_b, src, output, background, out, out_dtype)
    which = choose_implementation(impl, src, native_unfit=None if args.out_dtype == torch.uint8
                                  else "writes uint8 outputs only (what encoders take)")
    if which == TRITON:
        return _matting_tail_triton(args)
    if which == NATIVE:
        return args.unbatch(native.matting_tail_u8(args, args.allocate()))
    return _matting_tail_reference(args)


def matting_tail_reference(
    coeff_a: torch.Tensor,
    coeff_b: torch.Tensor,
    src: torch.Tensor,
    *,
    output: str = "composite",
    background: Background = None,
    out: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Plain PyTorch :func:`matting_tail` (same arguments and result): the CPU path.

    Full-resolution passes: one bilinear upsample of A and b together (8 channels), then
    in-place multiply-adds, clamp, composite and the final store.
    """
    return _matting_tail_reference(TailArgs(coeff_a, coeff_b, src, output, background, out, out_dtype))
