"""One tolerance policy for the tests that run on every device (conftest.DEVICES).

The reference is RVM's own network in FP32 on the CPU (``rvm.load(...)(src, *state)``, the
full model with its refiner). What the pipeline may differ from it by depends on the
precision its network runs in on that device (``runner.default_dtype``): FP32 on the CPU
(the BN-folded, channels_last network and the C tail: measured 1e-8 mean, 6e-6 max on the
360x640 clip), FP16 on CUDA (measured 2e-4 at worst on the CPU's FP16 emulation,
bench/results/README.md; the target is 1e-3).
"""

import numpy as np
import torch

# Mean absolute alpha error per frame ([0, 1] scale), by the network's precision.
ALPHA_MAE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-3}
# No drift of the recurrent state along a clip: the last third's mean error at most this
# many times the first third's, plus a floor (small errors swing with content).
DRIFT_FACTOR, DRIFT_FLOOR = 2.0, 2e-4
# Decoded pictures of two decoders (NVDEC, PyAV), in levels of the stream's bit depth, and
# their RGB conversions in 8-bit levels.
DECODE_LEVELS = 2
RGB_LEVELS = 2


def alpha_mae(dtype: torch.dtype) -> float:
    return ALPHA_MAE[dtype]


def assert_close_alphas(errors, dtype: torch.dtype) -> None:
    """Per-frame mean errors within ``alpha_mae(dtype)`` on every frame, and no drift."""
    errors = np.asarray(errors, dtype=float)
    assert len(errors) > 0
    assert errors.max() < alpha_mae(dtype), f"worst frame {errors.argmax()}: {errors.max():.2e}"
    third = max(1, len(errors) // 3)
    assert errors[-third:].mean() <= DRIFT_FACTOR * errors[:third].mean() + DRIFT_FLOOR, errors
