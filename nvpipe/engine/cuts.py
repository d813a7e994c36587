"""Scene-cut detection on the network's low-resolution input, to reset RVM's memory there.

RVM's recurrent state carries the last shot's people into the next for several frames
after a cut. The test is cheap and runs on ``src_sm`` ([3, h, w] in [0, 1], what the
network sees anyway): per-channel 32-bin colour histograms of consecutive frames, their
distance ``0.5 * sum |h1 - h2|`` averaged over the channels (0: the same colours, 1: none
shared). Motion moves pixels but hardly changes a shot's colours; a cut replaces them.

The threshold was measured with ``bench/cuts.py`` (``bench/results/cuts.json``): over the
shared footage's 885 consecutive-frame pairs, frames without a cut reach at most 0.094 (a
cross-dissolve, over frames 127-132 of nasa_13013, 0.22), the one hard cut in it 0.52, and
a cut between two of its clips was found at the frame it is at; 0.35 sits between.
"""

from __future__ import annotations

from typing import Optional

import torch

HISTOGRAM_BINS = 32
CUT_THRESHOLD = 0.35  # histogram distance above which two frames are taken as a cut


def colour_histograms(src_sm: torch.Tensor, bins: int = HISTOGRAM_BINS) -> torch.Tensor:
    """``[3, bins]`` per-channel histograms of ``src_sm`` ``[3, h, w]`` (values in [0, 1]),
    each summing to 1; float32 on ``src_sm``'s device."""
    channels = src_sm.detach().float().reshape(src_sm.shape[0], -1)
    index = (channels.clamp(0, 1) * (bins - 1e-3)).long()  # 1.0 falls in the last bin
    counts = torch.zeros((channels.shape[0], bins), dtype=torch.float32, device=src_sm.device)
    counts.scatter_add_(1, index, torch.ones_like(channels))
    return counts / channels.shape[1]


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over channels of ``0.5 * sum |a - b|`` of ``[C, bins]`` histograms: in [0, 1]."""
    return float((a - b).abs().sum(dim=1).mul(0.5).mean())


class CutDetector:
    """``detector(src_sm) -> bool``: True when this frame starts a new shot (never for the
    first frame). ``distances`` keeps every frame's distance to the one before (None for
    the first), for measurements."""

    def __init__(self, threshold: float = CUT_THRESHOLD, *, keep_distances: bool = False):
        self.threshold = threshold
        self._previous: Optional[torch.Tensor] = None
        self.keep_distances = keep_distances
        self.distances: list[Optional[float]] = []

    def __call__(self, src_sm: torch.Tensor) -> bool:
        histograms = colour_histograms(src_sm)
        previous, self._previous = self._previous, histograms
        if previous is None:
            if self.keep_distances:
                self.distances.append(None)
            return False
        distance = histogram_distance(histograms, previous)
        if self.keep_distances:
            self.distances.append(distance)
        return distance > self.threshold

    def reset(self) -> None:
        self._previous = None


__all__ = ["CutDetector", "colour_histograms", "histogram_distance", "CUT_THRESHOLD"]
