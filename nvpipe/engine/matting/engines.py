"""The CPU engine of the low-resolution network, chosen per machine (like cudnn.benchmark).

``CpuMatting`` has the matting interface and runs one of:

- ``"torch"``: ``EagerMatting`` (PyTorch, channels_last, oneDNN);
- ``"onnxruntime"``: ``OrtMatting`` (nvpipe's own ONNX export of ``coefficients`` in ONNX
  Runtime: same inputs, outputs and recurrent state);
- ``"openvino"``: ``OpenVinoMatting`` (the same file in OpenVINO's CPU plugin, float32).

``"auto"`` (the default; ``--engine`` or ``$NVPIPE_ENGINE`` say otherwise) times every
installed engine on the first chunk's input size, interleaved (1 warm-up and
``TIMED_CALLS`` calls each), runs the fastest and records the choice in
``$NVPIPE_CACHE/cpu-engine.json``, keyed by CPU model, cores, library versions and input
size, so later runs on this machine skip the timing. A timing taken while the 1-minute load
average is above the network's threads is used for that run only (not recorded): the next
run times again. The file engines run ``rvm.MattingNetwork`` in float32 only; other
networks, and ``--dtype bfloat16``, are torch's (ORT's CPU provider has no BF16
convolution, and OpenVINO's BF16 is not the network as trained).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

import torch

from nvpipe.engine.matting.eager import EagerMatting
from nvpipe.errors import NvpipeError

from nvpipe.job import CPU_ENGINES as ENGINES  # noqa: E402 - the one vocabulary
ENGINE_ENV = "NVPIPE_ENGINE"
TIMED_CALLS = 5  # per engine, interleaved, after one warm-up: ~1.5 s once at 480x270 on 2 cores
FILE_ENGINES = ("onnxruntime", "openvino")  # nvpipe's ONNX export of the network, float32
LIBRARY = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
BF16_ENGINE = "torch-bfloat16"
# Whether BF16 keeps the alpha within the default's bar (MAD <= 1e-3 on every frame of every
# shared clip, no growth): bench/results/cpu-fidelity.json. Where it does and the CPU has
# BF16 arithmetic (AVX512-BF16 or AMX), auto times it beside the float32 engines. Measured:
# worst frame 4.4e-3 (nasa_13013, growing), over the bar on 5 of the 12 clips: opt-in only.
BF16_MEETS_BAR = False


def native_bf16() -> bool:
    """The CPU has BF16 arithmetic (AVX512-BF16 or AMX-BF16), which oneDNN uses."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def requested_engine(engine: Optional[str] = None) -> str:
    """``engine`` or ``$NVPIPE_ENGINE`` or ``"auto"``; a ``NvpipeError`` for another name."""
    name = (engine or os.environ.get(ENGINE_ENV) or "auto").strip().lower()
    if name not in ENGINES:
        raise NvpipeError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}"
                          + (f" (from ${ENGINE_ENV})" if not engine else ""))
    return name


def available(engine: str) -> bool:
    """``engine``'s library is installed (torch always is). Found, not imported: importing
    both file engines' libraries costs ~0.15 s of every run's start-up, and only the one
    chosen is needed (an engine that then fails to import is left out of auto)."""
    if engine == "torch":
        return True
    try:
        return importlib.util.find_spec(engine) is not None
    except (ImportError, ValueError):
        return False


def _version(engine: str) -> str:
    """The library's version from its installed metadata (no import), as the cache keys it."""
    if not available(engine):
        return "absent"
    try:
        return metadata.version(engine)
    except metadata.PackageNotFoundError:  # installed under another name (onnxruntime-gpu)
        return getattr(__import__(engine), "__version__", "?")


def _cache_file() -> Path:
    from rvm import cache_dir

    return cache_dir() / "cpu-engine.json"


def cpu_model() -> str:
    """This CPU's model name (/proc/cpuinfo), or what platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def library_versions() -> str:
    """The engines' libraries as the cache's keys name them."""
    return "|".join([f"torch {torch.__version__}"]
                    + [f"{name} {_version(name)}" for name in FILE_ENGINES])


def choice_key(shape: Sequence[int], variant: str, use_refiner: bool, threads: int) -> str:
    height, width = shape[-2:]
    return (f"{cpu_model()}|threads {threads}|{library_versions()}|"
            f"{variant}|{height}x{width}|{'refiner' if use_refiner else 'plain'}")


def read_choices() -> dict:
    try:
        with open(_cache_file()) as handle:
            choices = json.load(handle)
        return choices if isinstance(choices, dict) else {}
    except (OSError, ValueError):
        return {}


def _record_choice(key: str, entry: dict) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        choices = read_choices()
        choices[key] = entry
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        temp.write_text(json.dumps(choices, indent=1))
        os.replace(temp, path)
    except OSError:
        pass  # a read-only cache: time again next run


def _load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _time_calls(implementations: dict, src_sm: torch.Tensor, calls: int) -> dict[str, float]:
    """Median ms per call of each implementation, interleaved (load drifts hit both)."""
    times: dict[str, list[float]] = {name: [] for name in implementations}
    for implementation in implementations.values():
        implementation(src_sm)  # warm-up: allocations, oneDNN primitives, ORT arenas
    for _ in range(calls):
        for name, implementation in implementations.items():
            started = time.perf_counter()
            implementation(src_sm)
            times[name].append((time.perf_counter() - started) * 1000)
    for implementation in implementations.values():
        implementation.reset()
    return {name: statistics.median(values) for name, values in times.items()}


class CpuMatting:
    """The matting interface over the engine chosen for this machine (module docstring).

    Args:
        network: an ``rvm.MattingNetwork`` (prepared in place for the CPU by ``EagerMatting``).
        downsample_ratio: the job's ratio (1: no refiner).
        engine: ``"auto"``, ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (None:
            ``$NVPIPE_ENGINE`` or auto).
        dtype: the network's precision: float32, or bfloat16 (torch only; coefficients are
            returned as float32 either way). None: float32, or under auto also
            ``"torch-bfloat16"`` where ``BF16_MEETS_BAR`` and ``native_bf16()``.

    ``name`` is the engine running (None until the first call under auto); ``timings`` the
    ms per call measured for the choice (empty when it came from the cache or was asked).
    """

    def __init__(self, network: torch.nn.Module, *, downsample_ratio: Optional[float],
                 engine: Optional[str] = None, dtype: Optional[torch.dtype] = torch.float32,
                 coefficient_format: torch.memory_format = torch.contiguous_format):
        import rvm

        from nvpipe.platform.threads import budget

        self.network = network
        self.ratio = downsample_ratio
        self.bf16_candidate = dtype is None and BF16_MEETS_BAR and native_bf16()
        dtype = dtype or torch.float32
        self.dtype = dtype
        self.coefficient_format = coefficient_format
        self.threads = budget().network
        self.requested = requested_engine(engine)
        self.timings: dict[str, float] = {}
        self.name: Optional[str] = None
        self._impl = None
        fits_file = isinstance(network, rvm.MattingNetwork) and dtype == torch.float32
        # auto's candidates: torch, and the installed file engines where the network fits.
        self.candidates = ("torch",) + tuple(
            name for name in FILE_ENGINES if fits_file and available(name))
        if self.requested in FILE_ENGINES:
            if not available(self.requested):
                raise NvpipeError(f"--engine {self.requested} needs {LIBRARY[self.requested]}: "
                                  f"pip install {self.requested}")
            if not fits_file:
                raise NvpipeError(f"--engine {self.requested} runs float32 RVM networks only "
                                  "(use --engine torch for --dtype bfloat16)")
            self._start(self.requested)
        elif self.requested == "torch" or len(self.candidates) == 1:
            self._start("torch")

    def _make(self, name: str):
        if name == BF16_ENGINE:
            import copy

            return EagerMatting(copy.deepcopy(self.network), None, "cpu", torch.bfloat16,
                                downsample_ratio=self.ratio,
                                coefficient_format=self.coefficient_format)
        if name == "onnxruntime":
            from nvpipe.engine.matting.ort import OrtMatting

            return OrtMatting(self.network, self.ratio, threads=self.threads,
                              coefficient_format=self.coefficient_format)
        if name == "openvino":
            from nvpipe.engine.matting.openvino import OpenVinoMatting

            return OpenVinoMatting(self.network, self.ratio, threads=self.threads,
                                   coefficient_format=self.coefficient_format)
        return EagerMatting(self.network, None, "cpu", self.dtype, downsample_ratio=self.ratio,
                            coefficient_format=self.coefficient_format)

    def _start(self, name: str, implementation=None) -> None:
        self.name = name
        self._impl = implementation if implementation is not None else self._make(name)

    def _choose(self, src_sm: torch.Tensor) -> None:
        """auto: the cached choice for this input size, else time every candidate and record
        the fastest."""
        use_refiner = self.ratio is None or float(self.ratio) != 1
        names = self.candidates + ((BF16_ENGINE,) if self.bf16_candidate else ())
        key = choice_key(src_sm.shape, getattr(self.network, "variant", "mobilenetv3"),
                         use_refiner, self.threads) + ("|bf16" if self.bf16_candidate else "")
        cached = read_choices().get(key)
        if isinstance(cached, dict) and cached.get("engine") in names:
            self._start(cached["engine"])
            return
        candidates = {}
        for name in names:
            try:
                candidates[name] = self._make(name)
            except ImportError:  # found but broken: auto runs without it
                pass
        one = src_sm[:1] if src_sm.ndim == 4 else src_sm
        with torch.inference_mode():
            self.timings = _time_calls(candidates, torch.rand_like(one), TIMED_CALLS)
        winner = min(self.timings, key=self.timings.get)
        load = _load_average()
        if load is None or load <= self.threads:
            # Kept only when timed on a machine that was not busy: with other work on the
            # cores the engines' order can change (2 cores, 480x270-512x288: ORT 75 vs torch
            # 94 ms at load 4; torch 245 vs ORT 268 ms at load 7), and the choice lasts.
            _record_choice(key, {"engine": winner, "load_1min": load,
                                 "ms_per_frame": {k: round(v, 2) for k, v in self.timings.items()},
                                 "date": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self._start(winner, candidates[winner])

    def __call__(self, src_sm: torch.Tensor, src=None) -> tuple[torch.Tensor, torch.Tensor]:
        if self._impl is None:
            self._choose(src_sm)
        coeff_a, coeff_b = self._impl(src_sm, src)
        if coeff_a.dtype != torch.float32:  # bfloat16 network: the tail takes float32
            coeff_a, coeff_b = coeff_a.float(), coeff_b.float()
        return coeff_a, coeff_b

    def state(self) -> tuple[torch.Tensor, ...]:
        return self._impl.state() if self._impl is not None else ()

    def load_state(self, states: Sequence[torch.Tensor]) -> None:
        if self._impl is None:
            if len(states) == 0:
                return
            self._start("torch")  # no input size to time on yet; keep the state
        self._impl.load_state(states)

    def reset(self) -> None:
        if self._impl is not None:
            self._impl.reset()


__all__ = ["CpuMatting", "ENGINES", "ENGINE_ENV", "FILE_ENGINES", "available",
           "requested_engine", "read_choices"]
