"""Pacing: how frames wait between stages, for files (never dropped) and live inputs.

A file waits for the pipeline: the decode thread blocks on a full queue and every frame
is converted. A live input (``nvpipe.sources.live``) does not wait for anyone, so a
pipeline that falls behind must not let its queues grow: a receive thread takes every
frame from the source as it arrives into :class:`LatestFrames`, a one-frame mailbox that
**drops the oldest frame** when a newer one arrives before the converter took it, and the
queues after it are short. What a frame waits at most is then a fixed number of frame
times (``Pacing.frames_in_flight``), whatever the input's rate.

Latency is measured per frame from its arrival at nvpipe (out of the demuxer and decoder)
to its write into the output returning (:class:`LatencyLog`).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Pacing:
    """Queue depths of a run. ``mailbox`` > 0: the live receive thread and its mailbox."""

    live: bool
    mailbox: int  # decoded frames waiting for the converter (drop-oldest beyond it)
    decoded: int  # converted frames waiting for the network
    encode: int   # composed frames waiting for each encoder

    @property
    def compose_ring(self) -> int:
        """Composed buffers in turn: the encode queue, the frame an encoder holds, the one
        being composed, one spare."""
        return self.encode + 3

    def frames_in_flight(self, chunk: int) -> int:
        """The most frames between arrival and output: what latency is bounded by, in
        frame times of the slowest stage."""
        return self.mailbox + self.decoded + chunk + 1 + self.encode + 1


# Files: 4 converted frames ahead of the network (1080p float32 src is 25 MB, so about
# 100 MB in flight on the CPU), 8 composed frames ahead of each encoder.
FILE_PACING = Pacing(live=False, mailbox=0, decoded=4, encode=8)
# Live: the newest frame only, one converted, two composed per encoder: at chunk 1 at most
# 7 frames in flight (at 5 fps on this CPU, 1.4 s; at 30 fps, 0.23 s).
LIVE_PACING = Pacing(live=True, mailbox=1, decoded=1, encode=2)


def pacing_for(live: bool) -> Pacing:
    return LIVE_PACING if live else FILE_PACING


class LatestFrames:
    """A mailbox of at most ``size`` items: putting into a full one drops the oldest item
    (``dropped`` counts them), so the producer never waits. ``close()`` ends it."""

    def __init__(self, size: int = 1):
        if size < 1:
            raise ValueError(f"a mailbox holds at least 1 item, got {size}")
        self.size = size
        self.dropped = 0
        self.received = 0
        self._items: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item) -> None:
        with self._ready:
            if len(self._items) >= self.size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.received += 1
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def get(self, stop: threading.Event, poll: float = 0.05):
        """The oldest item held, or None once closed and empty, or when ``stop`` is set."""
        with self._ready:
            while not self._items:
                if self._closed or stop.is_set():
                    return None
                self._ready.wait(poll)
            return self._items.popleft()

    def drain(self, stop: threading.Event):
        """Items as they come, until closed (and empty) or stopped."""
        while True:
            item = self.get(stop)
            if item is None:
                return
            yield item


class LatencyLog:
    """Seconds from arrival to written, per frame of one output (appended by its encode
    thread, read when the run ends or for a live report)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.first_arrival: Optional[float] = None
        self.last_written: Optional[float] = None

    def record(self, arrival: Optional[float]) -> None:
        if arrival is None:
            return
        now = time.monotonic()
        if self.first_arrival is None:
            self.first_arrival = arrival
        self.last_written = now
        self.seconds.append(now - arrival)

    def rate(self) -> float:
        """Frames written per second, from the first frame's arrival to the last write
        (the run's start-up and a stream's closing timeout are not processing)."""
        if self.first_arrival is None or len(self.seconds) < 2:
            return 0.0
        span = self.last_written - self.first_arrival
        return len(self.seconds) / span if span > 0 else 0.0

    def percentiles(self) -> Optional[tuple[float, float]]:
        """(p50, p99) in seconds, or None before the first frame."""
        if not self.seconds:
            return None
        p50, p99 = np.percentile(np.asarray(self.seconds[-10_000:]), (50, 99))
        return float(p50), float(p99)


@dataclass
class LiveStats:
    """A live run's figures: frames that arrived, were written, were dropped, the
    processing rate (``LatencyLog.rate``) and the latency percentiles."""

    received: int
    written: int
    dropped: int
    fps: float
    latency_p50: Optional[float] = None  # seconds
    latency_p99: Optional[float] = None

    def describe(self) -> str:
        latency = ("" if self.latency_p50 is None else
                   f", latency p50 {self.latency_p50 * 1000:.0f} ms p99 "
                   f"{self.latency_p99 * 1000:.0f} ms")
        return (f"{self.written} frames written, {self.dropped} dropped of {self.received} "
                f"received (oldest first), {self.fps:.1f} fps{latency}")


__all__ = ["Pacing", "FILE_PACING", "LIVE_PACING", "pacing_for", "LatestFrames", "LatencyLog",
           "LiveStats"]
