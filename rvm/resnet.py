"""ResNet50 encoder with layer4 dilated instead of strided (output stride 16), RVM's taps.

Keys follow torchvision's layout (``conv1``, ``bn1``, ``layerN.M.convK/bnK/downsample``);
there is no ``fc``. No input normalisation in this encoder.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .blocks import batch_norm

LAYER_BLOCKS = (3, 4, 6, 3)
FEATURE_CHANNELS = (64, 256, 512, 2048)
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4 channels), each + BN; ReLU; residual add.

    Each ``convK`` is registered right before its ``bnK`` (``fuse`` relies on that order).
    """

    def __init__(self, in_ch: int, width: int, stride: int, dilation: int, folded: bool):
        super().__init__()
        out_ch = width * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=folded)
        self.bn1 = batch_norm(width, folded=folded)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=folded
        )
        self.bn2 = batch_norm(width, folded=folded)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=folded)
        self.bn3 = batch_norm(out_ch, folded=folded)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=folded),
                batch_norm(out_ch, folded=folded),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Encoder(nn.Module):
    """``src [N, 3, h, w]`` in [0, 1] -> taps ``(f1, f2, f3, f4)``.

    Shapes: f1 ``[N, 64, h/2, w/2]`` (conv1+bn1+relu), f2 ``[N, 256, h/4, w/4]`` (layer1,
    after the max-pool), f3 ``[N, 512, h/8, w/8]`` (layer2), f4 ``[N, 2048, h/16, w/16]``
    (layer4, dilated). Halvings round up.
    """

    feature_channels = FEATURE_CHANNELS

    def __init__(self, folded: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=folded)
        self.bn1 = batch_norm(64, folded=folded)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch, dilation = 64, 1
        for index, (blocks, width) in enumerate(zip(LAYER_BLOCKS, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            first_dilation = dilation
            if index == 3:  # layer4: dilation 2 instead of stride 2
                dilation, stride = dilation * stride, 1
            layer = [Bottleneck(in_ch, width, stride, first_dilation, folded)]
            in_ch = width * EXPANSION
            layer += [Bottleneck(in_ch, width, 1, dilation, folded) for _ in range(blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))

    def forward(self, src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.relu(self.bn1(self.conv1(src)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer4(self.layer3(f3))
        return f1, f2, f3, f4
