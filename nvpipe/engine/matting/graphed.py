"""The matting network captured as a CUDA graph: ``MattingStage``'s CUDA implementation.

``GraphedMatting`` runs ``network.coefficients`` (the network on the low-resolution frames,
stopping before the full-size refiner tail) for ONE input shape: the input is copied into a
static buffer, the graph replays, and the recurrent states are updated inside the graph
(the copy of the new states over the old ones is captured with the network), so a call is
one copy plus one graph launch however many kernels the network has. It has the interface
of ``nvpipe.engine.matting.EagerMatting`` (``__call__``, ``state``, ``load_state``, ``reset``);
``nvpipe.engine.matting.MattingStage`` chooses between them (one graph per chunk shape, eager where
capture fails) and is what the pipeline uses.

Streams and events (what a caller must know):
- The graph runs on ``stream`` (the stage's network stream; a new one if not given).
  ``__call__`` makes that stream wait for the caller's current stream (so work that produced
  ``src_sm`` there is complete), copies, replays, then makes the caller's current stream
  wait for it. Both are event waits, never device-wide syncs, and both are skipped when the
  caller already runs on ``stream``.
- The returned ``(coeff_a, coeff_b)`` are views of static buffers: valid until the next
  ``__call__``/``reset``/``load_state`` of the same instance. The next call waits for the
  caller's current stream before overwriting them, so reading them on that stream is safe;
  a consumer on ANOTHER stream must make the caller's stream wait for it first.
- ``src_sm`` may be freed as soon as the call returns (it is marked as used by the
  graph's stream for the caching allocator).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from nvpipe.engine.matting._common import (as_coefficients, check_chunk_shape, coefficient_kwargs,
                                           prepare_network, recurrent_state_shapes)


class GraphedMatting:
    """``network.coefficients`` for one input shape under a CUDA graph (see module docstring).

    Args:
        network: an RVM network (BatchNorm folded); moved IN PLACE to ``device``, ``dtype``
            and channels_last.
        src_sm_shape: ``(3, h, w)`` or ``(T, 3, h, w)``: one graph per shape (T frames are
            one chunk: the GRUs step over them inside the graph).
        device: a CUDA device.
        dtype: the network's precision (float16: tensor cores, half the memory traffic).
        downsample_ratio: the job's ratio (1 means no refiner), or None for the default.
        warmup: eager runs on the side stream before capture (cuDNN autotuning, lazy init);
            3 is what torch's own examples use.
        stream: the stream to capture and replay on (a new one when None).
        coefficient_format: the outputs' memory format, made inside the graph (channels_last:
            the Triton tail's vector loads).

    ``__call__(src_sm)`` takes exactly ``src_sm_shape``, RGB in [0, 1], any float dtype, on
    ``device``; returns ``(coeff_a, coeff_b)``, ``[4, h, w]`` or ``[T, 4, h, w]`` in
    ``dtype``: views of static outputs, valid until the next call.
    """

    def __init__(self, network: torch.nn.Module, src_sm_shape: Sequence[int],
                 device: torch.device | str = "cuda", dtype: torch.dtype = torch.float16,
                 downsample_ratio: Optional[float] = None, warmup: int = 3,
                 variant: Optional[str] = None, stream: Optional[torch.cuda.Stream] = None,
                 coefficient_format: torch.memory_format = torch.channels_last):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"GraphedMatting needs a CUDA device, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.shape = check_chunk_shape(src_sm_shape)
        self.dtype = dtype
        self.network = prepare_network(network, self.device, dtype)
        self.variant = variant or getattr(network, "variant", "mobilenetv3")
        self._kwargs = coefficient_kwargs(network, downsample_ratio)
        self.coefficient_format = coefficient_format
        self.stream = stream if stream is not None else torch.cuda.Stream(self.device)
        self._capture(max(1, warmup))

    def _enter(self):
        """``(caller, needs_waits)``: the caller's current stream, and whether it is not ours."""
        caller = torch.cuda.current_stream(self.device)
        return caller, caller != self.stream

    @torch.inference_mode()
    def _capture(self, warmup: int) -> None:
        height, width = self.shape[-2:]
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream()
            self._input = torch.zeros((1, *self.shape), device=self.device, dtype=self.dtype)
            self._states = [torch.zeros(shape, device=self.device, dtype=self.dtype)
                            for shape in recurrent_state_shapes(height, width, self.variant)]
            self.stream.wait_stream(caller)
            with torch.cuda.stream(self.stream):
                for _ in range(warmup):
                    _, _, *new_states = self.network.coefficients(self._input, *self._states,
                                                                  **self._kwargs)
                    for old, new in zip(self._states, new_states):
                        if old.shape != new.shape:
                            raise RuntimeError(
                                f"network returned a state of {tuple(new.shape)}, expected "
                                f"{tuple(old.shape)} for input {self.shape}")
                        old.copy_(new)
                for s in self._states:
                    s.zero_()
            self.stream.synchronize()  # once, at start-up: warm-up done before capture
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: other threads (decode, encode) may keep running CUDA work while
            # this thread captures; only this thread's unsafe calls are forbidden.
            with torch.cuda.graph(self.graph, stream=self.stream,
                                  capture_error_mode="thread_local"):
                coeff_a, coeff_b, *new_states = self.network.coefficients(
                    self._input, *self._states, **self._kwargs)
                for old, new in zip(self._states, new_states):
                    old.copy_(new)
                self._coeff_a = as_coefficients(coeff_a, self.coefficient_format)
                self._coeff_b = as_coefficients(coeff_b, self.coefficient_format)

    @torch.inference_mode()
    def __call__(self, src_sm: torch.Tensor, src=None) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(src_sm.shape) != self.shape:
            raise ValueError(f"this graph was captured for {self.shape}, got {tuple(src_sm.shape) = }")
        if src_sm.device != self.device:
            raise ValueError(f"src_sm must be on {self.device}, got {src_sm.device}")
        caller, waits = self._enter()
        if waits:
            self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            self._input[0].copy_(src_sm)
            self.graph.replay()
        if waits:
            src_sm.record_stream(self.stream)
            caller.wait_stream(self.stream)
        return self._coeff_a, self._coeff_b

    def state(self) -> tuple[torch.Tensor, ...]:
        """The static r1..r4 buffers (``[1, C, h_k, w_k]``): valid until the next call."""
        return tuple(self._states)

    @torch.inference_mode()
    def load_state(self, states: Sequence[torch.Tensor]) -> None:
        """Copy ``states`` (another instance's ``state()``, same frame size) into this graph's."""
        if len(states) == 0:
            return self.reset()
        caller, waits = self._enter()
        if waits:
            self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            for own, other in zip(self._states, states):
                own.copy_(other)
        if waits:
            caller.wait_stream(self.stream)

    @torch.inference_mode()
    def reset(self) -> None:
        """Zero the recurrent states (ordered after the caller's pending work)."""
        caller, waits = self._enter()
        if waits:
            self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            for s in self._states:
                s.zero_()
        if waits:
            caller.wait_stream(self.stream)


__all__ = ["GraphedMatting"]
