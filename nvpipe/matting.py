"""The matting stage: low-resolution frames -> the refiner's coefficients, recurrent state kept.

One stage, ``MattingStage``, for every device; behind it one of two implementations of the
same interface (``__call__(src_sm) -> (coeff_a, coeff_b)``, ``state()``, ``load_state()``,
``reset()``):

- ``EagerMatting`` (this module): the network called directly. The CPU path, CUDA without
  graphs, and the fallback for a shape whose capture fails.
- ``nvpipe.cuda_graphs.GraphedMatting``: the network captured as a CUDA graph for one input
  shape (one graph per chunk length).

The stage also decides the coefficients' memory format (``coefficient_format``):
channels_last on CUDA, where the Triton tail reads each texel's 4 channels as one 8-byte
load (COEFF_VEC4), and NCHW on the CPU, where the C tail reads planes.

Streams (CUDA): the network runs on the stage's own stream ``MattingStage.stream``, never
on the legacy default stream. Each call makes that stream wait for the caller's current
stream (which produced ``src_sm``) and the caller's stream wait for the result, both event
waits; a caller that runs on ``stage.stream`` itself (``with torch.cuda.stream(stage.stream)``)
skips both.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Optional, Sequence

import torch

from rvm.network import STATE_CHANNELS  # recurrent state channels r1..r4, per variant


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

    Returns ``[(B, C_k, h_k, w_k)]`` for k = 1..4, with ``C`` from ``rvm.STATE_CHANNELS`` and
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
    """Move ``network`` IN PLACE to ``device``/``dtype``, eval mode, channels_last.

    CUDA: channels_last lets cuDNN run the convolutions in NHWC (tensor cores) without
    transposes. CPU: ``rvm.optimize_for_cpu`` (weights and inputs channels_last: the low-res
    network ~80 ms instead of ~103 ms at 1080p/0.25 on 2 cores), for every entry point (the
    CLI, ``convert_video``, ``MattingSession``) alike. Returns the same module.
    """
    import rvm

    device = torch.device(device)
    network.to(device=device, dtype=dtype)
    if device.type == "cuda":
        network.to(memory_format=torch.channels_last)
    elif isinstance(network, rvm.MattingNetwork) and dtype in (torch.float32, torch.bfloat16):
        rvm.optimize_for_cpu(network)
    return network.eval()


def default_coefficient_format(device: torch.device | str) -> torch.memory_format:
    """channels_last on CUDA (the Triton tail's vector loads), NCHW elsewhere (the C tail)."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


def check_chunk_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4) or shape[-3] != 3 or min(shape) < 1:
        raise ValueError(f"src_sm must be [3, h, w] or [T, 3, h, w] RGB, got {shape = }")
    return shape


def as_coefficients(coeff: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``network.coefficients``' ``[1, 4, h, w]``/``[1, T, 4, h, w]`` output as the stage's
    ``[4, h, w]``/``[T, 4, h, w]`` in ``memory_format`` (a view where it already is)."""
    coeff = coeff[0]
    if coeff.ndim == 4:
        return coeff.contiguous(memory_format=memory_format)
    return coeff[None].contiguous(memory_format=memory_format)[0]


class EagerMatting:
    """The network called directly, keeping its recurrent state; same interface as the graph.

    Args:
        network: an RVM network with ``coefficients(src_sm, r1, r2, r3, r4, **kw)``; moved in
            place to ``device``/``dtype`` (and channels_last on CUDA).
        src_sm_shape: ``(3, h, w)`` or ``(T, 3, h, w)``, or None to accept any shape; the
            spatial size must stay the same between ``reset()``s (the state has that size).
        device, dtype: where and in what precision the network runs.
        downsample_ratio: the job's ratio (1 means no refiner), or None for the network default.
        coefficient_format: the outputs' memory format (default: ``default_coefficient_format``).

    ``__call__(src_sm)``: ``src_sm`` ``[3, h, w]`` or ``[T, 3, h, w]``, RGB in [0, 1], any
    float dtype, on ``device``. Returns ``(coeff_a, coeff_b)``, each ``[4, h, w]`` or
    ``[T, 4, h, w]`` in ``dtype``, channels (R, G, B, alpha), for ``matting_tail``. Work runs
    on the caller's current stream.
    """

    def __init__(self, network: torch.nn.Module, src_sm_shape: Optional[Sequence[int]] = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 downsample_ratio: Optional[float] = None, variant: Optional[str] = None,
                 coefficient_format: Optional[torch.memory_format] = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.shape = check_chunk_shape(src_sm_shape) if src_sm_shape is not None else None
        self.network = prepare_network(network, self.device, dtype)
        self.variant = variant or getattr(network, "variant", "mobilenetv3")
        self.coefficient_format = coefficient_format or default_coefficient_format(self.device)
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
        check_chunk_shape(src_sm.shape)
        if self.shape is not None and tuple(src_sm.shape[-3:]) != self.shape[-3:]:
            raise ValueError(f"expected frames of {self.shape[-3:]}, got {tuple(src_sm.shape) = }")
        expected = recurrent_state_shapes(src_sm.shape[-2], src_sm.shape[-1], self.variant)
        if self._states is None or (self._fresh and tuple(self._states[0].shape) != expected[0]):
            self._allocate_states(src_sm.shape[-2], src_sm.shape[-1])
        elif tuple(self._states[0].shape) != expected[0]:
            raise ValueError(f"frame size changed to {tuple(src_sm.shape[-2:])} without reset()")
        self._fresh = False
        x = src_sm.to(device=self.device, dtype=self.dtype)[None]  # a chunk: GRUs step over T
        coeff_a, coeff_b, *states = self.network.coefficients(x, *self._states, **self._kwargs)
        for old, new in zip(self._states, states):
            if old.shape != new.shape:
                raise RuntimeError(f"network returned a state of {tuple(new.shape)}, "
                                   f"expected {tuple(old.shape)}")
        self._states = list(states)
        return (as_coefficients(coeff_a, self.coefficient_format),
                as_coefficients(coeff_b, self.coefficient_format))

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


class MattingStage:
    """Runs the network on chunks of low-resolution frames and keeps its recurrent state.

    Args:
        network: an RVM network (moved in place to ``device``/``dtype``).
        ratio: the job's downsample ratio (1 means no refiner).
        device, dtype: where and in what precision the network runs.
        use_cuda_graphs: one CUDA graph per chunk shape (default: on CUDA); False runs
            ``EagerMatting``.
        stream: the CUDA stream the network runs on (default: a new one on CUDA; None on
            the CPU). The runner's network thread should run on it (module docstring).

    ``__call__(src_sm)`` takes ``[T, 3, h, w]`` (T = 1..chunk) and returns
    ``(coeff_a, coeff_b)``, each ``[T, 4, h, w]`` in ``coefficient_format``, for
    ``nvpipe.kernels.matting_tail``. Under CUDA graphs they are views of the graph's static
    outputs, valid until the next call (which first waits for the caller's stream).
    ``reset()`` forgets the state (a scene cut, or the next clip of a batch).

    A network with ``needs_source = True`` (``nvpipe.adapters.ForwardMatting``: a frozen
    TorchScript module with only RVM's forward) also takes the full-size frames,
    ``__call__(src_sm, src)`` with ``src`` ``[T, 3, H, W]``, runs eagerly, and returns
    full-size coefficients.

    ``prepare(shape)`` captures the graph for that chunk shape now, before the pipeline's
    threads start; a shape whose capture fails runs eagerly, with a warning.
    """

    def __init__(self, network: torch.nn.Module, *, ratio: float, device: torch.device | str,
                 dtype: torch.dtype, use_cuda_graphs: Optional[bool] = None,
                 stream: Optional[torch.cuda.Stream] = None):
        self.ratio = float(ratio)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = dtype
        self.needs_source = bool(getattr(network, "needs_source", False))
        # A forward-only TorchScript adapter is already on its device and dtype (frozen).
        self.network = network if self.needs_source else prepare_network(network, self.device, dtype)
        self._forward_state: list[Optional[torch.Tensor]] = [None] * 4
        if use_cuda_graphs is None:
            use_cuda_graphs = self.device.type == "cuda" and not self.needs_source
        self.use_cuda_graphs = use_cuda_graphs
        self.coefficient_format = default_coefficient_format(self.device)
        if stream is None and self.device.type == "cuda":
            stream = torch.cuda.Stream(self.device)
        self.stream = stream
        # Eager: one instance for every shape. Graphs: one per chunk shape (each with its own
        # state buffers), or an eager instance for a shape whose capture failed.
        self._eager: Optional[EagerMatting] = None
        self._graphs: dict[tuple[int, ...], object] = {}
        self._last = None  # the implementation that ran last: it holds the current state

    def _new_eager(self, shape: Optional[tuple[int, ...]] = None) -> EagerMatting:
        return EagerMatting(self.network, shape, self.device, self.dtype,
                            downsample_ratio=self.ratio,
                            coefficient_format=self.coefficient_format)

    def _implementation_for(self, shape: tuple[int, ...]):
        if not self.use_cuda_graphs:
            if self._eager is None:
                self._eager = self._new_eager()
            return self._eager
        implementation = self._graphs.get(shape)
        if implementation is None:
            from . import cuda_graphs

            try:
                implementation = cuda_graphs.GraphedMatting(
                    self.network, shape, self.device, self.dtype, downsample_ratio=self.ratio,
                    stream=self.stream, coefficient_format=self.coefficient_format)
            except Exception as error:  # noqa: BLE001 - capture failures vary by driver/op
                warnings.warn(f"CUDA graph capture failed for {shape} ({type(error).__name__}: "
                              f"{error}); running the network eagerly", RuntimeWarning,
                              stacklevel=3)
                implementation = self._new_eager(shape)
            self._graphs[shape] = implementation
        return implementation

    def _on_stage_stream(self, body):
        """``body()`` on ``self.stream``, ordered after the caller's current stream's work."""
        if self.stream is None:
            return body()
        caller = torch.cuda.current_stream(self.device)
        if caller == self.stream:
            return body()
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            result = body()
        caller.wait_stream(self.stream)
        return result

    @torch.inference_mode()
    def __call__(self, src_sm: torch.Tensor,
                 src: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.needs_source:
            return self._forward(src_sm, src)
        implementation = self._implementation_for(tuple(src_sm.shape))
        def body():
            if self._last is not None and implementation is not self._last:
                # Another chunk length (a clip's last, shorter chunk) continues from the
                # state the implementation that ran last reached.
                implementation.load_state(self._last.state())
            self._last = implementation
            return implementation(src_sm)

        caller = torch.cuda.current_stream(self.device) if self.stream is not None else None
        coeff_a, coeff_b = self._on_stage_stream(body)
        if caller is not None and caller != self.stream:
            # Allocated on the stage's stream, used on the caller's: the caching allocator
            # must not hand them out again before the caller's work on them is done.
            src_sm.record_stream(self.stream)
            coeff_a.record_stream(caller)
            coeff_b.record_stream(caller)
        return coeff_a, coeff_b

    def _forward(self, src_sm: torch.Tensor, src: Optional[torch.Tensor]):
        """A forward-only network: full-size coefficients from the full-size frames, eagerly."""
        if src is None:
            raise ValueError("this network runs on the full-size frames: pass src")

        def body():
            coeff_a, coeff_b, *self._forward_state = self.network.coefficients(
                src_sm[None], *self._forward_state, downsample_ratio=self.ratio, src=src[None])
            return coeff_a[0], coeff_b[0]

        return self._on_stage_stream(body)

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Build the implementation for ``src_sm`` chunks of ``shape`` ([T, 3, h, w]) now:
        under CUDA graphs the capture runs on ``self.stream`` before the pipeline's threads
        start, so no other thread's CUDA work (NVDEC, a device-wide sync) can invalidate
        it. Off CUDA graphs a no-op."""
        if self.use_cuda_graphs:
            self._on_stage_stream(lambda: self._implementation_for(tuple(shape)))

    @torch.inference_mode()
    def reset(self) -> None:
        """Forget the recurrent state of every shape."""
        def body():
            for implementation in (self._eager, *self._graphs.values()):
                if implementation is not None:
                    implementation.reset()

        self._on_stage_stream(body)
        self._last = None
        self._forward_state = [None] * 4


__all__ = ["MattingStage", "EagerMatting", "STATE_CHANNELS", "as_coefficients",
           "check_chunk_shape", "coefficient_kwargs", "default_coefficient_format",
           "halving_chain", "prepare_network", "recurrent_state_shapes"]
