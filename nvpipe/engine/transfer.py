"""How frames cross between the pipeline's threads: one implementation per device.

The runner picks one per job (:func:`transfer_for`) and never asks the device again.

- :class:`HostTransfer` (CPU): everything is host memory on one timeline; nothing to wait
  for or copy. Stage threads run at a lower priority (see ``STAGE_NICE``).
- :class:`CudaTransfer`: the decode thread converts on a stream of its own, the network
  and compose kernels run on another, and device-to-host copies for CPU encoders on a
  third, each ordered by events. Events are blocking, so a waiting encode thread sleeps
  instead of spinning on a core the CPU encoder needs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Optional

import torch

from nvpipe.engine.buffers import BufferRing

# Niceness of the decode and encode threads on the CPU path. torch's OpenMP workers wait
# for the slowest of them at every parallel region, so one worker preempted by the encoder
# stalls the whole network; at nice 19 the stages fill the network's gaps instead (1080p,
# ratio 0.25, 2 cores, interleaved runs: 5.9 fps at nice 0, 6.4 at 10, 6.8 at 19). The
# bounded queues keep them from starving: the network waits when they fall behind.
STAGE_NICE = 19


def lower_thread_priority() -> None:
    """Lowers this thread's priority (Linux: per-thread nice)."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STAGE_NICE)
        except OSError:
            pass


class HostTransfer:
    """The CPU pipeline: frames are host tensors; ``ready`` markers are None."""

    def stage_thread_started(self) -> None:
        lower_thread_priority()

    def decode_stream(self):
        return contextlib.nullcontext()

    def converted(self) -> None:
        return None

    def network_stream(self):
        return contextlib.nullcontext()

    def network_waits_for(self, ready: list, tensors: list[torch.Tensor]) -> None:
        pass

    def to_sinks(self, outputs: dict[str, torch.Tensor]) -> tuple[dict, None]:
        return {path: array.numpy() for path, array in outputs.items()}, None

    def wait(self, ready) -> None:
        pass


class CudaTransfer:
    """The GPU pipeline's streams and events (see the module docstring).

    ``on_device``: the outputs whose sinks take CUDA tensors (NVENC, null); the others get
    a pinned host copy from a ring of ``ring_size`` buffers per output. ``network_stream``:
    the matting stage's own stream (``MattingStage.stream``), where compose runs too.
    """

    def __init__(self, device: torch.device, on_device: set[str], ring_size: int,
                 network_stream: torch.cuda.Stream):
        self.device = device
        self.on_device = on_device
        self._decode = torch.cuda.Stream(device)
        self._network = network_stream
        self._copy = torch.cuda.Stream(device)
        self._pinned: dict[str, BufferRing] = {}
        self._ring_size = ring_size

    def stage_thread_started(self) -> None:
        torch.cuda.set_device(self.device)

    def decode_stream(self):
        return torch.cuda.stream(self._decode)

    def converted(self) -> torch.cuda.Event:
        ready = torch.cuda.Event(blocking=True)
        ready.record(self._decode)
        return ready

    def network_stream(self):
        return torch.cuda.stream(self._network)

    def network_waits_for(self, ready: list, tensors: list[torch.Tensor]) -> None:
        """The network stream waits for the conversions; the caching allocator learns that
        the decode stream's tensors are used there."""
        for event in ready:
            self._network.wait_event(event)
        for tensor in tensors:
            tensor.record_stream(self._network)

    def to_sinks(self, outputs: dict[str, torch.Tensor]) -> tuple[dict, torch.cuda.Event]:
        """Host copies (on the copy stream, after the compose kernels) for CPU sinks, the
        tensors themselves for CUDA sinks; the event after which all of them are ready."""
        composed = torch.cuda.Event()
        composed.record(self._network)
        self._copy.wait_event(composed)
        delivered = {}
        with torch.cuda.stream(self._copy):
            for path, array in outputs.items():
                if path in self.on_device:
                    delivered[path] = array
                    continue
                ring = self._pinned.setdefault(path, BufferRing(self._ring_size, pin_memory=True))
                host = ring.take(tuple(array.shape), array.dtype)
                array.record_stream(self._copy)
                host.copy_(array, non_blocking=True)
                delivered[path] = host
        ready = torch.cuda.Event(blocking=True)
        ready.record(self._copy)
        return delivered, ready

    def wait(self, ready: Optional[torch.cuda.Event]) -> None:
        if ready is not None:
            ready.synchronize()


def transfer_for(device: torch.device, sinks: dict, ring_size: int,
                 network_stream: Optional[torch.cuda.Stream] = None):
    """The transfer of a job on ``device`` whose outputs are ``sinks`` (path -> Sink), its
    network on ``network_stream`` (CUDA)."""
    if device.type == "cuda":
        return CudaTransfer(device, {path for path, sink in sinks.items() if sink.accepts_cuda},
                            ring_size, network_stream)
    return HostTransfer()


__all__ = ["HostTransfer", "CudaTransfer", "transfer_for", "lower_thread_priority"]
