"""Python's garbage collector in an nvpipe process: the ``nvpipe`` program and its batch
workers (``nvpipe.app.cli.program``, ``nvpipe.app.schedule``). Never in a library user's
process: ``import nvpipe`` leaves the collector as it is.

Start-up makes about 180 000 objects that live as long as the process (most of them torch's
import), and the collector's default (a pass every 700 net allocations, 412 passes) scans
them again and again; the interpreter's exit then walks them all once more. Measured on the
2-core VM, ``nvpipe run`` on a 4-frame 640x360 clip: 0.19 -> 0.05 s of collection at
start-up, 0.47 -> 0.12 s of exit.
"""

from __future__ import annotations

import gc

# The youngest generation is collected every this many net allocations (CPython: 700).
# Cyclic garbage is still collected, a little later; nothing per frame waits on it.
YOUNG_THRESHOLD = 50_000


def start_program() -> None:
    """Where the process starts: the collector's passes spaced out (module docstring)."""
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def end_program() -> None:
    """Where the process is about to end, its work written and closed: every object frozen,
    so the interpreter's exit does not scan them (frozen objects are never collected)."""
    gc.freeze()


__all__ = ["start_program", "end_program", "YOUNG_THRESHOLD"]
