"""The kernels' one dispatch rule and one low-resolution size.

The rule is written once (``kernels._common.DISPATCH_RULE``); the package and module
docstrings quote it word for word, and ``use_triton`` / ``native.wanted`` do what it says.
``small_size`` is the size every downsample in the pipeline produces.
"""

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nvpipe.kernels as K
from nvpipe.kernels import _common, native

REPO = Path(__file__).resolve().parents[1]
# docs/design.md's Kernels section should quote it too (add it here when it does).
STATED_IN = ("kernels/__init__.py", "kernels/_common.py", "docs/design.md")


def _plain(text: str) -> str:
    """Text without markup (backticks) and line breaks, for comparing prose."""
    return re.sub(r"\s+", " ", text.replace("`", "")).strip()


@pytest.mark.parametrize("path", STATED_IN)
def test_the_rule_is_quoted_word_for_word(path):
    assert _plain(_common.DISPATCH_RULE) in _plain((REPO / path).read_text())


def test_default_on_cpu_is_never_the_interpreter(monkeypatch):
    cpu = torch.zeros(1)
    for interpret in ("0", "1"):
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        assert not _common.use_triton(cpu, None)
        assert not _common.use_triton(cpu, "reference") and not _common.use_triton(cpu, "native")
    if _common.HAVE_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert _common.use_triton(cpu, "triton")
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(K.KernelError, match="impl='triton' needs"):
            _common.use_triton(cpu, "triton")
    with pytest.raises(K.KernelError, match="impl must be one of"):
        _common.use_triton(cpu, "cuda")


def test_default_on_cpu_takes_the_c_kernels_where_they_load():
    cpu = torch.zeros(1)
    assert native.wanted(None, cpu) == (native.library() is not None)


def test_native_where_no_c_kernel_applies_is_an_error():
    with pytest.raises(K.KernelError, match="impl='native'"):
        K.rgb_to_nv12(torch.rand(3, 4, 6), impl="native")
    with pytest.raises(K.KernelError, match="impl='native'"):
        K.matting_tail(torch.zeros(4, 2, 3), torch.zeros(4, 2, 3), torch.rand(3, 4, 6), output="alpha",
                       out_dtype=torch.float32, impl="native")


@pytest.mark.parametrize("height, width, ratio", [
    (1080, 1920, 0.25), (2160, 3840, 0.125), (4320, 7680, 0.0625), (720, 1280, 512 / 1280),
    (640, 360, 0.8), (1080, 1920, 512 / 1920), (2160, 3840, 512 / 3840), (47, 63, 0.37), (5, 4, 0.25),
    (1001, 999, 0.999), (17, 3, 1.0)])
def test_small_size_is_interpolates_size(height, width, ratio):
    expected = F.interpolate(torch.empty(1, 1, height, width), scale_factor=ratio, mode="bilinear",
                             align_corners=False, recompute_scale_factor=False).shape[-2:]
    assert K.small_size(height, width, ratio) == tuple(expected)
    assert K.small_size(height, width, ratio) == (math.floor(height * ratio), math.floor(width * ratio))


@pytest.mark.parametrize("ratio, message", [(0.0, "ratio in"), (1.5, "ratio in"), (-0.25, "ratio in"),
                                            (0.1, "leaves no pixels")])
def test_small_size_refuses_bad_ratios(ratio, message):
    with pytest.raises(K.KernelError, match=message):
        K.small_size(5, 4, ratio)
