"""``MattingNetwork``: Robust Video Matting, MobileNetV3 or ResNet50 encoder."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .errors import WeightsError
from .decoder import LRASPP, RecurrentDecoder
from .mobilenetv3 import MobileNetV3LargeEncoder
from .refiner import DeepGuidedFilterRefiner, downsample, refine
from .resnet import ResNet50Encoder

VARIANTS = ("mobilenetv3", "resnet50")
# variant: (encoder, aspp channels, decoder channels decode3..decode0)
_CONFIG = {
    "mobilenetv3": (MobileNetV3LargeEncoder, 128, (80, 40, 32, 16)),
    "resnet50": (ResNet50Encoder, 256, (128, 64, 32, 16)),
}
# Recurrent state channels (r1, r2, r3, r4) at 1/2, 1/4, 1/8, 1/16 of the low-res input.
STATE_CHANNELS = {"mobilenetv3": (16, 20, 40, 64), "resnet50": (16, 32, 64, 128)}


def _value_error(message: str, value) -> None:
    """ValueError naming ``value``; eager mode only (TorchScript cannot format it)."""
    raise ValueError(f"{message} {value}")


class Projection(nn.Module):
    """1x1 conv with bias (key ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MattingNetwork(nn.Module):
    """Robust Video Matting (Lin et al., WACV 2022), state_dict key for key the official one.

    Args:
        variant: ``"mobilenetv3"`` or ``"resnet50"``.
        folded: build every conv+BatchNorm pair as one conv with bias (``nn.Identity`` in the
            BatchNorm's place), the layout of BN-folded weights such as the official ONNX
            exports. ``rvm.fuse`` turns an unfolded network into this layout.

    Recurrent states ``r1..r4`` are ``[B, C, h, w]`` with C = (16, 20, 40, 64) for
    MobileNetV3 and (16, 32, 64, 128) for ResNet50 at 1/2, 1/4, 1/8, 1/16 of the
    downsampled size (each halving rounds up, e.g. 270 -> 135 -> 68 -> 34 -> 17). None
    means zeros (the first frame); anything broadcastable to the shape is accepted.
    """

    def __init__(self, variant: str = "mobilenetv3", *, folded: bool = False):
        super().__init__()
        if variant not in _CONFIG:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        encoder, aspp_channels, decoder_channels = _CONFIG[variant]
        self.variant = variant
        self.folded = folded
        # Set by rvm.optimize_for_cpu (weights converted too): inputs go channels_last.
        self.channels_last = False
        self.backbone = encoder(folded=folded)
        self.aspp = LRASPP(self.backbone.feature_channels[3], aspp_channels, folded=folded)
        feature_channels = (*self.backbone.feature_channels[:3], aspp_channels)
        self.decoder = RecurrentDecoder(feature_channels, decoder_channels, folded=folded)
        self.project_mat = Projection(decoder_channels[3], 4)
        self.project_seg = Projection(decoder_channels[3], 1)  # segmentation head
        # False where the weights came without project_seg (ONNX exports, zeroed heads).
        self.has_segmentation_head = True
        self.refiner = DeepGuidedFilterRefiner(decoder_channels[3], folded=folded)

    @torch.jit.export
    def coefficients(
        self,
        src_sm: torch.Tensor,
        r1: Optional[torch.Tensor] = None,
        r2: Optional[torch.Tensor] = None,
        r3: Optional[torch.Tensor] = None,
        r4: Optional[torch.Tensor] = None,
        use_refiner: bool = True,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The network on the low-resolution input, stopping before the full-size tail.

        Args:
            src_sm: ``[B, 3, h, w]`` or ``[B, T, 3, h, w]``, RGB in [0, 1], the downsampled
                frames (``rvm.downsample(src, ratio)``).
            r1..r4: recurrent states (see the class docstring), None on the first frame.
            use_refiner: pass ``downsample_ratio != 1``. False is the model's definition at
                ratio exactly 1, where no refiner runs: then ``coeff_a = 0`` and
                ``coeff_b = cat[fgr_residual, pha]``.

        Returns:
            ``(coeff_a, coeff_b, r1, r2, r3, r4)``: coefficients ``[B, 4, h, w]`` (or
            ``[B, T, 4, h, w]``), channels (R, G, B, alpha), such that
            ``rvm.refine(coeff_a, coeff_b, src)`` is the network's ``(fgr, pha)``; the
            states after the last frame, ``[B, C, h/2^k, w/2^k]``.
        """
        frames, hid, r1, r2, r3, r4 = self._decode(src_sm, r1, r2, r3, r4)
        projected = self.project_mat(hid)  # [N, 4, h, w]: fgr_residual (3), pha (1)
        if use_refiner:
            fgr_residual, pha = projected.split([3, 1], dim=1)
            coeff_a, coeff_b = self.refiner.coefficients(frames, fgr_residual, pha, hid)
        else:
            coeff_a, coeff_b = torch.zeros_like(projected), projected
        if self.channels_last:  # small tensors; the full-size tail is fastest on NCHW
            coeff_a, coeff_b = coeff_a.contiguous(), coeff_b.contiguous()
        if src_sm.ndim == 5:
            coeff_a = coeff_a.unflatten(0, [src_sm.shape[0], src_sm.shape[1]])
            coeff_b = coeff_b.unflatten(0, [src_sm.shape[0], src_sm.shape[1]])
        return coeff_a, coeff_b, r1, r2, r3, r4

    def _decode(
        self,
        src_sm: torch.Tensor,
        r1: Optional[torch.Tensor],
        r2: Optional[torch.Tensor],
        r3: Optional[torch.Tensor],
        r4: Optional[torch.Tensor],
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Encoder and decoder: ``(frames [N, 3, h, w], hid [N, 16, h, w], r1..r4)``."""
        if src_sm.ndim not in (4, 5) or src_sm.shape[-3] != 3:
            if not torch.jit.is_scripting():
                _value_error("expected [B,3,h,w] or [B,T,3,h,w] RGB, got", tuple(src_sm.shape))
            raise ValueError("expected [B,3,h,w] or [B,T,3,h,w] RGB")
        chunked = src_sm.ndim == 5
        steps = src_sm.shape[1] if chunked else 1
        frames = src_sm.flatten(0, 1) if chunked else src_sm
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        f1, f2, f3, f4 = self.backbone(frames)
        f4 = self.aspp(f4)
        hid, r1, r2, r3, r4 = self.decoder(frames, f1, f2, f3, f4, r1, r2, r3, r4, steps)
        return frames, hid, r1, r2, r3, r4

    def forward(
        self,
        src: torch.Tensor,
        r1: Optional[torch.Tensor] = None,
        r2: Optional[torch.Tensor] = None,
        r3: Optional[torch.Tensor] = None,
        r4: Optional[torch.Tensor] = None,
        downsample_ratio: float = 1.0,
        segmentation_pass: bool = False,
    ) -> List[Tensor]:
        """Matte frames, with the arguments and results of the official ``MattingNetwork``.

        Args:
            src: ``[B, 3, H, W]`` or ``[B, T, 3, H, W]`` (a chunk of T frames), RGB in [0, 1].
            r1..r4: recurrent states, None on the first frame.
            downsample_ratio: in (0, 1]; the network runs at ``floor(H * ratio)``. At exactly
                1 the refiner is skipped (the official model's definition).
            segmentation_pass: return the segmentation head's logits instead of the matte.
                Needs weights that carry the head (an official ``.pth``); the released ONNX
                exports have none, and asking then raises ``WeightsError``.

        Returns:
            ``[fgr, pha, r1, r2, r3, r4]``: ``fgr`` ``[B(, T), 3, H, W]`` and ``pha``
            ``[B(, T), 1, H, W]`` in [0, 1]; the states after the last frame (rank 4). With
            ``segmentation_pass``: ``[seg, r1, r2, r3, r4]``, ``seg`` ``[B(, T), 1, h, w]``
            logits at the downsampled size.
        """
        ratio = float(downsample_ratio)
        if not (ratio > 0 and ratio <= 1):
            if not torch.jit.is_scripting():
                _value_error("downsample_ratio must be in (0, 1], got", ratio)
            raise ValueError("downsample_ratio must be in (0, 1]")
        src_sm = downsample(src, ratio)
        if segmentation_pass:
            if not self.has_segmentation_head:
                raise WeightsError(  # one literal: TorchScript reads no module globals
                    "segmentation_pass=True needs weights with a segmentation head; these have "
                    "none (the released ONNX exports carry no project_seg): load an official "
                    ".pth such as rvm_mobilenetv3.pth")
            _, hid, r1, r2, r3, r4 = self._decode(src_sm, r1, r2, r3, r4)
            seg = self.project_seg(hid)
            if src_sm.ndim == 5:
                seg = seg.unflatten(0, [src_sm.shape[0], src_sm.shape[1]])
            return [seg, r1, r2, r3, r4]
        coeff_a, coeff_b, r1, r2, r3, r4 = self.coefficients(src_sm, r1, r2, r3, r4, ratio != 1)
        fgr, pha = refine(coeff_a, coeff_b, src)
        return [fgr, pha, r1, r2, r3, r4]
