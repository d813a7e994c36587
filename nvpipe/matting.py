"""Matting stage: low-resolution frames -> the refiner's coefficients, recurrent state kept."""

from __future__ import annotations

from typing import Optional

import torch


class MattingStage:
    """Runs the network on chunks of low-resolution frames and keeps its recurrent state.

    ``__call__(src_sm)`` takes ``[T, 3, h, w]`` (T = 1..chunk) and returns
    ``(coeff_a, coeff_b)``, each ``[T, 4, h, w]``, for ``nvpipe.kernels.matting_tail``.
    On CUDA the network runs in FP16 under a CUDA graph per input shape
    (``nvpipe.cuda_graphs``); on the CPU it runs eagerly in the job's dtype.
    ``reset()`` forgets the state (a scene cut, or the next clip of a batch).

    A network with ``needs_source = True`` (``nvpipe.adapters.ForwardMatting``: a frozen
    TorchScript module with only RVM's forward) also takes the full-size frames,
    ``__call__(src_sm, src)`` with ``src`` ``[T, 3, H, W]``, runs eagerly, and returns
    full-size coefficients.
    """

    def __init__(self, network: torch.nn.Module, *, ratio: float, device: torch.device | str,
                 dtype: torch.dtype, use_cuda_graphs: Optional[bool] = None):
        self.network = network
        self.ratio = float(ratio)
        self.device = torch.device(device)
        self.dtype = dtype
        self.needs_source = bool(getattr(network, "needs_source", False))
        if use_cuda_graphs is None:
            use_cuda_graphs = self.device.type == "cuda" and not self.needs_source
        self.use_cuda_graphs = use_cuda_graphs
        self._graphs: dict[tuple[int, ...], object] = {}
        self._last_graph = None  # the graph that ran last: it holds the current state
        self._state: list[Optional[torch.Tensor]] = [None] * 4

    def reset(self) -> None:
        self._state = [None] * 4
        for graph in self._graphs.values():
            graph.reset()

    @torch.inference_mode()
    def __call__(self, src_sm: torch.Tensor,
                 src: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.needs_source:
            if src is None:
                raise ValueError("this network runs on the full-size frames: pass src")
            coeff_a, coeff_b, *self._state = self.network.coefficients(
                src_sm[None], *self._state, downsample_ratio=self.ratio, src=src[None])
            return coeff_a[0], coeff_b[0]
        if self.use_cuda_graphs:
            return self._graphed(src_sm)
        coeff_a, coeff_b, *self._state = self.network.coefficients(
            src_sm[None], *self._state, use_refiner=self.ratio != 1)
        return coeff_a[0], coeff_b[0]

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Capture the graph for ``src_sm`` chunks of ``shape`` ([T, 3, h, w]) now: before
        the pipeline's threads start, no other thread's CUDA work (NVDEC, a device-wide
        sync) can invalidate the capture. A no-op off CUDA graphs."""
        if self.use_cuda_graphs:
            self._graph_for(tuple(shape))

    def _graph_for(self, shape: tuple[int, ...]):
        from .cuda_graphs import make_matting

        graph = self._graphs.get(shape)
        if graph is None:  # eager (with a warning) where capture fails
            graph = make_matting(self.network, shape, self.device, self.dtype,
                                 downsample_ratio=self.ratio, use_graphs=True)
            self._graphs[shape] = graph
        return graph

    def _graphed(self, src_sm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        graph = self._graph_for(tuple(src_sm.shape))
        if self._last_graph is not None and graph is not self._last_graph:
            # Another chunk length (the last, shorter chunk of a clip) continues from the
            # state the graph that ran last reached (each graph keeps its own state buffers).
            graph.load_state(self._last_graph.state())
        self._last_graph = graph
        return graph(src_sm)
