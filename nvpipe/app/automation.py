"""What scripts and other programs read from ``nvpipe run``: exit codes, the ``--json``
summary on standard output, and the ``--progress`` stream of ``key=value`` lines.

Exit codes (``EXIT_CODES``, printed by ``--help`` and listed in the README):

====  ===========================================================================
0     done
1     failed (anything else: a codec the build lacks, a full disk, an internal error)
2     usage: an unknown option, a bad value, options that do not go together
3     the input is bad: missing, unreadable, not a video, damaged
4     an output exists (without ``--overwrite``) or is locked by another nvpipe run
5     no GPU: ``--device cuda`` (or ``cuda:N``) was asked for and cannot run here
130   interrupted (Ctrl-C); what was done is kept, as the message says
143   terminated (SIGTERM); likewise
====  ===========================================================================

The progress stream (``--progress FILE`` or ``-`` for standard output) is ffmpeg's
``-progress`` format: blocks of ``key=value`` lines, each ending with ``progress=continue``,
the last with ``progress=end``; a block at most every ``PROGRESS_PERIOD`` seconds and one at
the end. Keys: ``input``, ``clip`` (``k/n`` in a batch), ``frame``, ``total_frames``
(``N/A`` when unknown), ``percent``, ``fps`` (recent), ``elapsed_s``, ``eta_s``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Optional

from nvpipe.errors import DeviceError, InputError, OutputBlocked, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_NO_GPU = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_FAILED: "failed",
    EXIT_USAGE: "usage error",
    EXIT_INPUT: "input missing, unreadable or damaged",
    EXIT_OUTPUT: "output exists (no --overwrite) or is locked by another run",
    EXIT_NO_GPU: "no GPU for --device cuda",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}
EXIT_CODES_TEXT = "exit codes: " + ", ".join(f"{code} {what}" for code, what in EXIT_CODES.items())

# The progress stream's period (seconds), as ffmpeg's -stats_period default.
PROGRESS_PERIOD = 0.5


def exit_code_for(error: BaseException) -> int:
    """The exit code of a user error (``nvpipe.errors``' kinds; anything else is 1)."""
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, InputError):
        return EXIT_INPUT
    if isinstance(error, OutputBlocked):
        return EXIT_OUTPUT
    if isinstance(error, DeviceError):
        return EXIT_NO_GPU
    return EXIT_FAILED


class ProgressStream:
    """``--progress``: a ``runner.ProgressCallback`` writing ffmpeg-style ``key=value``
    blocks to a file or standard output (see the module docstring). ``for_clip(label)``
    gives the callback of one clip (a batch's ``progress_factory``)."""

    def __init__(self, target: str, *, period: float = PROGRESS_PERIOD):
        self.target = target
        self.period = period
        if target == "-":
            self._file: IO[str] = sys.stdout
            self._owned = False
        else:
            try:
                self._file = open(target, "w", encoding="utf-8")
            except OSError as error:
                raise UsageError(f"--progress {target}: cannot write it "
                                 f"({error.strerror or error})") from None
            self._owned = True
        self._label = ""
        self._clip: Optional[str] = None
        self._last_write = 0.0
        self._last: Optional[tuple] = None
        self._estimate = None

    def for_clip(self, label: str, clip: Optional[str] = None) -> "ProgressStream":
        """Starts reporting a (new) clip; returns this stream as its callback."""
        from nvpipe.app.progress import RateEstimate

        self._label, self._clip = label, clip
        self._estimate = RateEstimate()
        self._last = None
        self._last_write = 0.0
        return self

    def __call__(self, done: int, total: Optional[int], elapsed: float) -> None:
        if self._estimate is None:
            self.for_clip("")
        self._estimate.add(done, elapsed)
        self._last = (done, total, elapsed)
        now = time.monotonic()
        if now - self._last_write >= self.period or (total is not None and done >= total):
            self._write(done, total, elapsed, "continue")
            self._last_write = now

    def finish(self) -> None:
        """The clip's last block (``progress=end``)."""
        if self._last is not None:
            self._write(*self._last, "end")
            self._last = None

    def _write(self, done: int, total: Optional[int], elapsed: float, state: str) -> None:
        rate = self._estimate.rate if self._estimate is not None else None
        left = self._estimate.seconds_left(done, total) if self._estimate is not None else None
        lines = [f"input={self._label}"]
        if self._clip:
            lines.append(f"clip={self._clip}")
        lines += [f"frame={done}", f"total_frames={total if total is not None else 'N/A'}",
                  f"percent={100 * done / total:.1f}" if total else "percent=N/A",
                  f"fps={rate:.2f}" if rate else "fps=N/A",
                  f"elapsed_s={elapsed:.2f}",
                  f"eta_s={left:.1f}" if left is not None else "eta_s=N/A",
                  f"progress={state}"]
        try:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        except (OSError, ValueError):  # a reader that went away does not stop the run
            pass

    def close(self) -> None:
        self.finish()
        if self._owned:
            self._file.close()


def run_summary(result, *, device_decision: Optional[dict] = None) -> dict:
    """A finished run (``RunResult``) as the ``--json`` summary's fields."""
    live = result.live
    latency = None
    if live is not None and live.latency_p50 is not None:
        latency = {"p50_ms": round(live.latency_p50 * 1000, 1),
                   "p99_ms": round(live.latency_p99 * 1000, 1)}
    decisions = dict(result.decisions)
    decisions["encoders"] = dict(result.encoders)
    if device_decision:
        decisions.update(device_decision)
    return {
        "outputs": [{"path": placed.path, "frames": placed.frames, "outcome": placed.outcome}
                    for placed in result.placed],
        "frames": result.frames,
        "seconds": round(result.seconds, 3),
        "fps": round(result.fps, 2),
        "interrupted": result.interrupted,
        "decisions": decisions,
        "notes": list(result.notes),
        "dropped": live.dropped if live is not None else 0,
        "received": live.received if live is not None else None,
        "latency": latency,
        "cuts": list(result.cuts),
    }


def batch_summary(summary) -> dict:
    """A batch (``BatchSummary``) as the ``--json`` summary's fields."""
    return {
        "batch": {"converted": list(summary.converted),
                  "skipped": [{"input": path, "reason": why} for path, why in summary.skipped],
                  "failed": [{"input": path, "reason": why} for path, why in summary.failed]},
        "outputs": list(getattr(summary, "outputs", [])),
        "frames": getattr(summary, "frames", 0),
        "notes": [],
        "dropped": 0,
    }


def print_json(fields: dict, *, code: int, error: Optional[str] = None, stream=None) -> None:
    """The ``--json`` summary: one JSON object on one line of standard output, with
    ``status`` and ``exit_code`` (and ``error``) added."""
    status = "ok" if code == EXIT_OK else ("interrupted" if code in (EXIT_INTERRUPTED,
                                                                     EXIT_TERMINATED) else "failed")
    document = {"status": status, "exit_code": code, **fields}
    if error is not None:
        document["error"] = error
    out = stream or sys.stdout
    out.write(json.dumps(document, default=str) + "\n")
    out.flush()


def stdout_is_taken(args) -> Optional[str]:
    """Which option already writes to standard output, if any (OUT ``-``)."""
    from nvpipe.sinks import is_stream_output
    from nvpipe.sinks.stream import STDOUT_NAMES

    for name in ("output", "alpha", "foreground", "key"):
        value = getattr(args, name, None)
        if value is not None and str(value) in STDOUT_NAMES and is_stream_output(value):
            return name
    return None


__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INPUT", "EXIT_OUTPUT", "EXIT_NO_GPU",
           "EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_CODES", "EXIT_CODES_TEXT",
           "exit_code_for", "ProgressStream", "run_summary", "batch_summary", "print_json",
           "stdout_is_taken", "PROGRESS_PERIOD"]
