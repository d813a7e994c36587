"""MobileNetV3-Large encoder, dilated at the last stage (output stride 16), with RVM's taps.

Layout and keys follow torchvision's ``features.N`` numbering (see rvm-architecture.md).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv_bn

# Every BatchNorm in this backbone uses eps 1e-3 (1e-5 elsewhere in the network).
BACKBONE_BN_EPS = 1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# features.1..15: (in, kernel, expanded, out, squeeze-excite, activation, stride, dilation)
INVERTED_RESIDUALS = [
    (16, 3, 16, 16, False, "RE", 1, 1),
    (16, 3, 64, 24, False, "RE", 2, 1),
    (24, 3, 72, 24, False, "RE", 1, 1),
    (24, 5, 72, 40, True, "RE", 2, 1),
    (40, 5, 120, 40, True, "RE", 1, 1),
    (40, 5, 120, 40, True, "RE", 1, 1),
    (40, 3, 240, 80, False, "HS", 2, 1),
    (80, 3, 200, 80, False, "HS", 1, 1),
    (80, 3, 184, 80, False, "HS", 1, 1),
    (80, 3, 184, 80, False, "HS", 1, 1),
    (80, 3, 480, 112, True, "HS", 1, 1),
    (112, 3, 672, 112, True, "HS", 1, 1),
    (112, 5, 672, 160, True, "HS", 2, 2),
    (160, 5, 960, 160, True, "HS", 1, 2),
    (160, 5, 960, 160, True, "HS", 1, 2),
]
# Taps after features.1 (16 ch, 1/2), .3 (24 ch, 1/4), .6 (40 ch, 1/8), .16 (960 ch, 1/16).
TAP_INDICES = (1, 3, 6, 16)
FEATURE_CHANNELS = (16, 24, 40, 960)


def _activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "RE" else nn.Hardswish(inplace=True)


def squeeze_channels(expanded: int, divisor: int = 8) -> int:
    """``expanded // 4`` rounded to the nearest multiple of 8, never more than 10% below it."""
    value = expanded // 4
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class SqueezeExcitation(nn.Module):
    """``x * hardsigmoid(fc2(relu(fc1(mean_hw(x)))))``; fc1/fc2 are 1x1 convs with bias."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.fc2(F.relu(self.fc1(scale)))
        return x * F.hardsigmoid(scale)


class InvertedResidual(nn.Module):
    """Expand 1x1 (when expanded != in) -> depthwise kxk -> (SE) -> project 1x1, (+ input)."""

    def __init__(self, in_ch, kernel, expanded, out_ch, use_se, act, stride, dilation, folded):
        super().__init__()
        stride = 1 if dilation > 1 else stride  # dilation replaces the stride
        bn = dict(eps=BACKBONE_BN_EPS, folded=folded)
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(nn.Sequential(*conv_bn(in_ch, expanded, 1, activation=_activation(act), **bn)))
        layers.append(
            nn.Sequential(
                *conv_bn(
                    expanded, expanded, kernel, stride=stride, dilation=dilation,
                    groups=expanded, activation=_activation(act), **bn,
                )
            )
        )
        if use_se:
            layers.append(SqueezeExcitation(expanded, squeeze_channels(expanded)))
        layers.append(nn.Sequential(*conv_bn(expanded, out_ch, 1, **bn)))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3LargeEncoder(nn.Module):
    """``src [N, 3, h, w]`` in [0, 1] -> taps ``(f1, f2, f3, f4)``.

    Shapes: f1 ``[N, 16, h/2, w/2]``, f2 ``[N, 24, h/4, w/4]``, f3 ``[N, 40, h/8, w/8]``,
    f4 ``[N, 960, h/16, w/16]`` (each halving rounds up). The input is normalised with the
    ImageNet mean/std first.
    """

    feature_channels = FEATURE_CHANNELS

    def __init__(self, folded: bool = False):
        super().__init__()
        bn = dict(eps=BACKBONE_BN_EPS, folded=folded)
        layers: list[nn.Module] = [
            nn.Sequential(*conv_bn(3, 16, 3, stride=2, activation=nn.Hardswish(inplace=True), **bn))
        ]
        layers += [InvertedResidual(*config, folded=folded) for config in INVERTED_RESIDUALS]
        layers.append(nn.Sequential(*conv_bn(160, 960, 1, activation=nn.Hardswish(inplace=True), **bn)))
        self.features = nn.Sequential(*layers)
        self.tap_indices: List[int] = list(TAP_INDICES)  # an attribute: TorchScript reads no globals
        # Not in the state_dict (the official checkpoint has no such tensors).
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (src - self.mean) / self.std
        taps: List[torch.Tensor] = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.tap_indices:
                taps.append(x)
        return taps[0], taps[1], taps[2], taps[3]
