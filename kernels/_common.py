"""Shared pieces of the kernels: Triton availability, the low-resolution size, colour
matrices. Which implementation runs is decided in one place, ``_dispatch``."""

from __future__ import annotations

import importlib
import math
import os
import threading
from typing import Optional

import torch

from nvpipe.errors import NvpipeError

_have_triton: Optional[bool] = None


def have_triton() -> bool:
    """Whether Triton imports here (tried once, on the first call). Triton is optional: the
    references and the C kernels run without it, and the Triton kernels
    (``kernels/_triton_*.py``) are imported only where one launches, so the CPU pipeline
    never pays Triton's import (0.16 s on the 2-core CPU VM)."""
    global _have_triton
    if _have_triton is None:
        try:
            importlib.import_module("triton")
            _have_triton = True
        except ImportError:
            _have_triton = False
    return _have_triton


def __getattr__(name: str):
    if name == "HAVE_TRITON":  # the old constant, now asked for when read
        return have_triton()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive ints (a launch grid's size)."""
    return -(-a // b)


# Output kinds as the kernels number them: the Triton kernels' KIND and the C enum in
# kernels/cpu/nvpipe_cpu.c both use these values.
KIND_CODES = {"composite": 0, "foreground": 1, "alpha": 2, "rgba": 3, "rgba_premultiplied": 4}

IMPLS = (None, "triton", "reference", "native")  # native: kernels/cpu/*.c, CPU only

# Luma weights (Kr, Kb) of each matrix; Kg = 1 - Kr - Kb (ITU-R BT.601-7, BT.709-6, BT.2020-2).
LUMA_WEIGHTS = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}


# Held around every Triton launch. The pipeline launches kernels from two threads (kernel 1
# on the decode thread, the tail on the network thread), and a kernel's first launch
# compiles it: Triton's JIT caches and the interpreter are not made for concurrent use
# (triton-lang/triton#5933). A launch is Python work under the GIL anyway, so the lock
# serialises nothing that ran in parallel; the kernels themselves still overlap on the GPU.
LAUNCH_LOCK = threading.RLock()


class KernelError(NvpipeError):
    """A kernel was called with inputs it cannot take (shape, dtype, device, option)."""


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def small_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """The network's low-resolution size for a ``height x width`` frame at ``ratio``:
    ``(floor(H * r), floor(W * r))`` in double precision, which is the size
    ``F.interpolate(scale_factor=r, recompute_scale_factor=False)`` gives (the downsample
    of ``nv12_to_rgb``, ``rvm.downsample`` and the official model).

    Raises ``KernelError`` for a ratio outside (0, 1] or one that leaves no pixels.
    """
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise KernelError(f"downsample must be a ratio in (0, 1], got {ratio}")
    small = int(math.floor(int(height) * ratio)), int(math.floor(int(width) * ratio))
    if min(small) < 1:
        raise KernelError(f"downsample {ratio} leaves no pixels of a {width}x{height} frame")
    return small


def check_matrix(matrix: str) -> tuple[float, float, float]:
    """Returns (Kr, Kg, Kb) for a matrix name."""
    if matrix not in LUMA_WEIGHTS:
        raise KernelError(f"matrix must be one of {tuple(LUMA_WEIGHTS)}, got {matrix!r}")
    kr, kb = LUMA_WEIGHTS[matrix]
    return kr, 1.0 - kr - kb, kb


def yuv_to_rgb_coefficients(matrix: str, full_range: bool, max_code: float, full_scale: float):
    """Affine YUV -> RGB map on raw sample values, folded into 8 numbers.

    ``R = ky*(Y - y0) + rv*(V - c0)``, ``G = ky*(Y - y0) + gu*(U - c0) + gv*(V - c0)``,
    ``B = ky*(Y - y0) + bu*(U - c0)``, returned as (ky, rv, gu, gv, bu, r0, g0, b0) with the
    offsets folded in: ``R = ky*Y + rv*V + r0`` etc.

    ``max_code`` is 2**bits - 1 of the container's sample (255 for NV12, 65535 for P016);
    ``full_scale`` the value that 1.0 maps to in full range (255, or for MSB-aligned 10-bit
    P016 ``1023 * 64``). Limited range scales from the 8-bit figures (16, 219, 128, 224),
    which MSB alignment keeps exact at any bit depth (ITU-T H.273, equations 20-31).
    """
    kr, kg, kb = check_matrix(matrix)
    unit = (max_code + 1) / 256.0  # 1 for 8-bit, 256 for MSB-aligned 16-bit containers
    c0 = 128.0 * unit
    if full_range:
        y0, y_span, c_span = 0.0, full_scale, full_scale
    else:
        y0, y_span, c_span = 16.0 * unit, 219.0 * unit, 224.0 * unit
    ky = 1.0 / y_span
    rv = 2.0 * (1.0 - kr) / c_span
    bu = 2.0 * (1.0 - kb) / c_span
    gu = -2.0 * kb * (1.0 - kb) / kg / c_span
    gv = -2.0 * kr * (1.0 - kr) / kg / c_span
    r0 = -ky * y0 - rv * c0
    g0 = -ky * y0 - (gu + gv) * c0
    b0 = -ky * y0 - bu * c0
    return ky, rv, gu, gv, bu, r0, g0, b0


def rgb_to_yuv_coefficients(matrix: str, full_range: bool):
    """RGB in [0, 1] -> 8-bit Y, U, V codes (before rounding), as three rows of 4 numbers.

    Returns ((yr, yg, yb, y0), (ur, ug, ub, u0), (vr, vg, vb, v0)) so that
    ``Y = yr*R + yg*G + yb*B + y0``. Limited range: Y in 16..235, U/V in 16..240;
    full range: Y in 0..255, U/V = 128 + 255*C (clamped to 0..255 when stored).
    """
    kr, kg, kb = check_matrix(matrix)
    y_span, y_off, c_span = (255.0, 0.0, 255.0) if full_range else (219.0, 16.0, 224.0)
    # Cb = (B - Y) / (2 (1 - Kb)), Cr = (R - Y) / (2 (1 - Kr)), both in [-0.5, 0.5].
    cb = ((-kr) / (2 * (1 - kb)), (-kg) / (2 * (1 - kb)), (1 - kb) / (2 * (1 - kb)))
    cr = ((1 - kr) / (2 * (1 - kr)), (-kg) / (2 * (1 - kr)), (-kb) / (2 * (1 - kr)))
    y_row = (kr * y_span, kg * y_span, kb * y_span, y_off)
    u_row = (cb[0] * c_span, cb[1] * c_span, cb[2] * c_span, 128.0)
    v_row = (cr[0] * c_span, cr[1] * c_span, cr[2] * c_span, 128.0)
    return y_row, u_row, v_row


def check_float_dtype(dtype: torch.dtype, what: str, allow_uint8: bool = False) -> None:
    allowed = (torch.float16, torch.bfloat16, torch.float32) + ((torch.uint8,) if allow_uint8 else ())
    if dtype not in allowed:
        raise KernelError(f"{what} must be one of {allowed}, got {dtype}")
