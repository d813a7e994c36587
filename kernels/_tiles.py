"""Pieces the kernels share (private): the tiles' PyTorch twins, the tail's checks. The
Triton tiles themselves are in ``kernels._triton_tiles`` (imported only where one launches).

- ``bilerp`` (Triton): the bilinear blend of four taps (kernel 1's downsample, the tail's
  upsample).
- ``fgr_pha_tile`` (Triton) / ``fgr_pha_reference``: RVM's tail, fgr and pha of a tile / a
  frame.
- ``compose_tile`` (Triton) / ``compose_reference``: the chosen output (composite,
  foreground, ...).
- ``TailArgs``: the validated, batched arguments of the tail (kernels.tail, kernels.nv12,
  kernels.native); ``background_args``; ``tail_block_shape``: the tiles of both tails.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from ._common import KernelError, check_float_dtype, interpreting

OUTPUT_CHANNELS = {"composite": 3, "foreground": 3, "alpha": 1, "rgba": 4, "rgba_premultiplied": 4}

Background = Union[None, Sequence[float], torch.Tensor]


# --------------------------------------------------------------------------- checks


class TailArgs:
    """Validated, batched ([N, ...]) views of the tail's inputs."""

    def __init__(self, coeff_a, coeff_b, src, output, background, out, out_dtype):
        if output not in OUTPUT_CHANNELS:
            raise KernelError(f"output must be one of {tuple(OUTPUT_CHANNELS)}, got {output!r}")
        if src.dim() not in (3, 4) or src.shape[-3] != 3:
            raise KernelError(f"src must be [3,H,W] or [N,3,H,W], got {tuple(src.shape)}")
        self.batched = src.dim() == 4
        want = 4 if self.batched else 3
        for name, coeff in (("coeff_a", coeff_a), ("coeff_b", coeff_b)):
            if coeff.dim() != want or coeff.shape[-3] != 4 or (self.batched and coeff.shape[0] != src.shape[0]):
                raise KernelError(f"{name} must be [{'N,' if self.batched else ''}4,h,w] to match src "
                                  f"{tuple(src.shape)}, got {tuple(coeff.shape)}")
            check_float_dtype(coeff.dtype, name)
            if coeff.device != src.device:
                raise KernelError(f"{name} is on {coeff.device} but src is on {src.device}")
        if coeff_a.shape != coeff_b.shape:
            raise KernelError(f"coeff_a {tuple(coeff_a.shape)} and coeff_b {tuple(coeff_b.shape)} differ in shape")
        check_float_dtype(src.dtype, "src")
        self.src = src if self.batched else src[None]
        self.coeff_a = coeff_a if self.batched else coeff_a[None]
        self.coeff_b = coeff_b if self.batched else coeff_b[None]
        self.n, _, self.height, self.width = self.src.shape
        self.output = output
        self.channels = OUTPUT_CHANNELS[output]

        self.colour = (0.0, 0.0, 0.0)
        self.background = None  # [N or 1, 3, H, W] tensor, uint8 or float
        if output == "composite":
            if background is None:
                raise KernelError("output='composite' needs a background: an (r, g, b) colour or a [3,H,W] tensor")
            if isinstance(background, torch.Tensor):
                bg = background if background.dim() == 4 else background[None]
                if bg.dim() != 4 or tuple(bg.shape[1:]) != (3, self.height, self.width) or bg.shape[0] not in (1, self.n):
                    raise KernelError(f"background must be [3,{self.height},{self.width}] (or batched), "
                                      f"got {tuple(background.shape)}")
                if bg.device != src.device:
                    raise KernelError(f"background is on {bg.device} but src is on {src.device}")
                check_float_dtype(bg.dtype, "background", allow_uint8=True)
                self.background = bg
            else:
                colour = tuple(float(c) for c in background)
                if len(colour) != 3:
                    raise KernelError(f"a background colour needs 3 values (r, g, b) in [0, 1], got {background!r}")
                self.colour = colour

        if out is not None:
            out_dtype = out.dtype
        elif out_dtype is None:
            out_dtype = src.dtype
        check_float_dtype(out_dtype, "out_dtype", allow_uint8=True)
        self.out_dtype = out_dtype
        shape = (self.n, self.channels, self.height, self.width)
        if out is not None:
            out_b = out if self.batched else out[None]
            if tuple(out_b.shape) != shape:
                raise KernelError(f"out must have shape {shape[0 if self.batched else 1:]}, got {tuple(out.shape)}")
            if out.device != src.device:
                raise KernelError(f"out is on {out.device} but src is on {src.device}")
        self.out = out

    @property
    def coeff_vec4(self) -> bool:
        """True when A and b are channels_last with 4-element-aligned pixels (what the network
        hands over): each coefficient tap may then load its 4 channels as one 8-byte (FP16)
        or 16-byte (FP32) vector. Triton cannot see this from the strides alone (it proves
        alignment only from multiples of 16), so the kernels are told (COEFF_VEC4)."""
        for coeff in (self.coeff_a, self.coeff_b):
            n_stride, c_stride, h_stride, w_stride = coeff.stride()
            if c_stride != 1 or w_stride != 4 or h_stride % 4 or (coeff.shape[0] > 1 and n_stride % 4):
                return False
            if coeff.data_ptr() % (4 * coeff.element_size()):
                return False
        return True

    def allocate(self) -> torch.Tensor:
        if self.out is not None:
            return self.out if self.batched else self.out[None]
        return torch.empty((self.n, self.channels, self.height, self.width), dtype=self.out_dtype,
                           device=self.src.device)

    def unbatch(self, result: torch.Tensor) -> torch.Tensor:
        if self.out is not None:
            return self.out
        return result if self.batched else result[0]


# ----------------------------------------------------------------------- reference


def fgr_pha_reference(args: TailArgs) -> torch.Tensor:
    """float32 [N, 4, H, W]: clamped fgr (channels 0-2) and pha (channel 3)."""
    src = args.src.to(torch.float32)
    # [N, 8, h, w]: a fresh tensor (small), so the in-place steps below never touch inputs.
    coeffs = torch.cat((args.coeff_a, args.coeff_b), dim=1).to(torch.float32)
    if coeffs.shape[-2:] != src.shape[-2:]:
        coeffs = F.interpolate(coeffs, size=(args.height, args.width), mode="bilinear", align_corners=False)
    up_a, up_b = coeffs[:, :4], coeffs[:, 4:]
    # In place on the upsampled buffer: channels 0-2 become fgr, channel 3 pha.
    up_a[:, :3].mul_(src).add_(up_b[:, :3]).add_(src)
    up_a[:, 3:].mul_(src.mean(dim=1, keepdim=True)).add_(up_b[:, 3:])
    return up_a.clamp_(0.0, 1.0)


def compose_reference(fgr_pha: torch.Tensor, args: TailArgs) -> torch.Tensor:
    """float32 [N, C, H, W] in [0, 1] for ``args.output``; may reuse ``fgr_pha``'s memory."""
    fgr, pha = fgr_pha[:, :3], fgr_pha[:, 3:]
    kind = args.output
    if kind == "foreground":
        return fgr
    if kind == "alpha":
        return pha
    if kind == "rgba":
        return fgr_pha
    if kind == "rgba_premultiplied":
        fgr.mul_(pha)
        return fgr_pha
    # composite = fgr * pha + bg * (1 - pha) = bg + pha * (fgr - bg)
    if args.background is None:
        bg = torch.tensor(args.colour, dtype=torch.float32, device=fgr.device).view(1, 3, 1, 1)
    elif args.background.dtype == torch.uint8:
        bg = args.background.to(torch.float32).mul_(1.0 / 255.0)
    else:
        bg = args.background.to(torch.float32)
    return fgr.sub_(bg).mul_(pha).add_(bg)


def tail_block_shape():
    """(BLOCK_H, BLOCK_W, num_warps) of the tail kernels (``kernels.tail``, ``kernels.nv12``).

    GPU: 16 x 64 pixels over 8 warps (256 threads, 4 pixels each). A warp covers 2 rows of
    64 pixels: 128-byte FP16 row segments of src and 192-256 contiguous bytes of an
    interleaved uint8 RGB(A) output. A tile spans about 4 x 16 coefficient texels at ratio
    1/4, so after the first touch the A/b gathers hit L1; with channels_last A/b each tap is
    one 8-byte load of 4 FP16 channels (COEFF_VEC4). Compiled for sm_90 by Triton 3.9
    (``bench/kernel_compile.py``): 55-72 registers, no spills, 24-32 resident warps per SM;
    8 x 64 x 8 would use 40-44 (40-48 warps), 16 x 64 x 4 128 (16 warps), and 32 x 64 x 8
    spills. Not yet timed on a GPU: ``NVPIPE_TAIL_BLOCK="8,64,8"`` overrides it (even sizes,
    powers of two) and ``bench/kernels.py --tail-blocks`` sweeps it. The interpreter gets
    larger tiles, since it runs programs one after another.
    """
    override = os.environ.get("NVPIPE_TAIL_BLOCK")
    if override:
        block_h, block_w, warps = (int(x) for x in override.split(","))
        return block_h, block_w, warps
    return (32, 64, 4) if interpreting() else (16, 64, 8)


def background_args(args: TailArgs, fallback: torch.Tensor):
    if args.background is None:
        return (fallback, 0, 0, 0, 0), False, False
    bg = args.background
    batch_stride = bg.stride(0) if bg.shape[0] > 1 else 0
    return (bg, batch_stride, *bg.stride()[1:]), True, bg.dtype == torch.uint8
