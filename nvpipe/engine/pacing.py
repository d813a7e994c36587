"""Pacing: how frames wait between stages, chosen once per job from its input AND its
outputs (:func:`choose_pacing`):

- **file** (an input that waits for the pipeline: files, pipes, http, or ``--no-live``):
  the decode thread blocks on a full queue and every frame is converted.
- **record** (a live input, ``nvpipe.sources.live``, written to files): a live input does
  not wait for anyone, but a file does not need bounded latency, so every frame is kept:
  a receive thread takes each frame as it arrives into :class:`RecordBuffer`, which holds
  what the pipeline has not taken yet, as ffmpeg buffers a recording, up to a stated
  memory bound (``NVPIPE_RECORD_BUFFER_MB``, default ``RECORD_BUFFER_MB``). Only beyond it
  are frames dropped (those arriving while it is full), and the run's summary says how
  many.
- **live** (a live input written to a live output: standard output, a pipe, a URL; or
  ``--live``): a pipeline that falls behind must not let its queues grow: the receive
  thread puts each frame into :class:`LatestFrames`, a one-frame mailbox that **drops the
  oldest frame** when a newer one arrives before the converter took it, and the queues
  after it are short. What a frame waits at most is then a fixed number of frame times
  (``Pacing.frames_in_flight``), whatever the input's rate.

Latency is measured per frame from its arrival at nvpipe (out of the demuxer and decoder)
to its write into the output returning (:class:`LatencyLog`).
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Iterable, Optional

import numpy as np


FILE, RECORD, LIVE = "file", "record", "live"
# A recording's buffer of frames the pipeline has not taken yet, at most this many MiB
# (1080p NV12 is 3.1 MB a frame: 1 GiB holds 14 s of 24 fps 1080p the pipeline is behind).
RECORD_BUFFER_MB = 1024
RECORD_BUFFER_ENV = "NVPIPE_RECORD_BUFFER_MB"


@dataclass(frozen=True)
class Pacing:
    """Queue depths of a run. ``live``: a receive thread takes frames as they arrive
    (a live input); ``mode``: ``file``, ``record`` (keep every frame, buffered up to
    ``buffer_bytes``) or ``live`` (``mailbox`` frames, drop-oldest beyond)."""

    live: bool
    mailbox: int  # decoded frames waiting for the converter (drop-oldest beyond it)
    decoded: int  # converted frames waiting for the network
    encode: int   # composed frames waiting for each encoder
    mode: str = FILE
    buffer_bytes: int = 0  # record: the receive buffer's bound

    @property
    def drops(self) -> bool:
        """Whether frames are dropped to keep latency bounded (live mode)."""
        return self.mode == LIVE

    def receive_buffer(self):
        """The receive thread's buffer: a :class:`RecordBuffer` or a :class:`LatestFrames`."""
        if self.mode == RECORD:
            return RecordBuffer(self.buffer_bytes)
        return LatestFrames(self.mailbox)

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
LIVE_PACING = Pacing(live=True, mailbox=1, decoded=1, encode=2, mode=LIVE)
# Recording a live input: the file's queue depths behind a buffer of every frame received.
RECORD_PACING = Pacing(live=True, mailbox=0, decoded=4, encode=8, mode=RECORD,
                       buffer_bytes=RECORD_BUFFER_MB << 20)


def record_buffer_bytes() -> int:
    """The recording buffer's bound: ``$NVPIPE_RECORD_BUFFER_MB`` MiB, default
    ``RECORD_BUFFER_MB``."""
    text = os.environ.get(RECORD_BUFFER_ENV, "").strip()
    try:
        megabytes = float(text) if text else RECORD_BUFFER_MB
    except ValueError:
        raise ValueError(f"{RECORD_BUFFER_ENV} must be a number of MiB, got {text!r}") from None
    if megabytes <= 0:
        raise ValueError(f"{RECORD_BUFFER_ENV} must be positive, got {text!r}")
    return int(megabytes * (1 << 20))


def is_live_output(path) -> bool:
    """An output that is consumed as it is written, so latency matters: standard output,
    a URL, a named pipe (FIFO)."""
    import stat

    from nvpipe.sinks import is_stream_output

    if is_stream_output(path):
        return True
    try:
        return stat.S_ISFIFO(os.stat(str(path)).st_mode)
    except (OSError, ValueError):
        return False


def choose_pacing(source_live: bool, outputs: Iterable, live: Optional[bool] = None) -> Pacing:
    """The pacing of a job (see the module docstring): ``file`` for an input that waits
    (``source_live`` False, which ``--no-live`` forces); for a live input, ``live`` when
    asked (``--live``: ``live`` True) or when any output is live (:func:`is_live_output`),
    otherwise ``record``, every frame kept up to :func:`record_buffer_bytes`."""
    if not source_live:
        return FILE_PACING
    if live or any(is_live_output(path) for path in outputs):
        return LIVE_PACING
    return replace(RECORD_PACING, buffer_bytes=record_buffer_bytes())


def pacing_for(live: bool) -> Pacing:
    """The pacing by the input alone: ``live`` for a live input (drop to bound latency)."""
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
            return self._take()

    def _take(self):
        """The oldest item, removed (called with the lock held and an item present)."""
        return self._items.popleft()

    def drain(self, stop: threading.Event):
        """Items as they come, until closed (and empty) or stopped."""
        while True:
            item = self.get(stop)
            if item is None:
                return
            yield item


def _frame_bytes(item) -> int:
    """The memory a buffered item holds: a ``DecodedFrame``'s data, a tuple's arrays."""
    data = getattr(item, "data", item)
    if isinstance(data, (tuple, list)):
        return sum(_frame_bytes(part) for part in data)
    nbytes = getattr(data, "nbytes", None)
    if nbytes is None and hasattr(data, "element_size"):
        nbytes = data.element_size() * data.numel()
    return int(nbytes or 0)


class RecordBuffer(LatestFrames):
    """A recording's receive buffer: every item is kept until taken, up to ``max_bytes``
    of frame data; an item arriving while it is full is dropped (``dropped``; the items
    held are older and go on to the output, as an overrun in ffmpeg's buffers). ``peak``:
    the most bytes held at once."""

    def __init__(self, max_bytes: int):
        super().__init__(1)
        if max_bytes <= 0:
            raise ValueError(f"a recording buffer holds at least 1 byte, got {max_bytes}")
        self.max_bytes = max_bytes
        self.held = 0
        self.peak = 0

    def put(self, item) -> None:
        size = _frame_bytes(item)
        with self._ready:
            self.received += 1
            if self._items and self.held + size > self.max_bytes:
                self.dropped += 1
                return
            self._items.append((item, size))
            self.held += size
            self.peak = max(self.peak, self.held)
            self._ready.notify()

    def _take(self):
        item, size = self._items.popleft()
        self.held -= size
        return item


class WaitingFrames:
    """A bounded queue whose producer waits when it is full (a file's back-pressure), with
    :class:`LatestFrames`' interface: ``put``, ``close``, ``get``, ``drain``; ``dropped``
    stays 0."""

    def __init__(self, size: int = 4, stop: Optional[threading.Event] = None):
        self._queue: queue.Queue = queue.Queue(size)
        self._stop = stop or threading.Event()
        self.received = 0
        self.dropped = 0
        self._closed = False

    def put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                self.received += 1
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._closed = True

    def get(self, stop: threading.Event, poll: float = 0.05):
        while True:
            try:
                return self._queue.get(timeout=poll)
            except queue.Empty:
                if self._closed or stop.is_set():
                    return None

    def drain(self, stop: threading.Event):
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
    processing rate (``LatencyLog.rate``) and the latency percentiles; ``mode`` the
    pacing (``live`` or ``record``), and for a recording its buffer's peak and bound."""

    received: int
    written: int
    dropped: int
    fps: float
    latency_p50: Optional[float] = None  # seconds
    latency_p99: Optional[float] = None
    mode: str = LIVE
    buffer_peak: int = 0  # bytes
    buffer_bound: int = 0  # bytes

    def describe(self) -> str:
        latency = ("" if self.latency_p50 is None else
                   f", latency p50 {self.latency_p50 * 1000:.0f} ms p99 "
                   f"{self.latency_p99 * 1000:.0f} ms")
        if self.mode == RECORD:
            left = self.received - self.written - self.dropped
            how = (f"recorded, every frame kept (buffer peak {self.buffer_peak / 2 ** 20:.0f} "
                   f"of {self.buffer_bound / 2 ** 20:.0f} MiB)" if not self.dropped else
                   f"recorded; the buffer of {self.buffer_bound / 2 ** 20:.0f} MiB "
                   f"({RECORD_BUFFER_ENV}) filled, and {self.dropped} frames arriving while "
                   f"it was full were dropped")
            if left > 0:  # the run stopped (Ctrl-C) with frames still waiting
                how = how.replace("every frame kept", "every frame kept until the stop") + \
                    f"; {left} still buffered at the stop were not written"
            return (f"{self.written} frames written, {self.dropped} dropped of {self.received} "
                    f"received ({how}), {self.fps:.1f} fps{latency}")
        return (f"{self.written} frames written, {self.dropped} dropped of {self.received} "
                f"received (oldest first), {self.fps:.1f} fps{latency}")


__all__ = ["Pacing", "FILE_PACING", "LIVE_PACING", "RECORD_PACING", "FILE", "RECORD", "LIVE",
           "choose_pacing", "pacing_for", "is_live_output", "record_buffer_bytes",
           "RECORD_BUFFER_MB", "RECORD_BUFFER_ENV", "LatestFrames", "RecordBuffer",
           "WaitingFrames", "LatencyLog", "LiveStats"]
