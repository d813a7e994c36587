"""Kernel 1: a decoded 4:2:0 frame (NV12 / P016) -> planar RGB in [0, 1], with the
network's low-resolution input written in the same pass.

Chroma is upsampled by replication (each 2x2 luma block takes its one chroma sample), as
FFmpeg's swscale does by default for same-size YUV -> RGB. It keeps the round trip
NV12 -> RGB -> NV12 (2x2 averaging, ``kernels.nv12``) exact where a pixel is unchanged.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

from . import native
from ._dispatch import NATIVE, TRITON, choose_implementation
from ._common import (
    LAUNCH_LOCK,
    KernelError,
    cdiv,
    check_float_dtype,
    interpreting,
    small_size,
    yuv_to_rgb_coefficients,
)

Tensors = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------- checks


def _frame_geometry(frame: torch.Tensor, height: Optional[int], width: Optional[int]):
    """(H, W) of a 4:2:0 frame tensor ``(H + ceil(H/2), P)``."""
    if frame.dim() != 2:
        raise KernelError(f"a 4:2:0 frame must be 2-D (H + ceil(H/2), pitch), got shape {tuple(frame.shape)}")
    rows, pitch = frame.shape
    # rows = H + ceil(H/2) has exactly one solution: H = floor(2 * rows / 3).
    h = (2 * rows) // 3 if height is None else int(height)
    w = pitch if width is None else int(width)
    if h < 1 or w < 1 or h + (h + 1) // 2 != rows:
        raise KernelError(f"frame of shape {tuple(frame.shape)} does not hold a {w}x{h} 4:2:0 picture")
    if pitch < w or pitch < 2 * ((w + 1) // 2):
        raise KernelError(f"frame pitch {pitch} is too small for width {w} (needs >= {2 * ((w + 1) // 2)})")
    return h, w


def _check_out(out: Optional[torch.Tensor], shape, dtype, device, name: str) -> None:
    if out is None:
        return
    if tuple(out.shape) != tuple(shape):
        raise KernelError(f"{name} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.dtype != dtype:
        raise KernelError(f"{name} must be {dtype}, got {out.dtype}")
    if out.device != device:
        raise KernelError(f"{name} must be on {device}, got {out.device}")


# ----------------------------------------------------------------------- reference


def _yuv420_to_rgb_reference(
    frame: torch.Tensor,
    coefficients,
    out_dtype: torch.dtype,
    downsample: Optional[float],
    height: Optional[int],
    width: Optional[int],
    out: Optional[torch.Tensor],
    out_small: Optional[torch.Tensor],
) -> Tensors:
    h, w = _frame_geometry(frame, height, width)
    hc, wc = (h + 1) // 2, (w + 1) // 2
    ky, rv, gu, gv, bu, r0, g0, b0 = coefficients
    luma = frame[:h, :w].to(torch.float32)
    uv = frame[h : h + hc, : 2 * wc].to(torch.float32).view(hc * wc, 2)
    # The chroma terms at quarter resolution in one small matmul: [3, 2] @ [2, hc*wc] + offsets,
    # broadcast over each 2x2 block below.
    weights = torch.tensor([[0.0, rv], [gu, gv], [bu, 0.0]], dtype=torch.float32, device=frame.device)
    offsets = torch.tensor([[r0], [g0], [b0]], dtype=torch.float32, device=frame.device)
    chroma = torch.addmm(offsets, weights, uv.t()).view(3, hc, wc)
    rgb = torch.empty((3, h, w), dtype=torch.float32, device=frame.device)
    if h % 2 == 0 and w % 2 == 0:
        # One fused pass: rgb[c, 2i+a, 2j+b] = chroma[c, i, j] + ky * luma[2i+a, 2j+b].
        torch.add(
            chroma[:, :, None, :, None],
            luma.view(1, hc, 2, wc, 2),
            alpha=ky,
            out=rgb.view(3, hc, 2, wc, 2),
        )
    else:
        chroma_full = chroma[:, :, None, :, None].expand(3, hc, 2, wc, 2).reshape(3, 2 * hc, 2 * wc)
        torch.add(chroma_full[:, :h, :w], luma, alpha=ky, out=rgb)
    rgb.clamp_(0.0, 1.0)
    if out_dtype != torch.float32:
        rgb = rgb.to(out_dtype)
    if out is not None:
        out.copy_(rgb)
        rgb = out
    if downsample is None:
        return rgb
    small = F.interpolate(
        rgb[None], scale_factor=float(downsample), mode="bilinear", align_corners=False,
        recompute_scale_factor=False,
    )[0]
    if out_small is not None:
        out_small.copy_(small)
        small = out_small
    return rgb, small


# -------------------------------------------------------------------------- Triton


def _block_shape():
    # GPU: 8 x 128 pixels, 4 warps -> 8 pixels a thread, i.e. 16-byte FP16 stores per plane.
    # The interpreter runs programs one by one, so it gets fewer, larger tiles.
    return (32, 64) if interpreting() else (8, 128)


def _pow2_at_most(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(x, 1.0)))))


def _yuv420_to_rgb_triton(frame, coefficients, out_dtype, downsample, height, width, out, out_small):
    h, w = _frame_geometry(frame, height, width)
    if frame.dtype == torch.int16:
        frame = frame.view(torch.uint16)
    rgb = out if out is not None else torch.empty((3, h, w), dtype=out_dtype, device=frame.device)
    block_h, block_w = _block_shape()
    if downsample is not None:
        hs, ws = small_size(h, w, downsample)
        small = out_small if out_small is not None else torch.empty((3, hs, ws), dtype=out_dtype, device=frame.device)
        small_block_h = _pow2_at_most(block_h * downsample)
        small_block_w = _pow2_at_most(block_w * downsample)
        inv_ratio = float(1.0 / float(downsample))
        small_arg, small_strides = small, small.stride()
    else:
        hs = ws = 0
        small_block_h = small_block_w = 1
        inv_ratio = 1.0
        small_arg, small_strides = rgb, (0, 0, 0)
    grid = (
        max(cdiv(h, block_h), cdiv(hs, small_block_h)),
        max(cdiv(w, block_w), cdiv(ws, small_block_w)),
    )
    from ._triton_color import _yuv420_to_rgb_kernel

    with LAUNCH_LOCK:
        _yuv420_to_rgb_kernel[grid](
            frame, frame.stride(0), frame.stride(1), h, w,
            rgb, *rgb.stride(),
            small_arg, *small_strides, hs, ws, inv_ratio, inv_ratio,
            *[float(c) for c in coefficients],
            HAS_SMALL=downsample is not None,
            BLOCK_H=block_h, BLOCK_W=block_w, SMALL_BLOCK_H=small_block_h, SMALL_BLOCK_W=small_block_w,
            num_warps=4,
        )
    return rgb if downsample is None else (rgb, small)


# -------------------------------------------------------------------------- public


def _convert(frame, dtypes, max_code, full_scale, matrix, full_range, out_dtype, downsample,
             height, width, out, out_small, impl) -> Tensors:
    if frame.dtype not in dtypes:
        raise KernelError(f"frame must be {' or '.join(map(str, dtypes))}, got {frame.dtype}")
    check_float_dtype(out_dtype, "out_dtype")
    h, w = _frame_geometry(frame, height, width)
    _check_out(out, (3, h, w), out_dtype, frame.device, "out")
    if downsample is not None:
        _check_out(out_small, (3, *small_size(h, w, downsample)), out_dtype, frame.device, "out_small")
    coefficients = yuv_to_rgb_coefficients(matrix, full_range, max_code, full_scale)
    args = (frame, coefficients, out_dtype, downsample, height, width, out, out_small)
    native_fits = out_dtype == torch.float32 and all(
        buffer is None or buffer.is_contiguous() for buffer in (out, out_small))
    which = choose_implementation(impl, frame, native_unfit=None if native_fits else
                                  "writes float32 into new or contiguous outputs only")
    if which == TRITON:
        return _yuv420_to_rgb_triton(*args)
    if which == NATIVE:
        samples = frame.view(torch.uint16) if frame.dtype == torch.int16 else frame
        rgb, small = native.yuv420_to_rgb(samples, coefficients, h, w, downsample, out, out_small)
        return rgb if downsample is None else (rgb, small)
    return _yuv420_to_rgb_reference(*args)


def nv12_to_rgb(
    frame: torch.Tensor,
    *,
    matrix: str = "bt709",
    full_range: bool = False,
    out_dtype: torch.dtype = torch.float16,
    downsample: Optional[float] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    out: Optional[torch.Tensor] = None,
    out_small: Optional[torch.Tensor] = None,
    impl: Optional[str] = None,
) -> Tensors:
    """NV12 frame -> planar RGB in [0, 1], optionally with its bilinear downsample.

    Args:
        frame: uint8 ``(H + ceil(H/2), P)``: rows ``0..H-1`` luma, then ``ceil(H/2)`` rows of
            interleaved U, V (U at even columns); ``P >= W`` and ``P >= 2*ceil(W/2)``.
            Any strides (a pitched view of a larger buffer is fine).
        matrix: ``"bt601"``, ``"bt709"`` or ``"bt2020"``.
        full_range: True for full range (0-255), False for limited (Y 16-235, UV 16-240).
        out_dtype: float16, bfloat16 or float32.
        downsample: ratio r in (0, 1]; also returns ``rgb_small [3, *small_size(H, W, r)]``
            (``(floor(H*r), floor(W*r))``)
            equal to ``F.interpolate(rgb[None], scale_factor=r, mode="bilinear",
            align_corners=False, recompute_scale_factor=False)[0]``, written in the same pass.
        height, width: the picture size when the frame is pitched or the height ambiguous
            (default: ``H = floor(2 * rows / 3)``, ``W = P``).
        out, out_small: optional destinations of those shapes and ``out_dtype`` (any strides).
        impl: ``"triton"``, ``"reference"``, ``"native"`` or None: the dispatch rule of
            :mod:`nvpipe.kernels`.

    Returns:
        ``rgb [3, H, W]``, or ``(rgb, rgb_small)`` when ``downsample`` is given.
    """
    return _convert(frame, (torch.uint8,), 255.0, 255.0, matrix, full_range, out_dtype, downsample,
                    height, width, out, out_small, impl)


def nv12_to_rgb_reference(frame: torch.Tensor, **kwargs) -> Tensors:
    """Plain PyTorch :func:`nv12_to_rgb` (same arguments, no ``impl``): the CPU path."""
    kwargs = _with_defaults(kwargs)
    return _convert(frame, (torch.uint8,), 255.0, 255.0, impl="reference", **kwargs)


def p016_to_rgb(
    frame: torch.Tensor,
    *,
    bit_depth: int = 10,
    matrix: str = "bt709",
    full_range: bool = False,
    out_dtype: torch.dtype = torch.float16,
    downsample: Optional[float] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    out: Optional[torch.Tensor] = None,
    out_small: Optional[torch.Tensor] = None,
    impl: Optional[str] = None,
) -> Tensors:
    """P016 frame (10/12-bit 4:2:0, MSB-aligned) -> planar RGB in [0, 1].

    Args:
        frame: uint16 (or int16 holding the same bits) ``(H + ceil(H/2), P)``, the NV12
            layout with each sample ``v`` stored as ``v << (16 - bit_depth)``.
        bit_depth: 10 or 12 (16 also accepted); only full range depends on it
            (1.0 is ``(2**bit_depth - 1) << (16 - bit_depth)``); limited range is exact
            at any depth because MSB alignment scales the 8-bit levels 16/219/128/224 by 256.
        Other arguments and the return value as :func:`nv12_to_rgb`.
    """
    full_scale = _p016_full_scale(bit_depth)
    return _convert(frame, (torch.uint16, torch.int16), 65535.0, full_scale, matrix, full_range, out_dtype,
                    downsample, height, width, out, out_small, impl)


def p016_to_rgb_reference(frame: torch.Tensor, *, bit_depth: int = 10, **kwargs) -> Tensors:
    """Plain PyTorch :func:`p016_to_rgb` (same arguments, no ``impl``): the CPU path."""
    kwargs = _with_defaults(kwargs)
    if frame.dtype == torch.int16:
        frame = frame.view(torch.uint16)
    return _convert(frame, (torch.uint16,), 65535.0, _p016_full_scale(bit_depth), impl="reference",
                    **kwargs)


def _p016_full_scale(bit_depth: int) -> float:
    if bit_depth not in (10, 12, 16):
        raise KernelError(f"bit_depth must be 10, 12 or 16, got {bit_depth}")
    return float(((1 << bit_depth) - 1) << (16 - bit_depth))


_DEFAULTS = dict(matrix="bt709", full_range=False, out_dtype=torch.float16, downsample=None, height=None,
                 width=None, out=None, out_small=None)


def _with_defaults(kwargs: dict) -> dict:
    unknown = set(kwargs) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    return {**_DEFAULTS, **kwargs}
