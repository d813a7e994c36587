"""Deep Guided Filter refiner, split in two: low-resolution coefficients and the full-size tail.

``DeepGuidedFilterRefiner.coefficients`` computes the per-pixel linear model ``(A, b)`` at
the low resolution; :func:`refine` applies it at full resolution. The tail is pure
elementwise work on full-size frames (the part a fused kernel replaces).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv_bn


def downsample(src: torch.Tensor, ratio: float) -> torch.Tensor:
    """The network's input resize.

    Args:
        src: ``[B, 3, H, W]`` or ``[B, T, 3, H, W]``, any float dtype.
        ratio: in (0, 1]; exactly 1 returns ``src`` itself.

    Returns:
        ``src_sm`` of the same rank, spatial size ``floor(H * ratio) x floor(W * ratio)``:
        ``interpolate(scale_factor=ratio, mode="bilinear", align_corners=False,
        recompute_scale_factor=False)``.
    """
    if ratio == 1:
        return src
    frames = src.flatten(0, 1) if src.ndim == 5 else src
    small = F.interpolate(
        frames, scale_factor=ratio, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )
    return small.unflatten(0, src.shape[:2]) if src.ndim == 5 else small


def _with_mean(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, h, w] -> [N, 4, h, w]``: the RGB channels and their mean."""
    return torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)


def refine(
    coeff_a: torch.Tensor, coeff_b: torch.Tensor, src: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Apply the guided-filter coefficients at full resolution: the network's output tail.

    ``out = up(A) * cat[src, mean_c(src)] + up(b)`` with
    ``up = F.interpolate(size=(H, W), mode="bilinear", align_corners=False)`` (skipped when
    the coefficients are already ``H x W``: bilinear at scale 1 is the identity);
    ``fgr = clamp(out[:3] + src, 0, 1)``, ``pha = clamp(out[3:], 0, 1)``.

    Args:
        coeff_a, coeff_b: ``[B, 4, h, w]`` or ``[B, T, 4, h, w]``, from
            ``MattingNetwork.coefficients``; channels (R, G, B, alpha).
        src: ``[B, 3, H, W]`` or ``[B, T, 3, H, W]``, RGB in [0, 1], same dtype.

    Returns:
        ``(fgr, pha)``: ``[B(, T), 3, H, W]`` and ``[B(, T), 1, H, W]``, in [0, 1], in
        ``coeff_a``'s dtype; both are views into one ``[N, 8, H, W]`` buffer (not contiguous).
    """
    if coeff_a.shape != coeff_b.shape or coeff_a.ndim != src.ndim or coeff_a.shape[-3] != 4:
        if not torch.jit.is_scripting():  # eager: the shapes in the message
            _refine_shape_error(coeff_a, coeff_b, src)
        raise ValueError("refine expects coefficients [B(,T),4,h,w] matching src's rank")
    lead = src.shape[:-3]
    if src.ndim == 5:
        coeff_a, coeff_b, src = coeff_a.flatten(0, 1), coeff_b.flatten(0, 1), src.flatten(0, 1)
    size = src.shape[-2:]
    # A and b resized in one call, then updated in place: one full-size allocation instead
    # of five (at 1080p on 2 cores: 47 ms instead of 83, bit-identical results).
    # [N, 8, h, w], a new tensor; NCHW (bilinear upsampling of channels_last is ~1.7x slower)
    coeffs = torch.cat([coeff_a, coeff_b], dim=1).contiguous()
    if coeffs.shape[-2:] != size:
        coeffs = F.interpolate(coeffs, size=size, mode="bilinear", align_corners=False)
    # out = A * [src, mean_c(src)] + b, channel groups written in place
    fgr = coeffs[:, :3].mul_(src).add_(coeffs[:, 4:7]).add_(src).clamp_(0, 1)
    pha = coeffs[:, 3:4].mul_(src.mean(dim=1, keepdim=True)).add_(coeffs[:, 7:8]).clamp_(0, 1)
    if len(lead) == 2:
        fgr, pha = fgr.unflatten(0, lead), pha.unflatten(0, lead)
    return fgr, pha


def _refine_shape_error(coeff_a: torch.Tensor, coeff_b: torch.Tensor, src: torch.Tensor) -> None:
    # Outside TorchScript (its frontend rejects f-string conversions even in dead code).
    raise ValueError(
        f"refine expects coefficients [B(,T),4,h,w] matching src's rank: "
        f"{tuple(coeff_a.shape) = }, {tuple(coeff_b.shape) = }, {tuple(src.shape) = }"
    )


class DeepGuidedFilterRefiner(nn.Module):
    """Low-resolution half of the Deep Guided Filter (keys ``box_filter``, ``conv.0..6``)."""

    def __init__(self, hidden_channels: int = 16, folded: bool = False):
        super().__init__()
        # Learned depthwise 3x3 "box" filter: loaded, never assumed to be 1/9.
        self.box_filter = nn.Conv2d(4, 4, 3, padding=1, bias=False, groups=4)
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.conv = nn.Sequential(
            *conv_bn(4 * 2 + hidden_channels, hidden_channels, 1, activation=relu(), folded=folded),
            *conv_bn(hidden_channels, hidden_channels, 1, activation=relu(), folded=folded),
            nn.Conv2d(hidden_channels, 4, 1, bias=True),
        )

    def coefficients(
        self, src_sm: torch.Tensor, fgr_residual: torch.Tensor, pha: torch.Tensor, hid: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(A, b)``, each ``[N, 4, h, w]``, from ``src_sm [N, 3, h, w]``, ``fgr_residual
        [N, 3, h, w]``, ``pha [N, 1, h, w]`` and the decoder's ``hid [N, 16, h, w]``."""
        base_x = _with_mean(src_sm)
        base_y = torch.cat([fgr_residual, pha], dim=1)
        mean_x = self.box_filter(base_x)
        mean_y = self.box_filter(base_y)
        cov_xy = self.box_filter(base_x * base_y) - mean_x * mean_y
        var_x = self.box_filter(base_x * base_x) - mean_x * mean_x
        coeff_a = self.conv(torch.cat([cov_xy, var_x, hid], dim=1))
        coeff_b = mean_y - coeff_a * mean_x
        return coeff_a, coeff_b
