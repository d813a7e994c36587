"""Reused frame buffers for the CPU path.

A fresh 1080p float32 frame (25 MB) costs about 6,000 first-touch page faults, measured
here at 12-15 ms a frame of system time, more than the conversion itself (2.6 ms). A ring
of buffers, longer than the queue they travel through, is reused instead. On CUDA the
caching allocator already reuses memory, so rings are only used on the CPU.
"""

from __future__ import annotations

import torch


class BufferRing:
    """Hands out ``size`` buffers per shape in turn. A buffer comes round again only after
    ``size - 1`` others, so ``size`` must exceed how many can be alive at once downstream
    (queue depth + frames held by the consumer + the one being written)."""

    def __init__(self, size: int, *, pin_memory: bool = False):
        """``pin_memory``: page-locked host buffers, the targets of asynchronous copies from
        the GPU (allocating them costs milliseconds, so they are reused too)."""
        if size < 2:
            raise ValueError(f"a ring needs at least 2 buffers, got {size}")
        self.size = size
        self.pin_memory = pin_memory
        self._buffers: dict[tuple, list[torch.Tensor]] = {}
        self._next: dict[tuple, int] = {}

    def take(self, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device | str = "cpu") -> torch.Tensor:
        device = torch.device(device)
        if device.type != "cpu":  # the CUDA caching allocator reuses memory already
            return torch.empty(shape, dtype=dtype, device=device)
        key = (tuple(shape), dtype)
        buffers = self._buffers.setdefault(key, [])
        index = self._next.get(key, 0)
        if index == len(buffers):
            buffers.append(torch.empty(shape, dtype=dtype, pin_memory=self.pin_memory))
        self._next[key] = (index + 1) % self.size
        return buffers[index]
