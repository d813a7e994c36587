"""The CPU pipeline's fused kernels: ``kernels/cpu/nvpipe_cpu.c``, built once, loaded by ctypes.

At 1080p the PyTorch references make 10-20 full-frame passes (measured here, 2 cores, quiet
machine, same run: tail -> NV12 62 ms against 7.7 ms here; NV12 -> RGB with its downsample
8.6 ms against 2.7 ms); these C loops make one pass each. Each call is split into row bands across
``torch.get_num_threads()`` Python threads; ctypes releases the GIL while C runs.

The library is compiled on first use with the system C compiler (``$CC`` or ``cc``) into
``$NVPIPE_CACHE/cpu-kernels`` (default ``~/.cache/nvpipe``), keyed by the source and the
CPU; ``NVPIPE_CPU_LIBRARY`` names a prebuilt one (``CMakeLists.txt`` builds it) and
``NVPIPE_NATIVE=0`` turns it off. Where no compiler is found, the dispatchers fall back to
the PyTorch references, which compute the same function.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ._common import KIND_CODES, KernelError, small_size

SOURCE = Path(__file__).with_name("cpu") / "nvpipe_cpu.c"

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_failure: Optional[str] = None
_pool: Optional[ThreadPoolExecutor] = None


def _cache_dir() -> Path:
    from rvm import cache_dir

    return cache_dir() / "cpu-kernels"


def _cpu_key() -> str:
    """-march=native code runs only on CPUs with the same features: key the build by them."""
    facts = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as info:
            for prefix in ("model name", "flags"):
                info.seek(0)
                facts += [next((line for line in info if line.startswith(prefix)), "")]
    except OSError:
        pass
    return "|".join(facts)


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise OSError("no C compiler (cc, gcc or clang) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        flags = ["-O3", "-shared", "-fPIC", "-fno-math-errno"]
        if platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64"):
            flags.append("-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native")
        done = subprocess.run([compiler, *flags, "-o", str(built), str(SOURCE), "-lm"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"{compiler} failed: {done.stderr.strip().splitlines()[-1:]}")
        os.replace(built, target)  # atomic: a concurrent build never loads a half-written file


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    p, i, i64, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
    library.nvp_yuv420_to_rgb.argtypes = [p, i, i64, i, i, p, p, i, i]
    library.nvp_yuv420_to_rgb.restype = None
    library.nvp_resize_bilinear.argtypes = [p, i, i, i, p, i, i, f, f, i, i]
    library.nvp_resize_bilinear.restype = None
    library.nvp_tail_u8.argtypes = [p, p, i, i, p, i, i, i, p, p, p, p, i64, i64, i64, i, i]
    library.nvp_tail_u8.restype = i
    library.nvp_tail_nv12.argtypes = [p, p, i, i, p, i, i, i, p, p, p, p, p, i64, i, i]
    library.nvp_tail_nv12.restype = i
    library.nvp_colour_edges.argtypes = [p, i64, i, i, p, i, p]
    library.nvp_colour_edges.restype = i
    library.nvp_gaussian_f32.argtypes = [p, i, i, p, i, p]
    library.nvp_gaussian_f32.restype = i
    return library


def library() -> Optional[ctypes.CDLL]:
    """The loaded library, building it on first use; None (see ``unavailable_reason``) if not."""
    global _library, _failure
    if _library is not None or _failure is not None:
        return _library
    with _lock:
        if _library is not None or _failure is not None:
            return _library
        if os.environ.get("NVPIPE_NATIVE", "1") == "0":
            _failure = "turned off by NVPIPE_NATIVE=0"
            return None
        try:
            prebuilt = os.environ.get("NVPIPE_CPU_LIBRARY")
            if prebuilt:
                path = Path(prebuilt)
            else:
                digest = hashlib.sha256(SOURCE.read_bytes() + _cpu_key().encode()).hexdigest()[:16]
                path = _cache_dir() / f"nvpipe_cpu-{digest}.so"
                if not path.exists():
                    _build(path)
            _library = _declare(ctypes.CDLL(str(path)))
        except (OSError, AttributeError) as error:
            _failure = f"CPU kernels unavailable ({error}); using the PyTorch references"
    return _library


def unavailable_reason() -> Optional[str]:
    library()
    return _failure


def _workers() -> int:
    return max(1, torch.get_num_threads())


def _run_bands(function, rows: int, *args) -> None:
    """Calls ``function(*args, begin, end)`` over row bands, one per thread."""
    global _pool
    workers = min(_workers(), rows)
    if workers <= 1:
        if function(*args, 0, rows) == 0:
            raise MemoryError("CPU kernel could not allocate its row buffers")
        return
    if _pool is None or _pool._max_workers < workers:  # noqa: SLF001 - resize on demand
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nvpipe-cpu")
    bounds = [rows * k // workers for k in range(workers + 1)]
    results = list(_pool.map(lambda k: function(*args, bounds[k], bounds[k + 1]), range(workers)))
    if any(result == 0 for result in results):
        raise MemoryError("CPU kernel could not allocate its row buffers")


def _ptr(tensor: Optional[torch.Tensor]):
    return None if tensor is None else ctypes.c_void_p(tensor.data_ptr())


def _floats(values) -> ctypes.Array:
    return (ctypes.c_float * len(values))(*values)


# ------------------------------------------------------------------------- the kernels


def yuv420_to_rgb(frame: torch.Tensor, coefficients, height: int, width: int,
                  downsample: Optional[float], out: Optional[torch.Tensor] = None,
                  out_small: Optional[torch.Tensor] = None):
    """NV12 (uint8) or P016 (uint16) ``(H + ceil(H/2), P)`` -> float32 ``rgb [3,H,W]`` and,
    with ``downsample`` r, ``rgb_small [3, *small_size(H, W, r)]`` (PyTorch's bilinear,
    scale 1/r). Same arithmetic as ``kernels.color``'s reference. ``out``/``out_small``:
    contiguous float32 destinations (reused buffers spare the page faults of fresh ones)."""
    if frame.stride(1) != 1:
        frame = frame.contiguous()
    lib = library()
    rgb = out if out is not None else torch.empty((3, height, width), dtype=torch.float32)
    bytes_per_sample = 1 if frame.dtype == torch.uint8 else 2
    _run_bands(lib.nvp_yuv420_to_rgb, height, _ptr(frame), bytes_per_sample, frame.stride(0),
               height, width, _floats(coefficients), _ptr(rgb))
    if downsample is None:
        return rgb, None
    small_h, small_w = small_size(height, width, downsample)
    small = out_small if out_small is not None else torch.empty((3, small_h, small_w), dtype=torch.float32)
    scale = 1.0 / float(downsample)  # PyTorch: 1 / scale_factor when one is given
    _run_bands(lib.nvp_resize_bilinear, small_h, _ptr(rgb), 3, height, width, _ptr(small),
               small_h, small_w, scale, scale)
    return rgb, small


def matting_tail_u8(args, out: torch.Tensor) -> torch.Tensor:
    """The fused tail of ``kernels.tail`` into uint8 ``out [N, C, H, W]`` (any strides)."""
    lib = library()
    for n in range(args.n):
        frame = _Frame(args, n)
        target = out[n]
        _run_bands(lib.nvp_tail_u8, args.height, _ptr(frame.coeff_a), _ptr(frame.coeff_b),
                   frame.low_h, frame.low_w, _ptr(frame.src), args.height, args.width,
                   KIND_CODES[args.output], _floats(args.colour), _ptr(frame.bg_u8),
                   _ptr(frame.bg_float), _ptr(target), target.stride(0), target.stride(1),
                   target.stride(2))
    return out


def matting_tail_nv12(args, coefficients, out: torch.Tensor) -> torch.Tensor:
    """The fused tail of ``kernels.nv12`` straight into NV12 ``out (H + ceil(H/2), >= W)``."""
    lib = library()
    if out.stride(1) != 1:
        raise KernelError("NV12 out must have unit column stride")
    frame = _Frame(args, 0)
    rows = [value for row in coefficients for value in row]
    _run_bands(lib.nvp_tail_nv12, (args.height + 1) // 2, _ptr(frame.coeff_a),
               _ptr(frame.coeff_b), frame.low_h, frame.low_w, _ptr(frame.src), args.height,
               args.width, KIND_CODES[args.output], _floats(args.colour), _ptr(frame.bg_u8),
               _ptr(frame.bg_float), _floats(rows), _ptr(out), out.stride(0))
    return out


def colour_edges(rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``kernels.edges``' C kernel: uint8 ``rgb (h, w, 3)`` (pixels 3 bytes apart, rows any
    pitch) -> float32 ``(h, w)``; ``weights`` float64, the Gaussian's centre weight then
    those 1..radius from it. One thread: it runs on the tracker's own."""
    out = np.empty(rgb.shape[:2], np.float32)
    weights = np.ascontiguousarray(weights, np.float64)
    if library().nvp_colour_edges(rgb.ctypes.data, rgb.strides[0], rgb.shape[0], rgb.shape[1],
                                  weights.ctypes.data, len(weights) - 1, out.ctypes.data) == 0:
        raise MemoryError("CPU kernel could not allocate its planes")
    return out


def gaussian_blur(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``kernels.gaussian``'s C kernel: float32 ``image (h, w)`` -> float32 ``(h, w)``;
    ``weights`` as ``colour_edges`` takes them. One thread."""
    image = np.ascontiguousarray(image, np.float32)
    out = np.empty_like(image)
    weights = np.ascontiguousarray(weights, np.float64)
    if library().nvp_gaussian_f32(image.ctypes.data, image.shape[0], image.shape[1],
                                  weights.ctypes.data, len(weights) - 1, out.ctypes.data) == 0:
        raise MemoryError("CPU kernel could not allocate its planes")
    return out


class _Frame:
    """Frame ``n`` of a batched tail call, as contiguous float32 (uint8 background kept)."""

    def __init__(self, args, n: int):
        self.coeff_a = args.coeff_a[n].to(torch.float32).contiguous()
        self.coeff_b = args.coeff_b[n].to(torch.float32).contiguous()
        self.src = args.src[n].to(torch.float32).contiguous()
        self.low_h, self.low_w = self.coeff_a.shape[-2:]
        self.bg_u8 = self.bg_float = None
        if args.background is not None:
            background = args.background[n if args.background.shape[0] > 1 else 0]
            if background.dtype == torch.uint8:
                self.bg_u8 = background.contiguous()
            else:
                self.bg_float = background.to(torch.float32).contiguous()
