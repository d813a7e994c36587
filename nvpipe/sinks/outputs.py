"""A run's outputs as one transaction: staged, locked, then committed or discarded together.

The output policy, written once (``docs/design.md`` states the same):

- Every output is written under a staging name of its own beside its target
  (``.NAME.<run id>.partial.EXT``; a folder ``.NAME.<run id>.partial`` for picture
  sequences), while a lock (``.NAME.nvpipe-lock``: an OS file lock through ``filelock``,
  ``flock`` on Linux and macOS, ``LockFileEx`` on Windows) keeps every other nvpipe run
  off that target: a second writer is refused with one line, never interleaved.
- :meth:`Outputs.commit` (the run completed): every sink finishes its file; only when all
  did is each moved onto its target. An existing target is replaced only with
  ``overwrite``, and then by a complete output; a target that appeared during the run is
  never replaced without it. One output failing fails them all; a failed move puts back
  what the earlier moves replaced.
- :meth:`Outputs.discard` (the run failed): every staged file is removed; targets untouched.
- :meth:`Outputs.keep_partial` (interrupted, or the user asked to keep partial output):
  the frames done are finished as playable files and moved onto targets that did not
  exist; an existing target is never replaced by a partial one (that partial is removed).
- Stream outputs (standard output, URLs: ``nvpipe.sinks.stream``) cannot be staged or
  taken back: they are written as the frames come, not locked, and every ending finishes
  the stream (``streamed``).

Leftovers of a killed run (a staging file, a lock file) carry the hidden names above; the
next run that takes the same target's lock removes them.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from nvpipe.errors import OutputBlocked, OutputError
from nvpipe.frames import StreamInfo
from nvpipe.job import OutputSpec

# What happened to an output at the end of a run (``Placed.outcome``).
WRITTEN = "written"            # complete, at its target
KEPT_PARTIAL = "kept partial"  # the frames done, at a target that did not exist
LEFT_UNCHANGED = "left unchanged"  # an existing target kept; the partial output removed
NOT_WRITTEN = "not written"    # nothing at the target (discarded, or no frames)
DISCARDED_NULL = "discarded"   # the null output
STREAMED = "streamed"          # standard output or a URL: sent as it went, never staged


@dataclass
class Placed:
    """What one output of a run became: its target path, frames in it, and the outcome."""

    path: str
    frames: int
    outcome: str

    def describe(self) -> str:
        if self.outcome == STREAMED:
            return f"{self.path} ({self.frames} frames streamed)"
        if self.outcome in (WRITTEN, KEPT_PARTIAL):
            extra = ", incomplete" if self.outcome == KEPT_PARTIAL else ""
            return f"{self.path} ({self.frames} frames{extra})"
        return f"{self.path} {self.outcome}"


def same_file(a: str, b: str) -> bool:
    """True when two paths name the same file or folder (existing or not)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _os_reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


class TargetLock:
    """An exclusive OS lock on a hidden lock file beside a target, held for the run.

    The lock is ``filelock``'s native one on a descriptor we own (``flock`` on POSIX,
    ``LockFileEx`` on Windows), so it works wherever nvpipe runs. The operating system drops
    it when the process dies, so a killed run never blocks the next one; the file itself is
    removed on release (on Windows, where an open file cannot be removed, after closing it).
    """

    def __init__(self, folder: str, name: str, target: str):
        self.path = os.path.join(folder, f".{name}.nvpipe-lock")
        self.target = target
        self._fd: Optional[int] = None

    def _holder(self, fd: int) -> str:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return os.read(fd, 32).decode(errors="replace").strip() or "?"
        except OSError:  # Windows: the holder's locked byte cannot be read
            return "?"

    def acquire(self) -> None:
        """Raises :class:`OutputBlocked` when another run holds it, :class:`OutputError`
        when the folder is not writable."""
        from filelock import lock_descriptor

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise OutputError(f"cannot write to {os.path.dirname(self.path)} "
                                  f"({_os_reason(error)})") from None
            try:
                locked = lock_descriptor(fd, blocking=False)
            except OSError as error:
                os.close(fd)
                raise OutputError(f"cannot lock {self.path} ({_os_reason(error)})") from None
            if not locked:
                holder = self._holder(fd)
                os.close(fd)
                raise OutputBlocked(f"{self.target} is being written by another nvpipe run "
                                    f"(pid {holder}); wait for it or choose another output")
            try:  # a holder that released between our open and lock unlinked this file
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        # The pid goes after the first byte: Windows locks byte 0 for the holder alone.
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f" {os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        removed = True
        try:
            os.unlink(self.path)
        except OSError:
            removed = False
        os.close(self._fd)
        self._fd = None
        if not removed:  # Windows: removable once closed
            try:
                os.unlink(self.path)
            except OSError:
                pass


class _Target:
    """Where one output goes: a file, a picture sequence (folder + name pattern) or the null
    device. Plans its staging name, checks it, and moves the staged result into place."""

    def __init__(self, spec: OutputSpec, info: Optional[StreamInfo], run_id: str):
        from nvpipe.sinks import is_null_output, is_sequence_output, is_stream_output

        self.spec = spec
        self.path = str(spec.path)
        self.kind = ("null" if is_null_output(self.path)
                     else "stream" if is_stream_output(self.path)
                     else "sequence" if is_sequence_output(self.path) else "file")
        self.lock: Optional[TargetLock] = None
        self.staging: Optional[str] = None
        self._backup: Optional[str] = None
        self._placed_new = False
        if self.kind in ("null", "stream"):
            return
        if self.kind == "sequence":
            from nvpipe.sinks.images import sequence_location

            self.folder, self.pattern = sequence_location(self.path)
            parent, name = os.path.split(self.folder)
            self._parent, self._name = parent, name
            self._stem, self._extension = name, ""
        else:
            self.file = os.path.abspath(self.path)
            self._parent, self._name = os.path.split(self.file)
            self._stem, self._extension = os.path.splitext(self._name)
        self._run_id = run_id
        self._info = info

    # -- before the run --------------------------------------------------------------------
    def exists(self) -> bool:
        """An existing output: the file, or pictures matching the pattern in the folder."""
        if self.kind == "file":
            return os.path.lexists(self.file)
        if self.kind == "sequence":
            return bool(self._existing_pictures())
        return False

    def _existing_pictures(self) -> list[str]:
        from nvpipe.sources.images import pattern_regex

        if not os.path.isdir(self.folder):
            return []
        regex = pattern_regex(self.pattern)
        return [name for name in os.listdir(self.folder) if regex.match(name)]

    def check(self, overwrite: bool) -> None:
        """Refuses, before anything is written: the input as output, a missing folder, a
        folder where a file goes (or the reverse), an existing output without overwrite."""
        if self.kind in ("null", "stream"):
            return
        info = self._info
        if info is not None and info.path and (same_file(self.path, info.path) or (
                self.kind == "sequence" and same_file(self.folder, info.path))):
            raise OutputError(f"output is the input: {self.path}")
        if not os.path.isdir(self._parent):
            raise OutputError(f"output folder does not exist: {self._parent}")
        if self.kind == "file" and os.path.isdir(self.file):
            raise OutputError(f"output is a folder, not a file: {self.path} (a PNG sequence "
                              f"goes to a name without extension, ending in /, or a %05d.png pattern)")
        if self.kind == "sequence" and os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise OutputError(f"output folder is a file: {self.folder}")
        if self.exists() and not overwrite:
            what = (f"{self.path} holds {len(self._existing_pictures())} frames"
                    if self.kind == "sequence" else self.path)
            raise OutputBlocked(f"output exists: {what} (use --overwrite to replace it)")

    def take_lock(self) -> None:
        if self.kind in ("null", "stream"):
            return
        self.lock = TargetLock(self._parent, self._name, self.path)
        self.lock.acquire()
        self._remove_leftovers()
        suffix = f".{self._run_id}.partial{self._extension}"
        self.staging = os.path.join(self._parent, f".{self._stem}{suffix}")
        if self.kind == "sequence":
            try:
                os.mkdir(self.staging)
            except OSError as error:
                raise OutputError(f"cannot write to {self._parent} ({_os_reason(error)})") from None

    def _remove_leftovers(self) -> None:
        """Staging files of runs that died: nobody else can hold this target's lock."""
        leftover = re.compile(re.escape(f".{self._stem}.") + r"(nvpipe-\d+-[0-9a-f]{6}\.(old\.)?)?"
                              + re.escape(f"partial{self._extension}") + "$")
        try:
            names = os.listdir(self._parent)
        except OSError:
            return
        for name in names:
            if leftover.match(name):
                _remove_path(os.path.join(self._parent, name))

    # -- after the run ---------------------------------------------------------------------
    def place(self, *, replace: bool) -> None:
        """Moves the staged output onto the target. ``replace``: an existing target may go."""
        if self.kind == "file":
            self._place_file(replace)
        elif self.kind == "sequence":
            self._place_sequence(replace)

    def _place_file(self, replace: bool) -> None:
        if os.path.lexists(self.file):
            if not replace:
                raise OutputBlocked(f"{self.path} appeared while converting; it was not replaced")
            self._backup = os.path.join(self._parent, f".{self._stem}.{self._run_id}.old.partial"
                                                      f"{self._extension}")
            try:  # kept until every output of the run is in place
                os.link(self.file, self._backup)
            except OSError:  # a filesystem without hard links
                os.rename(self.file, self._backup)
            os.replace(self.staging, self.file)
            return
        try:
            os.link(self.staging, self.file)  # fails if the target appeared: never replaced
            os.unlink(self.staging)
        except FileExistsError:
            raise OutputBlocked(f"{self.path} appeared while converting; it was not replaced") from None
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            os.rename(self.staging, self.file)  # a filesystem without hard links
        self._placed_new = True

    def _place_sequence(self, replace: bool) -> None:
        old = self._existing_pictures()
        if old and not replace:
            raise OutputBlocked(f"{self.path} gained pictures while converting; they were not replaced")
        if not os.path.isdir(self.folder):
            os.rename(self.staging, self.folder)
            self._placed_new = True
            return
        new = set(os.listdir(self.staging))
        for name in sorted(new):
            os.replace(os.path.join(self.staging, name), os.path.join(self.folder, name))
        for name in old:
            if name not in new:
                os.remove(os.path.join(self.folder, name))
        os.rmdir(self.staging)

    def undo_place(self) -> None:
        """Puts back what :meth:`place` replaced (files), or removes what it created."""
        if self.kind != "file":
            return
        if self._backup is not None:
            os.replace(self._backup, self.file)
            self._backup = None
        elif self._placed_new:
            _remove_path(self.file)

    def finish_place(self) -> None:
        if self._backup is not None:
            _remove_path(self._backup)
            self._backup = None

    def remove_staging(self) -> None:
        if self.staging is not None:
            _remove_path(self.staging)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class Outputs:
    """The sinks of one run, opened under the policy of this module's docstring.

    ``Outputs(specs, info, overwrite=..., open_sink=...)`` checks every target, takes its
    lock and opens its sink on the staging path; ``sinks`` maps each output path to its
    sink. End with exactly one of :meth:`commit`, :meth:`keep_partial` or :meth:`discard`
    (used as a context manager, an exception discards).
    """

    def __init__(self, specs: list[OutputSpec], info: StreamInfo, *, overwrite: bool,
                 open_sink: Callable[..., object], audio_from: Optional[str] = None):
        paths = [os.path.abspath(str(spec.path)) for spec in specs]
        if len(set(paths)) != len(paths):
            raise OutputError("two outputs have the same path: " + ", ".join(str(s.path) for s in specs))
        self.overwrite = overwrite
        run_id = f"nvpipe-{os.getpid()}-{secrets.token_hex(3)}"
        self._targets = [_Target(spec, info, run_id) for spec in specs]
        self.sinks: dict[str, object] = {}
        self._ended = False
        self._finish_errors: list[str] = []
        try:
            for target in self._targets:
                target.check(overwrite)
            for target in self._targets:
                target.take_lock()
                self.sinks[target.path] = open_sink(target.spec, info, staging=target.staging,
                                                    audio_from=audio_from)
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> "Outputs":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and not self._ended:
            self.discard()

    def _finish_all(self, keep_partial: bool = False) -> list[_Target]:
        """Finishes every sink's file in its staging place; the first failure discards all,
        unless ``keep_partial``: then the targets that failed (a full disk) are returned."""
        failed = []
        for target in self._targets:
            sink = self.sinks.get(target.path)
            try:
                sink.finish()
            except (OutputError, OSError) as error:
                if not keep_partial:
                    self.discard()
                    raise
                failed.append(target)
                self._finish_errors.append(str(error) if isinstance(error, OutputError) else
                                           f"finishing {target.path} failed "
                                           f"({_os_reason(error)})")
            except BaseException:
                self.discard()
                raise
        return failed

    def commit(self, *, keep_partial: bool = False) -> list[Placed]:
        """The run completed: all outputs onto their targets, or none (see the module doc).
        With ``keep_partial`` an output that cannot be finished (its disk filled) is
        dropped and the others are kept as by :meth:`keep_partial`; the ``OutputError``
        then carries their outcomes as ``placed``.

        Raises:
            OutputError: an output could not be finished or placed (nothing is left then,
                unless ``keep_partial``).
        """
        failed = self._finish_all(keep_partial)
        if failed:
            placed = self.keep_partial(failed=[target.path for target in failed])
            error = OutputError("; ".join(self._finish_errors))
            error.placed = placed
            raise error
        placed: list[_Target] = []
        try:
            for target in self._targets:
                target.place(replace=self.overwrite)
                placed.append(target)
        except BaseException as error:
            for target in reversed(placed):
                target.undo_place()
            self.discard()
            if isinstance(error, OSError):
                raise OutputError(f"moving the outputs into place failed "
                                  f"({_os_reason(error)}); nothing was replaced") from None
            raise
        for target in placed:
            target.finish_place()
        result = [self._placed(target, STREAMED if target.kind == "stream" else WRITTEN)
                  for target in self._targets]
        self._end()
        return result

    def keep_partial(self, failed: Sequence[str] = ()) -> list[Placed]:
        """Keeps the frames done as playable files where no target existed (see the module
        docstring); outputs with no frame, or over an existing target, or named in
        ``failed`` (their writing or finishing failed: a full disk), are removed."""
        keep = [t for t in self._targets if t.kind not in ("null", "stream")
                and self.sinks[t.path].frames_written > 0 and not t.exists()
                and t.path not in failed]
        result = []
        for target in self._targets:
            sink = self.sinks[target.path]
            if target in keep:
                continue
            if target.kind == "stream":
                result.append(self._end_stream(target))
                continue
            sink.discard()
            outcome = (DISCARDED_NULL if target.kind == "null"
                       else LEFT_UNCHANGED if target.exists() else NOT_WRITTEN)
            result.append(self._placed(target, outcome))
        # Each output is finished on its own: one that cannot be (its disk filled) is
        # dropped, and the others keep their frames.
        finished = []
        for target in keep:
            try:
                self.sinks[target.path].finish()
                finished.append(target)
            except (OutputError, OSError):
                self.sinks[target.path].discard()
                target.remove_staging()
                result.append(self._placed(target, LEFT_UNCHANGED if target.exists()
                                           else NOT_WRITTEN))
        keep = finished
        try:
            for target in keep:
                target.place(replace=False)
                result.append(self._placed(target, KEPT_PARTIAL))
        except (OutputError, OSError):
            for target in keep:
                target.undo_place()
            self.discard()
            return [self._placed(t, STREAMED if t.kind == "stream" else
                                 NOT_WRITTEN if t.kind != "null" else DISCARDED_NULL)
                    for t in self._targets]
        self._end()
        order = {target.path: i for i, target in enumerate(self._targets)}
        return sorted(result, key=lambda placed: order[placed.path])

    def discard(self) -> list[Placed]:
        """The run failed: every staged output removed, every target as it was. Never raises."""
        result = []
        for target in self._targets:
            sink = self.sinks.get(target.path)
            if sink is not None and target.kind == "stream":
                result.append(self._end_stream(target))
                continue
            if sink is not None:
                try:
                    sink.discard()
                except Exception:  # noqa: BLE001 - cleanup; the staging path goes below
                    pass
            target.remove_staging()
            result.append(self._placed(target, DISCARDED_NULL if target.kind == "null"
                                       else LEFT_UNCHANGED if target.exists() else NOT_WRITTEN))
        self._end()
        return result

    def _end_stream(self, target: _Target) -> Placed:
        """A stream ends the same way however the run ended: what was sent stays sent, and
        the stream is finished (its trailer written) where it can be."""
        sink = self.sinks[target.path]
        try:
            if sink.frames_written:
                sink.finish()
        except Exception:  # noqa: BLE001 - a reader that went away: nothing left to do
            pass
        sink.discard()
        return self._placed(target, STREAMED if sink.frames_written else NOT_WRITTEN)

    def _placed(self, target: _Target, outcome: str) -> Placed:
        sink = self.sinks.get(target.path)
        frames = sink.frames_written if sink is not None else 0
        return Placed(target.path, frames if outcome in (WRITTEN, KEPT_PARTIAL, STREAMED) else 0,
                      outcome)

    def _end(self) -> None:
        self._ended = True
        for target in self._targets:
            target.remove_staging()
            target.release()


def clean_leftovers(path: str) -> bool:
    """Removes the hidden staging files and the lock that runs which died (a lost Ray node)
    left beside the output ``path``, unless a live run holds its lock. True when cleaned."""
    target = _Target(OutputSpec(str(path)), None, f"nvpipe-{os.getpid()}-clean0")
    if target.kind in ("null", "stream"):
        return False
    try:
        target.take_lock()  # removes the leftovers; a live run's lock refuses
    except OutputError:
        return False
    target.remove_staging()
    target.release()
    return True


def _remove_path(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


__all__ = ["Outputs", "Placed", "TargetLock", "same_file", "clean_leftovers", "WRITTEN", "KEPT_PARTIAL",
           "LEFT_UNCHANGED", "NOT_WRITTEN", "STREAMED"]
