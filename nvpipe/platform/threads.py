"""Threading environment and thread budget of the CPU pipeline, applied before torch loads.

On 2 cores, torch's OpenMP workers spin-wait between parallel regions by default and
take the cores from the decode and encode threads: `nvpipe run` on 1080p at ratio 0.25
measured 6.2 fps spinning, 7.0 fps with OMP_WAIT_POLICY=PASSIVE (same run, this machine).
ONNX Runtime's pool spins too unless told (``session.intra_op.allow_spinning=0``, set by
``nvpipe.engine.matting.ort.session_for``); KMP_BLOCKTIME=0 does the same for an Intel
OpenMP runtime where torch was built with one.

``budget(cores)`` shares the cores between the network's intra-op threads, the x264
encoder's threads and the C tail's row bands.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional


def tune_for_pipeline() -> None:
    """Sets OMP_WAIT_POLICY=PASSIVE and KMP_BLOCKTIME=0 unless the user set them or torch
    is already loaded (OpenMP reads them once, when the runtime starts)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("KMP_BLOCKTIME", "0")


@dataclass(frozen=True)
class ThreadBudget:
    """Threads for each CPU stage. ``network``: the network's intra-op threads (torch and
    ONNX Runtime); ``encoder``: x264's threads (0: FFmpeg's automatic count); ``tail``: the
    C kernels' row bands (convert and compose)."""

    cores: int
    network: int
    encoder: int
    tail: int


def budget(cores: Optional[int] = None) -> ThreadBudget:
    """The thread budget for ``cores`` (default: the CPUs this process may run on).

    - The network takes every core: it is most of a frame's work (480x270: ~55-60 ms of
      ~75 ms on 2 cores), its threads sleep when idle, and the other stages run in the
      gaps between its parallel regions (decode, convert, compose, encode are separate
      threads, joined by queues).
    - x264: 1 thread up to 4 cores (measured 40 vs 55 ms/frame, veryfast 1080p, 2 cores:
      frame threads fight the network for the cores), else 0 (FFmpeg's automatic count).
    - The C tail: every core (row bands; it runs between network calls on the main thread).
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    cores = max(1, int(cores))
    encoder = 1 if cores <= 4 else 0
    return ThreadBudget(cores=cores, network=cores, encoder=encoder, tail=cores)
