"""Convert stage: a decoded frame -> the network's full- and low-resolution RGB inputs."""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from nvpipe.engine.buffers import BufferRing
from nvpipe.frames import DecodedFrame, StreamInfo


def downsample(rgb: torch.Tensor, ratio: float) -> torch.Tensor:
    """The network's stage-0 downsample. rgb ``[..., 3, H, W]`` -> ``[..., 3, floor(H*r), floor(W*r)]``."""
    if ratio == 1:
        return rgb
    lead = rgb.shape[:-3]
    flat = rgb.reshape(-1, *rgb.shape[-3:])
    small = F.interpolate(flat, scale_factor=ratio, mode="bilinear", align_corners=False,
                          recompute_scale_factor=False)
    return small.reshape(*lead, *small.shape[-3:])


class Converter:
    """``DecodedFrame`` -> ``(src [3,H,W], src_sm [3,h,w])`` in [0, 1] on the job's device.

    NV12/P016 frames go through ``nvpipe.kernels`` (Triton on CUDA, the PyTorch reference
    on the CPU), which writes the downsampled copy in the same pass when no rotation or
    resize sits between the two. Rotation (clockwise degrees) and ``resize`` ((W, H)) are
    applied to the full frame before the downsample, so the network sees what the viewer sees.
    """

    def __init__(self, info: StreamInfo, *, ratio: float, device: torch.device | str,
                 dtype: torch.dtype, resize: Optional[tuple[int, int]] = None,
                 ring_size: int = 8):
        """``ring_size``: how many converted frames may be alive at once downstream
        (queued, held by the network); their CPU buffers are reused after that."""
        self.info = info
        self.ratio = float(ratio)
        self.device = torch.device(device)
        self.dtype = dtype
        self.resize = resize
        self.rotation = info.rotation % 360
        self._ring = BufferRing(ring_size)

    def warm_up(self) -> None:
        """Converts one black frame of the input's size and format, so the kernels compile
        (Triton, on CUDA) before the decode thread needs them."""
        from nvpipe.frames import DecodedFrame

        high = self.info.bit_depth > 8
        width, height = self.info.width, self.info.height
        data = torch.zeros((height + (height + 1) // 2, 2 * ((width + 1) // 2)),
                           dtype=torch.uint16 if high else torch.uint8, device=self.device)
        self(DecodedFrame(data=data, pix_fmt="p016" if high else "nv12", width=width,
                          height=height, color=self.info.color, pts=0,
                          time_base=self.info.time_base, index=0))

    def _fused_downsample(self) -> bool:
        return self.rotation == 0 and self.resize is None and self.ratio != 1

    def __call__(self, frame: DecodedFrame) -> tuple[torch.Tensor, torch.Tensor]:
        from nvpipe import kernels

        data = frame.data
        if data.device != self.device:
            data = data.to(self.device, non_blocking=True)
        small = None
        if frame.pix_fmt in ("nv12", "p016"):
            if frame.pix_fmt == "nv12":
                convert = kernels.nv12_to_rgb
            else:  # full range scales by the bit depth: 1.0 is (2**bits - 1) << (16 - bits)
                bits = self.info.bit_depth if self.info.bit_depth in (10, 12, 16) else 10
                convert = functools.partial(kernels.p016_to_rgb, bit_depth=bits)
            fused = self._fused_downsample()
            out = out_small = None
            if self.dtype == torch.float32 and self.device.type == "cpu":
                out = self._ring.take((3, frame.height, frame.width), self.dtype)
                if fused:
                    out_small = self._ring.take(
                        (3, *kernels.small_size(frame.height, frame.width, self.ratio)),
                        self.dtype)
            result = convert(data, matrix=frame.color.matrix, full_range=frame.color.full_range,
                             out_dtype=self.dtype, height=frame.height, width=frame.width,
                             downsample=self.ratio if fused else None, out=out,
                             out_small=out_small)
            src, small = result if isinstance(result, tuple) else (result, None)
        elif frame.pix_fmt in ("rgb24", "rgba"):
            src = data[..., :3].permute(2, 0, 1).to(self.dtype).div_(255)
        else:
            raise ValueError(f"unsupported pixel format {frame.pix_fmt!r}")
        if self.rotation:
            # torch.rot90 turns counter-clockwise for positive k; rotation is clockwise.
            src = torch.rot90(src, k=-self.rotation // 90, dims=(1, 2)).contiguous()
        if self.resize is not None and (src.shape[2], src.shape[1]) != tuple(self.resize):
            width, height = self.resize
            src = F.interpolate(src[None], size=(height, width), mode="bilinear",
                                align_corners=False, antialias=True)[0].clamp_(0, 1)
        if small is None:
            small = downsample(src, self.ratio)
        return src, small
