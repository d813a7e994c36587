"""The one place that decides which implementation of a kernel op runs.

Every public op takes ``impl`` and asks ``choose_implementation`` once:

- ``"triton"``: the Triton kernel, for CUDA tensors, or for CPU tensors under
  ``TRITON_INTERPRET=1`` (the tests' interpreter); a ``KernelError`` where it cannot run.
- ``"reference"``: the plain PyTorch reference (for ``edges``, a host op on NumPy arrays: SciPy).
- ``"native"``: the fused C kernels of ``kernels/native.py``, for CPU tensors and the
  outputs the CPU pipeline uses; a ``KernelError`` where none applies.
- ``None`` (the default): Triton for CUDA tensors; for CPU tensors the C kernels where they
  apply and load, else the reference. ``TRITON_INTERPRET=1`` does not change it: the
  interpreter runs programs one by one, far slower than the C kernels.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from . import native
from ._common import IMPLS, KernelError, have_triton, interpreting

TRITON, NATIVE, REFERENCE = "triton", "native", "reference"


def choose_implementation(impl: Optional[str], tensor: Union[torch.Tensor, np.ndarray], *,
                          native_unfit: Optional[str]) -> str:
    """``"triton"``, ``"native"`` or ``"reference"`` for a call whose main input is
    ``tensor`` (a NumPy array: a host op, which has no Triton kernel).
    ``native_unfit``: why this call's arguments do not fit the C kernels (no kernel for this
    output, dtype, layout), or None where they fit."""
    if impl not in IMPLS:
        raise KernelError(f"impl must be one of {IMPLS}, got {impl!r}")
    host_array = isinstance(tensor, np.ndarray)
    on_cpu = host_array or tensor.device.type == "cpu"
    is_cuda = not host_array and tensor.is_cuda
    if impl == REFERENCE:
        return REFERENCE
    if impl == TRITON:
        if host_array or not ((is_cuda or (on_cpu and interpreting())) and have_triton()):
            raise KernelError("impl='triton' needs triton and a CUDA tensor "
                              "(or TRITON_INTERPRET=1 for CPU tensors)")
        return TRITON
    if impl == NATIVE:
        if not on_cpu:
            raise KernelError("impl='native' runs on CPU tensors only")
        if native_unfit:
            raise KernelError(f"impl='native': {native_unfit}")
        if native.library() is None:
            raise KernelError(native.unavailable_reason() or "CPU kernels unavailable")
        return NATIVE
    if is_cuda and have_triton():
        return TRITON
    if on_cpu and not native_unfit and native.library() is not None:
        return NATIVE
    return REFERENCE
