"""LR-ASPP and the recurrent decoder.

Frames of a chunk travel as a batch ``[B * T, C, h, w]`` (b-major); only the ConvGRUs step
over T. Recurrent states are ``[B, C, h, w]``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ConvGRU, conv_bn


class LRASPP(nn.Module):
    """``relu(bn(conv1x1(x))) * sigmoid(conv1x1(mean_hw(x)))``: ``[N, in, h, w] -> [N, out, h, w]``."""

    def __init__(self, in_channels: int, out_channels: int, folded: bool = False):
        super().__init__()
        self.aspp1 = nn.Sequential(
            *conv_bn(in_channels, out_channels, 1, activation=nn.ReLU(inplace=True), folded=folded)
        )
        self.aspp2 = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp1(x) * self.aspp2(x)


class BottleneckBlock(nn.Module):
    """decode4: ConvGRU on the second half of the channels, the first half passes through."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: torch.Tensor, r: Optional[torch.Tensor], steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
        a, b = x.split(self.channels // 2, dim=1)
        b, r = self.gru(b, r, steps)
        return torch.cat([a, b], dim=1), r


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """2x bilinear (align_corners=False), cropped to ``like``'s height and width."""
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return x[:, :, : like.shape[2], : like.shape[3]]


class UpsamplingBlock(nn.Module):
    """decode3..1: up 2x, cat[x, f, s], 3x3 conv+BN+ReLU, ConvGRU on the second half."""

    def __init__(self, in_ch: int, skip_ch: int, src_ch: int, out_ch: int, folded: bool = False):
        super().__init__()
        self.out_channels = out_ch
        self.conv = nn.Sequential(
            *conv_bn(in_ch + skip_ch + src_ch, out_ch, 3, activation=nn.ReLU(inplace=True), folded=folded)
        )
        self.gru = ConvGRU(out_ch // 2)

    def forward(self, x: torch.Tensor, f: torch.Tensor, s: torch.Tensor, r: Optional[torch.Tensor],
                steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(torch.cat([_upsample_to(x, s), f, s], dim=1))
        a, b = x.split(self.out_channels // 2, dim=1)
        b, r = self.gru(b, r, steps)
        return torch.cat([a, b], dim=1), r


class OutputBlock(nn.Module):
    """decode0: up 2x, cat[x, src_sm], two 3x3 conv+BN+ReLU -> ``hid``."""

    def __init__(self, in_ch: int, src_ch: int, out_ch: int, folded: bool = False):
        super().__init__()
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.conv = nn.Sequential(
            *conv_bn(in_ch + src_ch, out_ch, 3, activation=relu(), folded=folded),
            *conv_bn(out_ch, out_ch, 3, activation=relu(), folded=folded),
        )

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([_upsample_to(x, s), s], dim=1))


class RecurrentDecoder(nn.Module):
    """``(src_sm, f1..f4, r1..r4) -> (hid [N, 16, h, w], r1..r4)``.

    ``feature_channels`` are the channels of (f1, f2, f3, aspp(f4)); ``decoder_channels``
    those of decode3, decode2, decode1, decode0.
    """

    def __init__(self, feature_channels, decoder_channels, folded: bool = False):
        super().__init__()
        self.avgpool = nn.AvgPool2d(2, 2, count_include_pad=False, ceil_mode=True)
        self.decode4 = BottleneckBlock(feature_channels[3])
        self.decode3 = UpsamplingBlock(feature_channels[3], feature_channels[2], 3, decoder_channels[0], folded)
        self.decode2 = UpsamplingBlock(decoder_channels[0], feature_channels[1], 3, decoder_channels[1], folded)
        self.decode1 = UpsamplingBlock(decoder_channels[1], feature_channels[0], 3, decoder_channels[2], folded)
        self.decode0 = OutputBlock(decoder_channels[2], 3, decoder_channels[3], folded)

    def forward(
        self,
        s0: torch.Tensor,
        f1: torch.Tensor,
        f2: torch.Tensor,
        f3: torch.Tensor,
        f4: torch.Tensor,
        r1: Optional[torch.Tensor],
        r2: Optional[torch.Tensor],
        r3: Optional[torch.Tensor],
        r4: Optional[torch.Tensor],
        steps: int,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s1 = self.avgpool(s0)
        s2 = self.avgpool(s1)
        s3 = self.avgpool(s2)
        x4, r4 = self.decode4(f4, r4, steps)
        x3, r3 = self.decode3(x4, f3, s3, r3, steps)
        x2, r2 = self.decode2(x3, f2, s2, r2, steps)
        x1, r1 = self.decode1(x2, f1, s1, r1, steps)
        return self.decode0(x1, s0), r1, r2, r3, r4
