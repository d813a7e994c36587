"""``OpenVinoMatting``: the low-resolution network in OpenVINO, one CPU engine of the stage.

The same file as ``OrtMatting`` (nvpipe's own ONNX export of ``network.coefficients``, cached
under ``$NVPIPE_CACHE/onnx``), compiled by OpenVINO's CPU plugin once per input size (static
shapes: about 0.3 s at 480x270 on 2 cores), in float32 (``INFERENCE_PRECISION_HINT=f32``:
the plugin's default on CPUs with AMX is bfloat16). The recurrent state stays here, as numpy
arrays, between calls, exactly as in ``OrtMatting``.

Why: on the 2-core AMD EPYC (AVX-512) at 480x270, 53 ms a frame against ONNX Runtime's
76 ms on the same file and threads (torch: ~90 ms), coefficients within 5.5e-5 of ONNX
Runtime's and alpha within 1.1e-7 of the PyTorch network's on every frame of every shared
clip (``bench/results/cpu-fidelity-openvino.json``).

Threads: ``INFERENCE_NUM_THREADS`` from ``nvpipe.platform.threads.budget()``, one stream,
no pinning (the decode and encode threads share the cores).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from nvpipe.engine.matting._common import recurrent_state_shapes
from nvpipe.engine.matting.ort import OrtMatting

INPUTS = ("src_sm", "r1i", "r2i", "r3i", "r4i")


def _blob_cache() -> Optional[str]:
    """Where OpenVINO keeps compiled models (``$NVPIPE_CACHE/openvino``): a later run loads
    the blob instead of compiling, 0.24 instead of 0.34 s at 480x270. None where it cannot
    be made."""
    from rvm import cache_dir

    path = os.path.join(cache_dir(), "openvino")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def compile_for(path: Path | str, height: int, width: int, variant: str, threads: int):
    """The model at ``path`` compiled for one ``height x width`` input on the CPU."""
    import openvino

    core = openvino.Core()
    model = core.read_model(str(path))
    shapes = [(1, 3, height, width)] + recurrent_state_shapes(height, width, variant)
    model.reshape({name: openvino.PartialShape(list(shape))
                   for name, shape in zip(INPUTS, shapes)})
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": int(threads),
              "ENABLE_CPU_PINNING": False}
    cache = _blob_cache()
    if cache is not None:
        try:
            return core.compile_model(model, "CPU", {**config, "CACHE_DIR": cache})
        except RuntimeError:  # an unreadable or damaged blob: compile afresh
            pass
    return core.compile_model(model, "CPU", config)


class OpenVinoMatting(OrtMatting):
    """``OrtMatting``'s interface and state handling, with OpenVINO running the file.

    Args: as ``OrtMatting`` (``threads``: OpenVINO's inference threads).
    """

    name = "openvino"

    def _open(self, path: Path | str, threads: Optional[int]) -> None:
        """Compiled lazily, per input size (``_run``)."""
        from nvpipe.platform.threads import budget

        self.path = path
        self.threads = threads if threads is not None else budget().network
        self._compiled: dict[tuple[int, int], object] = {}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        height, width = feeds["src_sm"].shape[-2:]
        request = self._compiled.get((height, width))
        if request is None:
            compiled = compile_for(self.path, height, width, self.variant, self.threads)
            request = self._compiled[(height, width)] = compiled.create_infer_request()
        results = request.infer(feeds, share_inputs=True, share_outputs=False)
        return list(results.to_tuple())


__all__ = ["OpenVinoMatting", "compile_for"]
