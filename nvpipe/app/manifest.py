"""What a batch has completed, recorded by nvpipe itself: ``.nvpipe-batch.json`` per folder.

A batch marks each clip's outputs ``started`` before converting and ``complete`` once the
run committed them, with fingerprints of the input (path, size, mtime), of the settings
that shape the output, and of each output file (size, mtime) as written. Resume trusts
only that record, never a file's existence:

- ``complete``: recorded complete, same input and settings, the file as written -> skip;
- ``incomplete``: recorded but not complete (failed, interrupted, killed), or its file is
  gone -> redo, replacing the partial file (nvpipe's own);
- ``foreign``: a file nvpipe did not record (or one changed since) -> not replaced
  without ``--overwrite``;
- ``stale``: complete, but from another input or other settings -> not replaced without
  ``--overwrite``;
- ``absent``: nothing there -> convert.

The record is read and rewritten under a file lock (``filelock``: ``flock`` on POSIX,
``LockFileEx`` on Windows) and replaced atomically, so runs that share a folder
(``--jobs``, a cluster) never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from typing import Iterator, Optional

MANIFEST_NAME = ".nvpipe-batch.json"
COMPLETE, INCOMPLETE, FOREIGN, STALE, ABSENT = "complete", "incomplete", "foreign", "stale", "absent"


def file_fingerprint(path: str) -> Optional[dict]:
    """Size and modification time (ns) of a file or folder; None where nothing is."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    if os.path.isdir(path):  # a picture sequence: its pictures' count and newest mtime
        names = sorted(os.listdir(path))
        newest = max((os.stat(os.path.join(path, n)).st_mtime_ns for n in names), default=0)
        return {"size": len(names), "mtime_ns": newest}
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def settings_fingerprint(settings: dict) -> str:
    """A short hash of the settings that shape an output (JSON, keys sorted)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BatchManifest:
    """The record of one output folder. Paths in it are the outputs' names in that folder."""

    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        self.path = os.path.join(self.folder, MANIFEST_NAME)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        """The record, locked for read-modify-write; written back (atomically) on exit."""
        from filelock import FileLock

        with FileLock(os.path.join(self.folder, ".nvpipe-batch.lock")):
            entries = self._read()
            before = json.dumps(entries, sort_keys=True)
            yield entries
            if json.dumps(entries, sort_keys=True) != before:
                temporary = f"{self.path}.{os.getpid()}.tmp"
                with open(temporary, "w") as file:
                    json.dump({"version": 1, "outputs": entries}, file, indent=1, sort_keys=True)
                os.replace(temporary, self.path)

    def _read(self) -> dict:
        try:
            with open(self.path) as file:
                data = json.load(file)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable record: every output counts as unrecorded
        outputs = data.get("outputs") if isinstance(data, dict) else None
        return outputs if isinstance(outputs, dict) else {}

    def repair(self) -> Optional[str]:
        """A damaged record (not JSON, or not a record) is moved aside as
        ``.nvpipe-batch.json.damaged-<time>`` and rebuilt from what can be proven: the
        entries that still parse, are ``complete`` and whose output is exactly as they
        recorded it (size and mtime to the nanosecond). Every other output is then not
        trusted (``foreign``: never replaced without ``--overwrite``). Returns the note to
        print, or None where the record was sound (or absent)."""
        from filelock import FileLock

        with FileLock(os.path.join(self.folder, ".nvpipe-batch.lock")):
            try:
                with open(self.path, "rb") as file:
                    raw = file.read()
            except FileNotFoundError:
                return None
            except OSError as error:
                return f"the batch record {self.path} cannot be read ({error.strerror})"
            try:
                data = json.loads(raw)
                if isinstance(data, dict) and isinstance(data.get("outputs"), dict):
                    return None
            except ValueError:
                pass
            aside = f"{self.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(self.path, aside)
            proven = {name: entry for name, entry in _salvage(raw).items()
                      if entry.get("state") == COMPLETE and entry.get("output") is not None
                      and entry.get("output") == file_fingerprint(os.path.join(self.folder, name))}
            temporary = f"{self.path}.{os.getpid()}.tmp"
            with open(temporary, "w") as file:
                json.dump({"version": 1, "outputs": proven}, file, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        return (f"the batch record {self.path} was damaged: kept aside as "
                f"{os.path.basename(aside)}; rebuilt {len(proven)} entr"
                f"{'y' if len(proven) == 1 else 'ies'} whose outputs are as recorded; other "
                f"outputs there are not trusted (--overwrite redoes them)")

    def state(self, output: str, input_path: str, settings: str) -> str:
        """One of COMPLETE, INCOMPLETE, FOREIGN, STALE, ABSENT (see the module docstring)."""
        entry = self._read().get(_key(output))
        present = file_fingerprint(output)
        if entry is None:
            return ABSENT if present is None else FOREIGN
        if entry.get("state") != COMPLETE:
            return INCOMPLETE
        if present is None:
            return INCOMPLETE
        if present != entry.get("output"):
            return FOREIGN
        if entry.get("input") != _input_key(input_path) or entry.get("settings") != settings:
            return STALE
        return COMPLETE

    def mark_started(self, outputs: list[str], input_path: str, settings: str) -> None:
        with self._locked() as entries:
            for output in outputs:
                entries[_key(output)] = {
                    "state": "started", "input": _input_key(input_path), "settings": settings}

    def mark_complete(self, outputs: list[str], input_path: str, settings: str,
                      frames: int) -> None:
        with self._locked() as entries:
            for output in outputs:
                entries[_key(output)] = {
                    "state": COMPLETE, "input": _input_key(input_path), "settings": settings,
                    "frames": frames, "output": file_fingerprint(output)}


def _salvage(raw: bytes) -> dict:
    """The ``"name": {...}`` entries of a damaged record that still parse on their own."""
    text = raw.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    found = {}
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"\s*:\s*(?=\{)', text):
        try:
            entry, _ = decoder.raw_decode(text, match.end())
            name = json.loads(f'"{match.group(1)}"')
        except ValueError:
            continue
        if isinstance(entry, dict) and "state" in entry and name not in ("outputs",):
            found[name] = entry
    return found


def _key(output: str) -> str:
    return os.path.basename(os.path.normpath(output))


def _input_key(path: str) -> dict:
    return {"path": os.path.abspath(path), **(file_fingerprint(path) or {})}


def manifests_for(outputs: list[str]) -> dict[str, BatchManifest]:
    """The manifest of each output's folder, keyed by the output."""
    return {output: BatchManifest(os.path.dirname(os.path.abspath(os.path.normpath(output))))
            for output in outputs}


__all__ = ["BatchManifest", "manifests_for", "settings_fingerprint", "file_fingerprint",
           "COMPLETE", "INCOMPLETE", "FOREIGN", "STALE", "ABSENT", "MANIFEST_NAME"]
