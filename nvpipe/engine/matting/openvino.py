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

Start-up: the file reshaped to each input size is kept as OpenVINO IR beside the compiled
blobs (``$NVPIPE_CACHE/openvino/ir``), and a later run compiles that IR by its path, so
OpenVINO finds its blob without reading and reshaping the ONNX file: 0.14 instead of
0.24 s at 480x270 on 2 cores (import of OpenVINO, 0.15 s, not counted).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
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


def _reshaped(core, path: Path | str, height: int, width: int, variant: str):
    import openvino

    model = core.read_model(str(path))
    shapes = [(1, 3, height, width)] + recurrent_state_shapes(height, width, variant)
    model.reshape({name: openvino.PartialShape(list(shape))
                   for name, shape in zip(INPUTS, shapes)})
    return model


def sized_ir(cache: str, path: Path | str, height: int, width: int, variant: str) -> Path:
    """The IR of the file at ``path`` reshaped to ``height x width``, under ``cache/ir``:
    written on first use (``.xml`` last, so a present ``.xml`` means a whole pair), named by
    the file's name, size and modification time and the input size."""
    import openvino

    source = Path(path)
    stat = source.stat()
    key = hashlib.sha256(f"{source.name}|{stat.st_size}|{stat.st_mtime_ns}|{variant}"
                         .encode()).hexdigest()[:16]
    target = Path(cache) / "ir" / f"{source.stem}-{key}-{height}x{width}.xml"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        written = Path(scratch) / target.name
        model = _reshaped(openvino.Core(), source, height, width, variant)
        openvino.save_model(model, str(written), compress_to_fp16=False)
        os.replace(written.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(written, target)
    return target


def compile_config(threads: int) -> dict:
    """OpenVINO's CPU settings for the network (module docstring), the blob cache aside."""
    return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": int(threads),
            "ENABLE_CPU_PINNING": False}


def compile_for(path: Path | str, height: int, width: int, variant: str, threads: int):
    """The model at ``path`` compiled for one ``height x width`` input on the CPU."""
    import openvino

    core = openvino.Core()
    config = compile_config(threads)
    cache = _blob_cache()
    if cache is not None:
        ir = None
        try:  # by the IR's path: OpenVINO then loads its blob without reading the model
            ir = sized_ir(cache, path, height, width, variant)
            return core.compile_model(str(ir), "CPU", {**config, "CACHE_DIR": cache})
        except (RuntimeError, OSError):  # a damaged IR or blob, a full disk: compile afresh
            if ir is not None:  # and the next run writes the IR again
                for part in (ir, ir.with_suffix(".bin")):
                    part.unlink(missing_ok=True)
    return core.compile_model(_reshaped(core, path, height, width, variant), "CPU", config)


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


__all__ = ["OpenVinoMatting", "compile_config", "compile_for", "sized_ir"]
