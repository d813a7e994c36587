"""The types that flow between stages: stream facts, decoded frames, colour specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Optional

import torch

MATRICES = ("bt601", "bt709", "bt2020")


@dataclass(frozen=True)
class ColorSpec:
    """YUV -> RGB matrix and range of a stream. ``full_range`` False means limited (16-235)."""

    matrix: str = "bt709"
    full_range: bool = False

    def __post_init__(self) -> None:
        if self.matrix not in MATRICES:
            raise ValueError(f"matrix must be one of {MATRICES}, got {self.matrix!r}")


def untagged_color(height: int) -> ColorSpec:
    """What players assume for untagged video, so what untagged input is read as and what
    written 4:2:0 outputs use: BT.601 below 720 lines, else BT.709; limited range."""
    return ColorSpec("bt601" if height < 720 else "bt709", False)


@dataclass
class StreamInfo:
    """What a source knows about its video before the first frame.

    ``width``/``height`` are the coded size; ``rotation`` (0, 90, 180, 270, clockwise) is
    applied after conversion, so outputs have ``display_size``.
    """

    path: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frame_count: Optional[int] = None
    color: ColorSpec = field(default_factory=ColorSpec)
    bit_depth: int = 8
    codec: str = ""
    rotation: int = 0
    has_audio: bool = False
    duration: Optional[float] = None  # seconds, where the container says
    # Seconds of the input before the first frame's timestamp 0 (a --start trim shifts the
    # timestamps: nvpipe.sources.trim); sinks copying the input's audio shift it alike.
    start_offset: float = 0.0
    live: bool = False  # arrives in real time (nvpipe.sources.live): the runner may drop frames

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) after rotation."""
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height


@dataclass
class DecodedFrame:
    """One decoded picture, borrowed or owned, on the CPU or a CUDA device.

    ``data`` layouts by ``pix_fmt`` (see docs/design.md):
    - ``nv12``: uint8 ``(H + ceil(H/2), P)``, Y rows then interleaved UV rows.
    - ``p016``: uint16, same layout, values MSB-aligned.
    - ``rgb24`` / ``rgba``: uint8 ``(H, W, 3|4)``.
    """

    data: torch.Tensor
    pix_fmt: str
    width: int
    height: int
    color: ColorSpec
    pts: Optional[int]
    time_base: Fraction
    index: int
    # Borrowed frames (NVDEC's pool) set this: the consumer calls it once the work that
    # reads ``data`` is enqueued on its current stream, before asking the source for more.
    release: Optional[Callable[[], None]] = None
    # When the frame reached nvpipe (time.monotonic()): a live run's latency starts here.
    arrival: Optional[float] = None

    @property
    def time(self) -> Optional[float]:
        return None if self.pts is None else float(self.pts * self.time_base)


__all__ = ["ColorSpec", "StreamInfo", "DecodedFrame", "MATRICES", "untagged_color"]


def frame_ticks(fps, time_base) -> int:
    """One frame's duration in ``time_base`` units at ``fps`` (at least 1 tick): the step
    between the timestamps of frames that arrive without their own."""
    return max(1, round(1 / (Fraction(fps) * Fraction(time_base))))
