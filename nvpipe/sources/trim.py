"""Trimming any source: ``--start``, ``--duration``, ``--frames``.

``TrimmedSource`` wraps a ``Source`` (video file, NVDEC, picture sequence) and yields the
frames from ``start`` seconds on, for at most ``duration`` seconds and at most ``frames``
frames. Times are measured from the input's first frame (as ``ffmpeg -ss`` does), by each
frame's timestamp. With a ``start``, the timestamps are shifted so the output begins at 0
and ``info.start_offset`` says by how much (the sinks shift the input's audio alike);
without one the input's timestamps are kept. Frames are renumbered from 0 (a background
video starts at its own first frame).

Where the source can seek (``PyAVSource.seek``), it jumps to the keyframe before ``start``
and decodes forward from there; otherwise the frames before ``start`` are decoded and
dropped (borrowed NVDEC surfaces released at once).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Iterator, Optional

from nvpipe.errors import InputError
from nvpipe.frames import DecodedFrame

# A frame belongs to the trimmed range when its time is within this of the range (a
# 1/24 s grid stored in 1/12288 s ticks is exact; this only absorbs float rounding).
TIME_TOLERANCE = 1e-6
_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)")


def parse_time(text: str) -> float:
    """Seconds from ``12.5``, ``90``, ``MM:SS``, ``HH:MM:SS`` or ``HH:MM:SS.mmm`` (as
    ffmpeg's ``-ss``/``-t``). Raises ``ValueError`` naming the text."""
    raw = str(text).strip()
    match = _CLOCK.fullmatch(raw)
    if match:
        hours, minutes, seconds = match.groups()
        if int(minutes) >= 60 and hours is not None or float(seconds) >= 60:
            raise ValueError(f"not a time: {text!r} (minutes and seconds go up to 59)")
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use seconds, 12.5, or HH:MM:SS.ms)") from None
    if not math.isfinite(value):
        raise ValueError(f"not a time: {text!r}")
    return value


def trim(source, job):
    """``source`` trimmed as ``job`` asks (``start``, ``duration``, ``frames``), or
    ``source`` itself when it asks nothing. Closes ``source`` when trimming fails."""
    if not job.start and job.duration is None and job.frames is None:
        return source
    try:
        return TrimmedSource(source, start=job.start, duration=job.duration, frames=job.frames)
    except BaseException:
        source.close()
        raise


class TrimmedSource:
    """The frames of ``source`` from ``start`` seconds, for ``duration`` seconds and at most
    ``frames`` frames (see the module docstring). The first frame in range is found on
    opening, so a ``start`` past the end fails here with ``InputError``.

    ``info`` is the source's with ``frame_count`` and ``duration`` for the range (the frame
    count estimated from the rate where the source's is unknown or it seeked) and
    ``start_offset`` the seconds removed from the timestamps. ``damage`` is the source's
    when the range ran to its end (frames after the range are never decoded); ``live`` and
    ``notes`` are the source's.
    """

    def __init__(self, source, *, start: float = 0.0, duration: Optional[float] = None,
                 frames: Optional[int] = None) -> None:
        if start < 0:
            raise InputError(f"--start must be 0 or more seconds, got {start:g}")
        if duration is not None and duration <= 0:
            raise InputError(f"--duration must be positive, got {duration:g}")
        if frames is not None and frames < 1:
            raise InputError(f"--frames must be at least 1, got {frames}")
        self.source = source
        self.start, self.duration, self.max_frames = start, duration, frames
        inner = source.info
        self._fps = float(inner.fps) if inner.fps else 30.0
        skipped: Optional[int] = 0
        if start > 0 and hasattr(source, "seek"):
            # To the keyframe before start; the frames from there to start are dropped below.
            self._origin = source.seek(start)  # the time of the input's first frame
            skipped = None  # unknown now: counted from the time
        self._frames = iter(source)
        first = next(self._frames, None)
        if first is None and start == 0:
            raise InputError(f"no frame could be decoded from {inner.path}")
        if skipped is not None and first is not None:
            self._origin = self._time(first, 0)  # the input's first frame: time 0 of the range
        while first is not None and self._time(first, skipped) < self._origin + start - TIME_TOLERANCE:
            self._release(first)
            if skipped is not None:
                skipped += 1
            first = next(self._frames, None)
        if first is None:
            length = f" ({inner.duration:.3f} s long)" if inner.duration else ""
            raise InputError(f"--start {start:g} s is past the end of {inner.path}{length}")
        self._first = first
        first_time = self._time(first, skipped)
        self._end = self._origin + start + duration if duration is not None else None
        # With a start, the output's clock starts at the first frame in range.
        self._shift = (first.pts or 0) if start > 0 else 0
        offset = float(self._shift * first.time_base) if self._shift else 0.0
        self.info = replace(inner, frame_count=self._count(inner, skipped, first_time),
                            duration=self._length(inner, first_time), start_offset=offset)
        self.damage: Optional[str] = None
        self._started = False

    @property
    def live(self) -> bool:
        return getattr(self.source, "live", False)

    @property
    def notes(self):
        return getattr(self.source, "notes", ())

    def _time(self, frame: DecodedFrame, index: Optional[int]) -> float:
        """A frame's time in seconds: its timestamp, else its place on the frame-rate grid."""
        if frame.pts is not None:
            return float(frame.pts * frame.time_base)
        return (index if index is not None else frame.index) / self._fps

    def _length(self, inner, first_time: float) -> Optional[float]:
        left = None
        if inner.duration is not None:
            left = max(0.0, inner.duration - (first_time - self._origin))
        if self.duration is not None:
            left = self.duration if left is None else min(left, self.duration)
        if self.max_frames is not None:
            by_count = self.max_frames / self._fps
            left = by_count if left is None else min(left, by_count)
        return left

    def _count(self, inner, skipped: Optional[int], first_time: float) -> Optional[int]:
        """Frames in the range: exact from the source's count where no seek hid how many
        were skipped; else from the time left at the frame rate (for the progress bar)."""
        count = None
        if inner.frame_count is not None:
            if skipped is None:
                skipped = round((first_time - self._origin) * self._fps)
            count = max(0, inner.frame_count - skipped)
        if self.duration is not None:
            in_duration = math.ceil(self.duration * self._fps - TIME_TOLERANCE)
            count = in_duration if count is None else min(count, in_duration)
        if self.max_frames is not None:
            count = self.max_frames if count is None else min(count, self.max_frames)
        return count

    @staticmethod
    def _release(frame: DecodedFrame) -> None:
        if frame.release is not None:  # a borrowed NVDEC surface
            frame.release()

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._started:
            raise RuntimeError("a TrimmedSource can be iterated once")
        self._started = True
        frame, self._first = self._first, None
        index = 0
        while frame is not None:
            if self.max_frames is not None and index >= self.max_frames:
                self._release(frame)
                return
            if self._end is not None and self._time(frame, None) >= self._end - TIME_TOLERANCE:
                self._release(frame)
                return
            pts = frame.pts - self._shift if frame.pts is not None else None
            yield replace(frame, pts=pts, index=index)
            index += 1
            frame = next(self._frames, None)
        self.damage = self.source.damage  # the source ran to its end

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> "TrimmedSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["TrimmedSource", "trim", "parse_time"]
