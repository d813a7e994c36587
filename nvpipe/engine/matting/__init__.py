"""The matting stage: low-resolution frames -> the refiner's coefficients, recurrent state kept.

One stage, ``MattingStage``, for every device and network; behind it one of three
implementations of one interface (``__call__(src_sm, src) -> (coeff_a, coeff_b)``,
``state()``, ``load_state()``, ``reset()``):

- ``eager.EagerMatting``: the network called directly. The CPU path, CUDA without graphs,
  and the fallback for a shape whose capture fails.
- ``graphed.GraphedMatting``: the network captured as a CUDA graph for one input shape (one
  graph per chunk length).
- ``forward.ForwardOnlyMatting``: a network with only RVM's ``forward`` (a frozen
  TorchScript module) on the full-size frames ``src``; the others ignore ``src``.

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

import warnings
from typing import Optional, Sequence

import torch

from nvpipe.engine.matting._common import (STATE_CHANNELS, as_coefficients, check_chunk_shape,
                                           coefficient_kwargs, default_coefficient_format,
                                           halving_chain, prepare_network,
                                           recurrent_state_shapes)
from nvpipe.engine.matting.eager import EagerMatting
from nvpipe.engine.matting.forward import ForwardOnlyMatting


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
        engine: the CPU engine (``engines.CpuMatting``): ``"auto"`` (timed once per machine
            and input size, cached), ``"torch"`` or ``"onnxruntime"``; None: ``$NVPIPE_ENGINE``
            or auto. Ignored on CUDA.
        network_dtype: the network's precision on the CPU where it differs from ``dtype``
            (``torch.bfloat16``: the pipeline stays float32, the coefficients come back
            float32; ``torch.float32`` asked for explicitly; None: the default, which
            ``engines.CpuMatting`` decides).

    ``__call__(src_sm, src=None)`` takes ``[T, 3, h, w]`` (T = 1..chunk) and returns
    ``(coeff_a, coeff_b)``, each ``[T, 4, h, w]`` in ``coefficient_format``, for
    ``nvpipe.kernels.matting_tail``. Under CUDA graphs they are views of the graph's static
    outputs, valid until the next call (which first waits for the caller's stream).
    ``reset()`` forgets the state (a scene cut, or the next clip of a batch).

    ``src`` is the chunk's full-size frames (``[T, 3, H, W]`` or a sequence of ``[3, H, W]``):
    callers always pass it; only a forward-only network (``needs_source = True``,
    ``nvpipe.model.adapters.ForwardMatting``) reads it, eagerly, and returns full-size
    coefficients.

    ``prepare(shape)`` captures the graph for that chunk shape now, before the pipeline's
    threads start; a shape whose capture fails runs eagerly, with a warning.
    """

    def __init__(self, network: torch.nn.Module, *, ratio: float, device: torch.device | str,
                 dtype: torch.dtype, use_cuda_graphs: Optional[bool] = None,
                 stream: Optional[torch.cuda.Stream] = None, engine: Optional[str] = None,
                 network_dtype: Optional[torch.dtype] = None):
        self.ratio = float(ratio)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = dtype
        forward_only = bool(getattr(network, "needs_source", False))
        # A forward-only TorchScript adapter is already on its device and dtype (frozen).
        self.network = network if forward_only else prepare_network(
            network, self.device, network_dtype or dtype)
        if use_cuda_graphs is None:
            use_cuda_graphs = self.device.type == "cuda"
        self.use_cuda_graphs = use_cuda_graphs and not forward_only
        self.coefficient_format = default_coefficient_format(self.device)
        if stream is None and self.device.type == "cuda":
            stream = torch.cuda.Stream(self.device)
        self.stream = stream
        # One implementation for every shape (eager, forward-only), or, under graphs, one per
        # chunk shape (each with its own state buffers; eager where capture failed).
        self._single = (ForwardOnlyMatting(self.network, self.ratio) if forward_only
                        else None if self.use_cuda_graphs
                        else self._new_cpu(engine, network_dtype if network_dtype is not None
                                           else None if dtype == torch.float32 else dtype)
                        if self.device.type == "cpu" else self._new_eager())
        self._graphs: dict[tuple[int, ...], object] = {}
        self._last = None  # the implementation that ran last: it holds the current state

    def _new_eager(self, shape: Optional[tuple[int, ...]] = None) -> EagerMatting:
        return EagerMatting(self.network, shape, self.device, self.dtype,
                            downsample_ratio=self.ratio,
                            coefficient_format=self.coefficient_format)

    def _new_cpu(self, engine: Optional[str], dtype: Optional[torch.dtype]):
        """None: float32, or what ``engines.CpuMatting`` may choose by default."""
        from nvpipe.engine.matting.engines import CpuMatting

        return CpuMatting(self.network, downsample_ratio=self.ratio, engine=engine, dtype=dtype,
                          coefficient_format=self.coefficient_format)

    @property
    def outputs_are_views(self) -> bool:
        """The coefficients returned are views of buffers the next call overwrites (CUDA
        graphs): a caller keeping them past that call clones them."""
        return self.use_cuda_graphs

    @property
    def engine(self) -> str:
        """What runs the network: ``"torch"``, ``"onnxruntime"`` (CPU; None before the
        first call under auto), ``"cuda-graphs"``, ``"torch-forward"``."""
        if isinstance(self._single, ForwardOnlyMatting):
            return "torch-forward"
        if self._single is None:
            return "cuda-graphs"
        return getattr(self._single, "name", "torch")

    def _implementation_for(self, shape: tuple[int, ...]):
        if self._single is not None:
            return self._single
        implementation = self._graphs.get(shape)
        if implementation is None:
            from nvpipe.engine.matting.graphed import GraphedMatting

            try:
                implementation = GraphedMatting(
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
                 src: torch.Tensor | Sequence[torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        implementation = self._implementation_for(tuple(src_sm.shape))
        def body():
            if self._last is not None and implementation is not self._last:
                # Another chunk length (a clip's last, shorter chunk) continues from the
                # state the implementation that ran last reached.
                implementation.load_state(self._last.state())
            self._last = implementation
            return implementation(src_sm, src)

        caller = torch.cuda.current_stream(self.device) if self.stream is not None else None
        coeff_a, coeff_b = self._on_stage_stream(body)
        if caller is not None and caller != self.stream:
            # Allocated on the stage's stream, used on the caller's: the caching allocator
            # must not hand them out again before the caller's work on them is done.
            src_sm.record_stream(self.stream)
            coeff_a.record_stream(caller)
            coeff_b.record_stream(caller)
        return coeff_a, coeff_b

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
            for implementation in (self._single, *self._graphs.values()):
                if implementation is not None:
                    implementation.reset()

        self._on_stage_stream(body)
        self._last = None


def __getattr__(name: str):
    if name == "GraphedMatting":  # imported on first use: only CUDA runs need it
        from nvpipe.engine.matting.graphed import GraphedMatting

        return GraphedMatting
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MattingStage", "EagerMatting", "ForwardOnlyMatting", "GraphedMatting",
           "STATE_CHANNELS", "as_coefficients", "check_chunk_shape", "coefficient_kwargs",
           "default_coefficient_format", "halving_chain", "prepare_network",
           "recurrent_state_shapes"]
