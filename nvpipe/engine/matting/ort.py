"""``OrtMatting``: the low-resolution network in ONNX Runtime, one CPU engine of the stage.

nvpipe's own export of ``network.coefficients`` (``nvpipe.model.export.CoefficientsGraph``:
``src_sm`` and r1..r4 in, ``coeff_a``, ``coeff_b`` and r1..r4 out; no full-size refiner
step) runs in an ``onnxruntime.InferenceSession``. The recurrent state stays here, as
numpy arrays, between calls. The export is cached under ``$NVPIPE_CACHE/onnx`` (default
``~/.cache/nvpipe/onnx``), keyed by a digest of the weights, so it is written once per
network (about 1.5 s on 2 cores).

Threads: ``intra_op_num_threads`` from ``nvpipe.platform.threads.budget()`` and no spinning
(``session.intra_op.allow_spinning=0``): ORT's workers otherwise spin between ops and take
the cores from the decode and encode threads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from nvpipe.engine.matting._common import (as_coefficients, check_chunk_shape,
                                           recurrent_state_shapes)


def _cache_dir() -> Path:
    from rvm import cache_dir

    path = cache_dir() / "onnx"
    path.mkdir(parents=True, exist_ok=True)
    return path


def network_digest(network: torch.nn.Module) -> str:
    """A digest of the network's weights (float32 values, in state_dict order) and variant."""
    digest = hashlib.sha256(getattr(network, "variant", "mobilenetv3").encode())
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def coefficients_model(network: torch.nn.Module, use_refiner: bool = True) -> Path:
    """The cached ONNX export of ``network.coefficients`` (written on first use)."""
    from nvpipe.model.export import DEFAULT_OPSET, export_coefficients_onnx

    # "-split": the concatenated convolutions split (nvpipe.model.graph_rewrite)
    refiner = "refiner" if use_refiner else "plain"
    path = _cache_dir() / (f"coefficients-{network_digest(network)}-{refiner}-"
                           f"opset{DEFAULT_OPSET}-split.onnx")
    if not path.exists():
        export_coefficients_onnx(network, path, use_refiner=use_refiner)
    return path


def session_for(path: Path | str, threads: Optional[int] = None):
    """An ``InferenceSession`` on the CPU with ``threads`` intra-op threads (default: the
    thread budget's), no spinning, one inter-op thread."""
    import onnxruntime

    from nvpipe.platform.threads import budget

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else budget().network
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtMatting:
    """The matting interface (``__call__(src_sm, src=None)``, ``state``, ``load_state``,
    ``reset``) over ONNX Runtime. CPU, float32 only.

    Args:
        network: an ``rvm.MattingNetwork`` (its weights are exported; it is not modified).
        downsample_ratio: the job's ratio (1: no refiner, as ``coefficients`` does it).
        threads: ORT intra-op threads (default: ``nvpipe.platform.threads.budget().network``).
        coefficient_format: the outputs' memory format (NCHW: the C tail reads planes).

    ``__call__`` takes ``[3, h, w]`` or ``[T, 3, h, w]`` float RGB in [0, 1] (frames of a
    chunk run one after another: the GRUs step over them) and returns ``(coeff_a,
    coeff_b)`` float32 CPU tensors ``[4, h, w]`` / ``[T, 4, h, w]``.
    """

    name = "onnxruntime"

    def __init__(self, network: torch.nn.Module, downsample_ratio: Optional[float] = None,
                 threads: Optional[int] = None,
                 coefficient_format: torch.memory_format = torch.contiguous_format,
                 model: Optional[Path | str] = None):
        self.variant = getattr(network, "variant", "mobilenetv3")
        use_refiner = downsample_ratio is None or float(downsample_ratio) != 1
        # model: another file of the same interface (bench/cpu_fidelity.py's int8 one)
        self._open(model or coefficients_model(network, use_refiner), threads)
        self.coefficient_format = coefficient_format
        self._states: Optional[list[np.ndarray]] = None
        self._fresh = True

    def _open(self, path: Path | str, threads: Optional[int]) -> None:
        """Loads the file into the runtime (another engine of the same file overrides this
        and ``_run``)."""
        self.session = session_for(path, threads)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One frame through the file: ``coeff_a, coeff_b, r1o..r4o``."""
        return self.session.run(None, feeds)

    def _allocate(self, height: int, width: int) -> None:
        self._states = [np.zeros(shape, np.float32)
                        for shape in recurrent_state_shapes(height, width, self.variant)]

    def __call__(self, src_sm: torch.Tensor, src=None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = check_chunk_shape(src_sm.shape)
        frames = src_sm if len(shape) == 4 else src_sm[None]
        height, width = shape[-2:]
        expected = recurrent_state_shapes(height, width, self.variant)[0]
        if self._states is None or (self._fresh and self._states[0].shape != expected):
            self._allocate(height, width)
        elif self._states[0].shape != expected:
            raise ValueError(f"frame size changed to {(height, width)} without reset()")
        self._fresh = False
        coeff_a, coeff_b = [], []
        for frame in frames:
            x = frame.detach().to("cpu", torch.float32).contiguous().numpy()[None]
            a, b, *states = self._run({
                "src_sm": x, "r1i": self._states[0], "r2i": self._states[1],
                "r3i": self._states[2], "r4i": self._states[3]})
            self._states = states
            coeff_a.append(torch.from_numpy(a))
            coeff_b.append(torch.from_numpy(b))
        a = torch.cat(coeff_a)[None] if len(shape) == 4 else coeff_a[0]
        b = torch.cat(coeff_b)[None] if len(shape) == 4 else coeff_b[0]
        return as_coefficients(a, self.coefficient_format), as_coefficients(b, self.coefficient_format)

    def state(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(s) for s in self._states) if self._states is not None else ()

    def load_state(self, states: Sequence[torch.Tensor]) -> None:
        if len(states) == 0:
            return self.reset()
        self._states = [s.detach().to("cpu", torch.float32).numpy().copy() for s in states]
        self._fresh = False

    def reset(self) -> None:
        if self._states is not None:
            for s in self._states:
                s.fill(0)
        self._fresh = True


__all__ = ["OrtMatting", "coefficients_model", "network_digest", "session_for"]
