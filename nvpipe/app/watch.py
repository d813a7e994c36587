"""``nvpipe run --watch IN/ OUT/``: a watch folder (as rembg's ``p -w``).

Clips already in ``IN`` and every clip that arrives later are converted into ``OUT``, each
once it is complete: a clip being copied in grows, so it is taken only when its writer has
closed it and it has not changed since (``CLOSE_CONFIRM_S``), or when its size and
modification time have not changed for ``settle`` seconds (a writer that keeps the file
open, or a filesystem without close events). File events come from ``watchdog`` (inotify on
Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows); the folder is also listed
every ``RESCAN_S`` seconds, so an event lost (a network filesystem) only delays a clip.

Each clip goes through the batch machinery (``nvpipe.app.schedule.convert_clip``): its
outputs are recorded in ``OUT/.nvpipe-batch.json``, so a clip is converted exactly once,
a watch stopped and started again resumes (complete clips are skipped, interrupted ones
redone), and a file nvpipe did not write is never replaced without ``--overwrite``.
Hidden files (``.name``, what many copy tools write before renaming) and files that are
not videos are ignored; so is ``OUT`` when it lies inside ``IN``.

It runs until Ctrl-C or SIGTERM, or for scripts and tests: ``exit_after`` clips processed
(converted or failed), or ``idle`` seconds with nothing pending.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from nvpipe.app.batch import VIDEO_EXTENSIONS, BatchSummary
from nvpipe.errors import NvpipeError, UsageError
from nvpipe.job import Job

# A clip whose writer closed it is taken once it has not changed for this long.
CLOSE_CONFIRM_S = 0.5
# Default --watch-settle: a clip unchanged this long is complete even without a close event.
SETTLE_S = 2.0
# How often pending clips are looked at, and the folder listed again (lost events).
POLL_S = 0.2
RESCAN_S = 5.0


class _Pending:
    """A clip seen but not taken yet: its last size and mtime, since when they hold, and
    whether its writer closed it after the last change."""

    def __init__(self, stat: Optional[os.stat_result], now: float):
        self.signature = _signature(stat)
        self.since = now
        self.closed = False


def _signature(stat: Optional[os.stat_result]):
    return None if stat is None else (stat.st_size, stat.st_mtime_ns)


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except OSError:
        return None


class Watcher:
    """The watch loop (see the module docstring). ``run()`` returns the ``BatchSummary``."""

    def __init__(self, source: str, out: str, template: Job, *, settle: float = SETTLE_S,
                 exit_after: Optional[int] = None, idle: Optional[float] = None,
                 progress_factory: Optional[Callable[[str], Callable]] = None,
                 log=sys.stderr, verbose: bool = False):
        if not os.path.isdir(source):
            raise UsageError(f"--watch needs a folder to watch: {source!r} is not one")
        if settle <= 0:
            raise UsageError(f"--watch-settle must be positive, got {settle}")
        self.source = os.path.abspath(source)
        self.out = out
        self.template = template  # each clip's job: this with its paths replaced
        self.verbose = verbose
        self.settle = settle
        self.exit_after = exit_after
        self.idle = idle
        self.progress_factory = progress_factory
        self.log = log
        self.summary = BatchSummary()
        self.processed = 0
        self._events: queue.Queue = queue.Queue()
        self._pending: dict[str, _Pending] = {}
        self._done: set[str] = set()
        self._networks: dict = {}
        self._out_dir = (os.path.abspath(out) if "{stem}" not in out
                         else os.path.abspath(os.path.dirname(out) or "."))

    # -- which files count ---------------------------------------------------------------
    def _wanted(self, path: str) -> bool:
        path = os.path.abspath(path)
        name = os.path.basename(path)
        if name.startswith(".") or Path(name).suffix.lower() not in VIDEO_EXTENSIONS:
            return False
        if os.path.dirname(path) != self.source:
            return False  # not recursive: clips directly in the folder
        return not (path == self._out_dir or path.startswith(self._out_dir + os.sep))

    def _see(self, path: str, now: float, *, closed: bool = False) -> None:
        path = os.path.abspath(path)
        if not self._wanted(path) or path in self._done:
            return
        stat = _stat(path)
        pending = self._pending.get(path)
        if pending is None or pending.signature != _signature(stat):
            pending = self._pending[path] = _Pending(stat, now)
        if closed:
            pending.closed = True

    # -- watchdog --------------------------------------------------------------------------
    def _observer(self):
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a requirement
            raise NvpipeError("--watch needs the watchdog package: pip install watchdog") from None
        events = self._events

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # noqa: D401 - watchdog's API
                if not event.is_directory:
                    events.put(event)

        observer = Observer()
        observer.schedule(Handler(), self.source, recursive=False)
        return observer

    def _drain_events(self, now: float) -> bool:
        """Takes the file events in; True when there were any."""
        seen = False
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return seen
            seen = True
            kind = event.event_type
            if kind == "deleted":
                self._pending.pop(os.path.abspath(event.src_path), None)
            elif kind == "moved":
                self._pending.pop(os.path.abspath(event.src_path), None)
                self._see(event.dest_path, now)
            elif kind == "closed":  # closed after writing (inotify's IN_CLOSE_WRITE)
                self._see(event.src_path, now, closed=True)
            elif kind in ("created", "modified"):
                self._see(event.src_path, now)

    def _rescan(self, now: float) -> None:
        try:
            names = os.listdir(self.source)
        except OSError:
            return
        for name in names:
            self._see(os.path.join(self.source, name), now)

    def _ready(self, now: float) -> list[str]:
        """Pending clips that are complete, in name order; a changed one starts over."""
        ready = []
        for path, pending in list(self._pending.items()):
            stat = _stat(path)
            if stat is None:
                del self._pending[path]
                continue
            if _signature(stat) != pending.signature:
                self._pending[path] = _Pending(stat, now)
                continue
            quiet = now - pending.since
            if quiet >= self.settle or (pending.closed and quiet >= CLOSE_CONFIRM_S):
                ready.append(path)
        return sorted(ready)

    # -- converting ----------------------------------------------------------------------
    def _convert(self, path: str) -> None:
        from nvpipe.app.batch import clip_job
        from nvpipe.app.schedule import CONVERTED, SKIPPED, Clip, _record, convert_clip

        del self._pending[path]
        self._done.add(path)
        name = os.path.basename(path)
        try:
            job = clip_job(self.template, path, self.out)
        except NvpipeError as error:
            self.summary.failed.append((path, str(error)))
            print(f"nvpipe: failed: {path}: {error}", file=self.log)
            self.processed += 1
            return
        clip = Clip(self.processed + 1, self.processed + 1, job)
        progress = self.progress_factory(f"[{clip.number}] {name}") if self.progress_factory else None
        try:
            result = convert_clip(clip, networks=self._networks, progress=progress,
                                  verbose=self.verbose)
        finally:
            if progress is not None and hasattr(progress, "finish"):
                progress.finish()
        _record(self.summary, result, self.log)
        if result.status == SKIPPED:
            print(f"nvpipe: watch: {name}: skipped ({result.reason})", file=self.log, flush=True)
            return
        self.processed += 1
        if result.status == CONVERTED:
            print(f"nvpipe: watch: converted {name}: {result.frames} frames in "
                  f"{result.seconds:.1f} s -> {', '.join(result.outputs)}", file=self.log,
                  flush=True)

    def run(self) -> BatchSummary:
        if "{stem}" not in self.out:
            if os.path.exists(self.out) and not os.path.isdir(self.out):
                raise UsageError(f"--watch output must be a folder: {self.out!r} is a file")
            os.makedirs(self.out, exist_ok=True)
        observer = self._observer()
        observer.start()
        try:
            print(f"nvpipe: watching {self.source} for new clips -> {self.out} "
                  f"(Ctrl-C to stop)", file=self.log, flush=True)
            started = last_activity = last_scan = time.monotonic()
            self._rescan(started)
            while True:
                now = time.monotonic()
                if self._drain_events(now):
                    last_activity = now
                if now - last_scan >= RESCAN_S:
                    self._rescan(now)
                    last_scan = now
                for path in self._ready(now):
                    self._convert(path)
                    last_activity = time.monotonic()
                    if self.exit_after is not None and self.processed >= self.exit_after:
                        return self.summary
                if (self.idle is not None and not self._pending
                        and time.monotonic() - last_activity >= self.idle):
                    return self.summary
                time.sleep(POLL_S)
        finally:
            observer.stop()
            observer.join(timeout=5)


def watch(source: str, out: str, template: Job, **kwargs) -> BatchSummary:
    """Converts ``source``'s clips into ``out`` as they arrive (see the module docstring);
    ``template``: the job every clip's is made from (``batch.clip_job``); ``kwargs``:
    ``settle``, ``exit_after``, ``idle``, ``progress_factory``, ``log``, ``verbose``."""
    return Watcher(source, out, template, **kwargs).run()


__all__ = ["watch", "Watcher", "SETTLE_S", "CLOSE_CONFIRM_S"]
