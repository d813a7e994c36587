"""The ``nvpipe`` program's own process (``nvpipe.app.cli.program``) and its batch workers
(``nvpipe.app.schedule``): what they set for themselves where they start and where they end.
Never in a library user's process: ``import nvpipe`` leaves all of this as it is.

- Python's garbage collector. Start-up makes about 180 000 objects that live as long as the
  process (most of them torch's import); the collector's default (a pass every 700 net
  allocations) scanned them in 412 passes, and the interpreter's exit walked them all once
  more. Measured on the 2-core VM: ``nvpipe run`` on a 4-frame 640x360 clip, 0.19 -> 0.05 s
  of collection at start-up; a process that imported torch, 0.47 -> 0.12 s of exit.
- torch's scan of the installed packages' entry points for out-of-tree device backends
  (``TORCH_DEVICE_BACKEND_AUTOLOAD``): nvpipe runs on torch's own CPU and CUDA backends;
  0.07 s of torch's import.
"""

from __future__ import annotations

import gc
import os
import sys

# The youngest generation is collected every this many net allocations (CPython: 700).
# Cyclic garbage is still collected, a little later; nothing per frame waits on it (a run's
# frames allocate no cycles: with the collector off, RSS stays flat over 240 frames).
YOUNG_THRESHOLD = 50_000


def start_program() -> None:
    """Where the process starts, before torch loads (module docstring)."""
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    if "torch" not in sys.modules:
        os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")


def end_program() -> None:
    """Where the process is about to end, its work written and closed: every object frozen,
    so the interpreter's exit does not scan them (frozen objects are never collected)."""
    gc.freeze()


__all__ = ["start_program", "end_program", "YOUNG_THRESHOLD"]
