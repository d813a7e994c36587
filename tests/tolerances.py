"""One tolerance table for the suite: how far a result may be from its reference, and why.

Kernels and networks are compared to references on fresh random inputs and on real footage;
every test takes its bound from here, so a change of policy is one line."""

import torch

# A kernel against its PyTorch reference, max abs by output dtype: FP32 rounding order;
# FP16/BF16 one unit in the last place at 1.0 (2^-10, 2^-7); uint8 one level of rounding.
KERNEL = {torch.float32: 1e-5, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7,
          torch.uint8: 1}

# The FP32 network against the official ONNX in ONNX Runtime, max abs
# (docs/rvm-architecture.md measures about 3e-5 at ratio 0.999).
NETWORK_FP32 = 1e-4
# Our FP32 ONNX export against the official ONNX, max abs: the same bound.
EXPORT_FP32 = NETWORK_FP32
# TorchScript against eager PyTorch (the same operations), max abs.
SCRIPT = 1e-5

# Reduced precision (FP16) alpha against FP32: mean abs per frame, and the worst pixel.
ALPHA_MAD = 1e-3
ALPHA_MAX = 0.1
# FP16 ONNX in CPU ONNX Runtime, real frames at ratio 0.25 (fgr/pha), max abs: measured 0.024.
FP16_ONNX_MAX = 0.05

# The pipeline on each device (conftest.DEVICES) against RVM's own FP32 network on the CPU
# (the full model with its refiner), alpha mean abs per frame by the precision the device's
# network runs in (runner.default_dtype): FP32 on the CPU (the BN-folded, channels_last
# network and the C tail; measured 1e-8 mean, 6e-6 max on the 360x640 clip), FP16 on CUDA.
ALPHA_MAD_BY_DTYPE = {torch.float32: 1e-5, torch.float16: ALPHA_MAD, torch.bfloat16: ALPHA_MAD}
# No drift of the recurrent state along a clip: the last third's mean error at most this
# many times the first third's, plus a floor (small errors swing with content).
DRIFT_FACTOR, DRIFT_FLOOR = 2.0, 2e-4
# Decoded pictures of two decoders (NVDEC, PyAV), in levels of the stream's bit depth, and
# their RGB conversions in 8-bit levels.
DECODE_LEVELS = 2
RGB_LEVELS = 2


def assert_close_alphas(errors, dtype: torch.dtype) -> None:
    """Per-frame mean errors within ``ALPHA_MAD_BY_DTYPE[dtype]`` on every frame, no drift."""
    import numpy as np

    errors = np.asarray(errors, dtype=float)
    assert len(errors) > 0
    bound = ALPHA_MAD_BY_DTYPE[dtype]
    assert errors.max() < bound, f"worst frame {errors.argmax()}: {errors.max():.2e}"
    third = max(1, len(errors) // 3)
    assert errors[-third:].mean() <= DRIFT_FACTOR * errors[:third].mean() + DRIFT_FLOOR, errors
