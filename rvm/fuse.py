"""Fold BatchNorm into the convolution before it, for inference."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing ``bn(conv(x))`` in eval mode.

    ``scale = gamma / sqrt(running_var + eps)``; ``w' = w * scale``;
    ``b' = beta + (b - running_mean) * scale``. Computed in float64, stored in the conv's dtype.
    """
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )
    fused.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
    fused.bias.copy_(bn.bias.double() + (bias - bn.running_mean.double()) * scale)
    fused.train(conv.training)
    return fused


def fuse(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d into the Conv2d registered right before it, in place.

    Every conv+BN pair in this package is registered as consecutive children (``[conv, bn,
    act]`` Sequentials; ``convK`` then ``bnK`` in ResNet blocks), so the pair is found by
    registration order. The conv becomes one with a bias, the BatchNorm an ``nn.Identity``:
    the result has the layout of ``MattingNetwork(variant, folded=True)``. Only valid for
    inference (eval-mode BatchNorm statistics). Returns ``module``. A BatchNorm with no conv
    before it raises ``ValueError``.
    """
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(bn, nn.BatchNorm2d):
                if not isinstance(conv, nn.Conv2d) or conv.out_channels != bn.num_features:
                    raise ValueError(f"BatchNorm {bn_name!r} does not follow a matching conv")
                setattr(parent, conv_name, fold_conv_bn(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    if any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
        raise ValueError("a BatchNorm2d was left unfolded (not preceded by its conv)")
    if hasattr(module, "folded"):
        module.folded = True
    return module
