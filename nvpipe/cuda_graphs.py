"""The matting network captured as a CUDA graph, with an eager twin of the same interface.

``GraphedMatting`` runs ``network.coefficients`` (the network on the low-resolution frames,
stopping before the full-size refiner tail) for ONE input shape: the input is copied into a
static buffer, the graph replays, and the recurrent states are updated inside the graph
(the copy of the new states over the old ones is captured with the network), so a call is
one copy plus one graph launch however many kernels the network has.

Streams and events (what a caller must know):
- Each instance owns a CUDA stream. ``__call__`` makes that stream wait for the caller's
  current stream (so work that produced ``src_sm`` there is complete), copies, replays, then
  makes the caller's current stream wait for it. Both are event waits, never device-wide
  syncs. Work the caller enqueues on its current stream after the call sees the outputs.
- The returned ``(coeff_a, coeff_b)`` are views of static buffers: valid until the next
  ``__call__``/``reset``/``load_state`` of the same instance. The next call waits for the
  caller's current stream before overwriting them, so reading them on that stream is safe;
  a consumer on ANOTHER stream must make the caller's stream wait for it first.
- ``src_sm`` may be freed as soon as the call returns (it is marked as used by the
  instance's stream for the caching allocator).

``EagerMatting`` has the same interface without capture: for debugging, as the fallback
when capture fails (``make_matting``), for any chunk length, and on the CPU.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Optional, Sequence

import torch

# Recurrent state channels (r1..r4) per variant; docs/rvm-architecture.md, "Interface".
STATE_CHANNELS = {"mobilenetv3": (16, 20, 40, 64), "resnet50": (16, 32, 64, 128)}


def halving_chain(size: int, steps: int = 4) -> list[int]:
    """``[ceil(size/2), ceil(size/4), ...]``, each step rounding up (270 -> 135, 68, 34, 17)."""
    out = []
    for _ in range(steps):
        size = math.ceil(size / 2)
        out.append(size)
    return out


def recurrent_state_shapes(height: int, width: int, variant: str = "mobilenetv3",
                           batch: int = 1) -> list[tuple[int, int, int, int]]:
    """Full shapes of r1..r4 for a ``height x width`` low-resolution input.

    Returns ``[(B, C_k, h_k, w_k)]`` for k = 1..4, with ``C`` from ``STATE_CHANNELS`` and
    ``h_k``/``w_k`` the ceil-halving chain of the input size (1/2, 1/4, 1/8, 1/16).
    """
    if variant not in STATE_CHANNELS:
        raise ValueError(f"variant must be one of {tuple(STATE_CHANNELS)}, got {variant!r}")
    heights, widths = halving_chain(height), halving_chain(width)
    return [(batch, c, h, w) for c, h, w in zip(STATE_CHANNELS[variant], heights, widths)]


def coefficient_kwargs(network: torch.nn.Module, downsample_ratio: Optional[float]) -> dict:
    """Keyword arguments that tell ``network.coefficients`` whether the refiner runs.

    The model's definition skips the refiner at ratio exactly 1. ``rvm.MattingNetwork`` takes
    ``use_refiner``; a network taking ``downsample_ratio`` gets the ratio itself.
    """
    if downsample_ratio is None:
        return {}
    parameters = inspect.signature(network.coefficients).parameters
    if "use_refiner" in parameters:
        return {"use_refiner": downsample_ratio != 1}
    if "downsample_ratio" in parameters:
        return {"downsample_ratio": downsample_ratio}
    return {}


def prepare_network(network: torch.nn.Module, device: torch.device | str,
                    dtype: torch.dtype) -> torch.nn.Module:
    """Move ``network`` IN PLACE to ``device``/``dtype``, eval mode; channels_last on CUDA.

    channels_last lets cuDNN run the convolutions in NHWC (tensor cores) without transposes.
    Returns the same module.
    """
    device = torch.device(device)
    network.to(device=device, dtype=dtype)
    if device.type == "cuda":
        network.to(memory_format=torch.channels_last)
    return network.eval()


def _check_chunk_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4) or shape[-3] != 3 or min(shape) < 1:
        raise ValueError(f"src_sm must be [3, h, w] or [T, 3, h, w] RGB, got {shape = }")
    return shape


def _network_input(src_sm: torch.Tensor) -> torch.Tensor:
    """[3,h,w] -> [1,3,h,w]; [T,3,h,w] -> [1,T,3,h,w] (a chunk: the GRUs step over T)."""
    return src_sm[None]


class EagerMatting:
    """The network called directly, keeping its recurrent state; same interface as the graph.

    Args:
        network: an RVM network with ``coefficients(src_sm, r1, r2, r3, r4, **kw)``; moved in
            place to ``device``/``dtype`` (and channels_last on CUDA).
        src_sm_shape: ``(3, h, w)`` or ``(T, 3, h, w)``, or None to accept any shape; the
            spatial size must stay the same between ``reset()``s (the state has that size).
        device, dtype: where and in what precision the network runs.
        downsample_ratio: the job's ratio (1 means no refiner), or None for the network default.

    ``__call__(src_sm)``: ``src_sm`` ``[3, h, w]`` or ``[T, 3, h, w]``, RGB in [0, 1], any
    float dtype, on ``device``. Returns ``(coeff_a, coeff_b)``, each ``[4, h, w]`` or
    ``[T, 4, h, w]`` in ``dtype``, channels (R, G, B, alpha), for ``matting_tail``.
    """

    def __init__(self, network: torch.nn.Module, src_sm_shape: Optional[Sequence[int]] = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 downsample_ratio: Optional[float] = None, variant: Optional[str] = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.shape = _check_chunk_shape(src_sm_shape) if src_sm_shape is not None else None
        self.network = prepare_network(network, self.device, dtype)
        self.variant = variant or getattr(network, "variant", "mobilenetv3")
        self._kwargs = coefficient_kwargs(network, downsample_ratio)
        self._states: Optional[list[torch.Tensor]] = None
        self._fresh = True  # no frame since construction or reset(): the size may change
        if self.shape is not None:
            self._allocate_states(self.shape[-2], self.shape[-1])

    @torch.inference_mode()
    def _allocate_states(self, height: int, width: int) -> None:
        self._states = [torch.zeros(shape, device=self.device, dtype=self.dtype)
                        for shape in recurrent_state_shapes(height, width, self.variant)]

    @torch.inference_mode()
    def __call__(self, src_sm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_chunk_shape(src_sm.shape)
        if self.shape is not None and tuple(src_sm.shape[-3:]) != self.shape[-3:]:
            raise ValueError(f"expected frames of {self.shape[-3:]}, got {tuple(src_sm.shape) = }")
        expected = recurrent_state_shapes(src_sm.shape[-2], src_sm.shape[-1], self.variant)
        if self._states is None or (self._fresh and tuple(self._states[0].shape) != expected[0]):
            self._allocate_states(src_sm.shape[-2], src_sm.shape[-1])
        elif tuple(self._states[0].shape) != expected[0]:
            raise ValueError(f"frame size changed to {tuple(src_sm.shape[-2:])} without reset()")
        self._fresh = False
        x = _network_input(src_sm.to(device=self.device, dtype=self.dtype))
        coeff_a, coeff_b, *states = self.network.coefficients(x, *self._states, **self._kwargs)
        for old, new in zip(self._states, states):
            if old.shape != new.shape:
                raise RuntimeError(f"network returned a state of {tuple(new.shape)}, "
                                   f"expected {tuple(old.shape)}")
        self._states = list(states)
        return coeff_a[0], coeff_b[0]

    def state(self) -> tuple[torch.Tensor, ...]:
        """The current r1..r4 (``[1, C, h_k, w_k]``), or an empty tuple before the first call."""
        return tuple(self._states) if self._states is not None else ()

    @torch.inference_mode()
    def load_state(self, states: Sequence[torch.Tensor]) -> None:
        """Continue from ``states`` (another instance's ``state()``, same frame size)."""
        if len(states) == 0:
            return self.reset()
        self._states = [s.to(device=self.device, dtype=self.dtype).clone() for s in states]
        self._fresh = False

    @torch.inference_mode()
    def reset(self) -> None:
        """Forget the recurrent state (the next frame is treated as a clip's first)."""
        if self._states is not None:
            for s in self._states:
                s.zero_()
        self._fresh = True


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

    ``__call__(src_sm)`` takes exactly ``src_sm_shape``, RGB in [0, 1], any float dtype, on
    ``device``; returns ``(coeff_a, coeff_b)``, ``[4, h, w]`` or ``[T, 4, h, w]`` in
    ``dtype``: views of static outputs, valid until the next call.
    """

    def __init__(self, network: torch.nn.Module, src_sm_shape: Sequence[int],
                 device: torch.device | str = "cuda", dtype: torch.dtype = torch.float16,
                 downsample_ratio: Optional[float] = None, warmup: int = 3,
                 variant: Optional[str] = None):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"GraphedMatting needs a CUDA device, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.shape = _check_chunk_shape(src_sm_shape)
        self.dtype = dtype
        self.network = prepare_network(network, self.device, dtype)
        self.variant = variant or getattr(network, "variant", "mobilenetv3")
        self._kwargs = coefficient_kwargs(network, downsample_ratio)
        self.stream = torch.cuda.Stream(self.device)
        self._capture(max(1, warmup))

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
            self._coeff_a, self._coeff_b = coeff_a[0], coeff_b[0]

    @torch.inference_mode()
    def __call__(self, src_sm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(src_sm.shape) != self.shape:
            raise ValueError(f"this graph was captured for {self.shape}, got {tuple(src_sm.shape) = }")
        if src_sm.device != self.device:
            raise ValueError(f"src_sm must be on {self.device}, got {src_sm.device}")
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            self._input[0].copy_(src_sm)
            self.graph.replay()
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
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            for own, other in zip(self._states, states):
                own.copy_(other)
        caller.wait_stream(self.stream)

    @torch.inference_mode()
    def reset(self) -> None:
        """Zero the recurrent states (ordered after the caller's pending work)."""
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            for s in self._states:
                s.zero_()
        caller.wait_stream(self.stream)


def make_matting(network: torch.nn.Module, src_sm_shape: Sequence[int],
                 device: torch.device | str, dtype: torch.dtype,
                 downsample_ratio: Optional[float] = None, use_graphs: Optional[bool] = None):
    """``GraphedMatting`` on CUDA (``EagerMatting`` where capture fails, with a warning) and
    ``EagerMatting`` elsewhere or when ``use_graphs`` is False."""
    device = torch.device(device)
    if use_graphs is None:
        use_graphs = device.type == "cuda"
    if use_graphs:
        try:
            return GraphedMatting(network, src_sm_shape, device, dtype=dtype,
                                  downsample_ratio=downsample_ratio)
        except Exception as error:  # noqa: BLE001 - capture failures vary by driver/op
            warnings.warn(f"CUDA graph capture failed ({type(error).__name__}: {error}); "
                          "running the network eagerly", RuntimeWarning, stacklevel=2)
    return EagerMatting(network, src_sm_shape, device, dtype=dtype,
                        downsample_ratio=downsample_ratio)


__all__ = ["GraphedMatting", "EagerMatting", "make_matting", "recurrent_state_shapes",
           "halving_chain", "coefficient_kwargs", "prepare_network", "STATE_CHANNELS"]
