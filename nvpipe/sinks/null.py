"""A sink that discards frames: ``nvpipe run in.mp4 /dev/null`` (like FFmpeg's ``-f null``).

For measuring the pipeline without an encoder (``bench/gpu_bench.py``'s null-sink end to
end) and for checking that an input converts. Every frame is still decoded, matted and
composited (NV12, the layout an encoder takes); on CUDA it stays on the GPU, and the
encode thread waits on each frame's ready event before "writing" it, so the run's time
includes all of the GPU work.
"""

from __future__ import annotations

import os

from nvpipe.frames import StreamInfo, untagged_color
from nvpipe.job import OutputSpec
from nvpipe.sinks._base import SinkBase


def is_null_output(path) -> bool:
    """True for the null device (``/dev/null``; ``nul`` on Windows)."""
    return str(path) == os.devnull


class NullSink(SinkBase):
    """Takes NV12 frames (CPU or CUDA) of ``info``'s size and keeps only their count."""

    pixel_format = "nv12"
    accepts_cuda = True
    encoder_name = "none (null output: frames discarded)"

    def __init__(self, spec: OutputSpec, info: StreamInfo, *, staging=None, audio_from=None):
        self.spec = spec
        self.color = untagged_color(info.height)
        self.frames_written = 0

    def write(self, array, pts) -> None:
        self.frames_written += 1

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        pass


__all__ = ["NullSink", "is_null_output"]
