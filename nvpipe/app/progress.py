"""The progress bar of ``nvpipe run`` and ``convert_video``: tqdm, fed by the runner.

The runner calls ``bar(done, total, elapsed)`` after each frame (``runner.ProgressCallback``;
``elapsed`` counts from the start of the run, so it includes loading the weights and the
first network call). The time left is estimated from the recent frames only: the frames of
the last ``RATE_WINDOW_S`` seconds, never the interval before the first frame. The whole-run
average (``done / elapsed``) counted a 5 s warm-up into every frame: 6-10x too much time
left in the first seconds. Until a second frame is done the time left shows as ``?``.
"""

from __future__ import annotations

import collections
import sys
from typing import Optional

from tqdm import tqdm

# Frames of the last this many seconds give the rate (at least the last two frames): long
# enough to even out chunked network calls, short enough to follow a change of speed.
RATE_WINDOW_S = 10.0


class _FrameBar(tqdm):
    """tqdm showing the runner's clock and our rate estimate instead of its own."""

    monitor_interval = 0  # no monitor thread: the runner calls often enough

    def __init__(self, *args, runner_elapsed: float = 0.0, recent_rate: Optional[float] = None,
                 **kwargs):
        self.runner_elapsed, self.recent_rate = runner_elapsed, recent_rate  # for the first draw
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self):
        values = super().format_dict
        values["elapsed"] = self.runner_elapsed
        values["rate"] = self.recent_rate
        return values


class RateEstimate:
    """Frames per second over the recent frames, from the runner's ``(done, elapsed)``."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self._samples: collections.deque = collections.deque()

    def add(self, done: int, elapsed: float) -> None:
        self._samples.append((done, elapsed))
        while len(self._samples) > 2 and elapsed - self._samples[1][1] >= self.window_s:
            self._samples.popleft()

    @property
    def rate(self) -> Optional[float]:
        """None until two frames are done (the first one's time is mostly warm-up)."""
        if len(self._samples) < 2:
            return None
        (first_done, first_time), (last_done, last_time) = self._samples[0], self._samples[-1]
        if last_time <= first_time or last_done <= first_done:
            return None
        return (last_done - first_done) / (last_time - first_time)

    def seconds_left(self, done: int, total: Optional[int]) -> Optional[float]:
        rate = self.rate
        if total is None or rate is None:
            return None
        return max(0, total - done) / rate


class ProgressBar:
    """Frames, fps and time left on ``stream`` (stderr), redrawn at most 4 times a second on
    a terminal and every 10 s into a log; a ``runner.ProgressCallback``."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.estimate = RateEstimate()
        self._bar: Optional[_FrameBar] = None

    def __call__(self, done: int, total: Optional[int], elapsed: float) -> None:
        self.estimate.add(done, elapsed)
        if self._bar is None:
            tty = hasattr(self.stream, "isatty") and self.stream.isatty()
            self._bar = _FrameBar(total=total, desc=self.label, unit=" frames", file=self.stream,
                                  mininterval=0.25 if tty else 10.0, dynamic_ncols=tty,
                                  smoothing=0, leave=True, initial=done,
                                  runner_elapsed=elapsed, recent_rate=None)
            return
        bar = self._bar
        if total != bar.total:
            bar.total = total
        bar.runner_elapsed = elapsed
        bar.recent_rate = self.estimate.rate
        bar.update(done - bar.n)

    def seconds_left(self) -> Optional[float]:
        """The current estimate of the time left (None: not known yet)."""
        if self._bar is None:
            return None
        return self.estimate.seconds_left(self._bar.n, self._bar.total)

    def render(self) -> str:
        """The bar's text as it is drawn now."""
        return str(self._bar) if self._bar is not None else ""

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()


__all__ = ["ProgressBar", "RateEstimate", "RATE_WINDOW_S"]
