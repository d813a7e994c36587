"""Small building blocks shared by the encoders, the decoder and the refiner.

Every convolution followed by BatchNorm is built by :func:`conv_bn`: either as the official
pair (conv without bias, BatchNorm) or, with ``folded=True``, as one conv with a bias and an
``nn.Identity`` where the BatchNorm sat, so indices inside Sequentials (and therefore the
state_dict keys of the remaining layers) stay those of the official model.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    eps: float = 1e-5,
    activation: Optional[nn.Module] = None,
    folded: bool = False,
) -> list[nn.Module]:
    """``[conv, BatchNorm | Identity, (activation)]`` with "same" padding ``(k - 1) // 2 * dilation``.

    With ``folded`` the conv carries a bias and the BatchNorm slot is an ``nn.Identity``.
    """
    padding = (kernel_size - 1) // 2 * dilation
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=folded
    )
    norm = nn.Identity() if folded else nn.BatchNorm2d(out_channels, eps=eps)
    return [conv, norm] + ([activation] if activation is not None else [])


def batch_norm(channels: int, *, eps: float = 1e-5, folded: bool = False) -> nn.Module:
    """A BatchNorm2d, or an ``nn.Identity`` in a folded network (the conv before it has a bias)."""
    return nn.Identity() if folded else nn.BatchNorm2d(channels, eps=eps)


class ConvGRU(nn.Module):
    """Convolutional GRU over ``c`` channels (keys ``ih.0``, ``hh.0``).

    ``r, z = sigmoid(conv3x3(cat[x, h]))``; ``c~ = tanh(conv3x3(cat[x, r * h]))``;
    ``h' = (1 - z) * h + z * c~``; the output is ``h'``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(channels * 2, channels * 2, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(channels * 2, channels, 3, padding=1), nn.Tanh())

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One time step. ``x``, ``h``: ``[B, c, h, w]`` -> ``h'`` ``[B, c, h, w]``."""
        r, z = self.ih(torch.cat([x, h], dim=1)).split(self.channels, dim=1)
        candidate = self.hh(torch.cat([x, r * h], dim=1))
        return (1 - z) * h + z * candidate

    def forward(
        self, x: torch.Tensor, h: Optional[torch.Tensor], steps: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the GRU over time.

        Args:
            x: ``[B * steps, c, h, w]``, frames of each batch item consecutive (b-major).
            h: the state ``[B, c, h, w]``; None means zeros. Anything broadcastable to that
                shape is accepted (the official ONNX usage feeds zeros ``[1, 1, 1, 1]``).
            steps: T, the number of frames per batch item.

        Returns:
            ``(out, h_last)``: ``out`` ``[B * steps, c, h, w]`` the state after each frame,
            ``h_last`` ``[B, c, h, w]`` the state after the last frame.
        """
        batch = x.shape[0] // steps
        state_shape = [batch, self.channels, x.shape[2], x.shape[3]]
        if h is None:
            state = x.new_zeros(state_shape)
        else:
            if not torch.jit.is_scripting():  # a readable error in eager mode
                _check_state(h, state_shape)
            state = h.to(x.dtype).expand(state_shape)
        if steps == 1:
            state = self.step(x, state)
            return state, state
        frames = x.unflatten(0, [batch, steps])
        outputs: List[torch.Tensor] = []
        for t in range(steps):
            state = self.step(frames[:, t], state)
            outputs.append(state)
        return torch.stack(outputs, dim=1).flatten(0, 1), state


def _check_state(h: torch.Tensor, state_shape: List[int]) -> None:
    """ValueError unless ``h`` broadcasts to ``state_shape`` (eager mode only)."""
    fits = h.ndim <= len(state_shape) and all(
        a in (1, b) for a, b in zip(reversed(tuple(h.shape)), reversed(state_shape)))
    if not fits:
        raise ValueError(
            f"recurrent state of shape {tuple(h.shape)} does not fit {tuple(state_shape)}"
            " (the input size changed? pass None to start over)"
        )
