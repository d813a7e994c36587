"""The kernels' one dispatch decision and one low-resolution size.

``kernels._dispatch.choose_implementation`` decides for every op; these tests check its
table and that each public op goes through it. ``small_size`` is the size every downsample
in the pipeline produces.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import nvpipe.kernels as K
from nvpipe.kernels import _common, _dispatch, color, native, nv12, tail
from nvpipe.kernels._dispatch import choose_implementation


@pytest.mark.parametrize("interpret", ["0", "1"])
def test_default_on_cpu_is_never_the_interpreter(monkeypatch, interpret):
    cpu = torch.zeros(1)
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    expected = "native" if native.library() is not None else "reference"
    assert choose_implementation(None, cpu, native_unfit=None) == expected
    assert choose_implementation(None, cpu, native_unfit="no kernel") == "reference"
    assert choose_implementation("reference", cpu, native_unfit=None) == "reference"


def test_explicit_triton_needs_cuda_or_the_interpreter(monkeypatch):
    cpu = torch.zeros(1)
    if _common.HAVE_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert choose_implementation("triton", cpu, native_unfit=None) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(K.KernelError, match="impl='triton' needs"):
        choose_implementation("triton", cpu, native_unfit=None)
    with pytest.raises(K.KernelError, match="impl must be one of"):
        choose_implementation("cuda", cpu, native_unfit=None)


def test_explicit_native_says_why_it_cannot_run(monkeypatch):
    cpu = torch.zeros(1)
    with pytest.raises(K.KernelError, match="impl='native': writes uint8 only"):
        choose_implementation("native", cpu, native_unfit="writes uint8 only")
    monkeypatch.setattr(native, "library", lambda: None)
    monkeypatch.setattr(native, "unavailable_reason", lambda: "no C compiler")
    with pytest.raises(K.KernelError, match="no C compiler"):
        choose_implementation("native", cpu, native_unfit=None)
    assert choose_implementation(None, cpu, native_unfit=None) == "reference"


def test_native_where_no_c_kernel_applies_is_an_error():
    with pytest.raises(K.KernelError, match="impl='native'"):
        K.rgb_to_nv12(torch.rand(3, 4, 6), impl="native")
    with pytest.raises(K.KernelError, match="impl='native'"):
        K.matting_tail(torch.zeros(4, 2, 3), torch.zeros(4, 2, 3), torch.rand(3, 4, 6), output="alpha",
                       out_dtype=torch.float32, impl="native")


@pytest.mark.parametrize("module, call", [
    (color, lambda: K.nv12_to_rgb(torch.zeros(6, 4, dtype=torch.uint8), out_dtype=torch.float32)),
    (tail, lambda: K.matting_tail(torch.zeros(4, 2, 2), torch.zeros(4, 2, 2), torch.rand(3, 4, 4),
                                  output="alpha", out_dtype=torch.uint8)),
    (nv12, lambda: K.rgb_to_nv12(torch.rand(3, 4, 4))),
    (nv12, lambda: K.matting_tail_nv12(torch.zeros(4, 2, 2), torch.zeros(4, 2, 2), torch.rand(3, 4, 4),
                                       output="alpha")),
])
def test_every_op_asks_the_one_dispatcher(monkeypatch, module, call):
    """Each public op calls choose_implementation once, with its impl and main tensor, and
    runs what it answers (here: the reference, whatever the default would be)."""
    asked = []

    def spy(impl, tensor, *, native_unfit):
        asked.append((impl, tuple(tensor.shape)))
        return "reference"

    monkeypatch.setattr(module, "choose_implementation", spy)
    call()
    assert len(asked) == 1 and asked[0][0] is None


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


def test_importing_the_kernels_does_not_import_triton():
    """The CPU pipeline never pays Triton's import: ``nvpipe.kernels`` and the CPU kernels
    run without it; the Triton bodies load on the first Triton launch."""
    code = (
        "import sys, torch\n"
        "before = 'triton' in sys.modules\n"
        "import nvpipe.kernels as K\n"
        "f = torch.randint(0, 256, (12, 8), dtype=torch.uint8)\n"
        "K.nv12_to_rgb(f, out_dtype=torch.float32)\n"
        "K.matting_tail(torch.rand(4, 2, 2), torch.rand(4, 2, 2), torch.rand(3, 8, 8),\n"
        "               output='alpha')\n"
        "print(before, 'triton' in sys.modules, any(m.startswith('kernels._triton') or\n"
        "      m.startswith('nvpipe.kernels._triton') for m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "TRITON_INTERPRET": "0"})
    assert run.returncode == 0, run.stderr[-2000:]
    before, after, bodies = run.stdout.split()
    assert bodies == "False"
    if before == "False":  # torch itself may load Triton in some builds; not this one
        assert after == "False"


@pytest.mark.skipif(not _common.have_triton(), reason="triton is not installed")
def test_a_triton_launch_loads_its_bodies(monkeypatch):
    """Under the interpreter an explicit Triton call runs the kernel from _triton_color."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    frame = torch.randint(0, 256, (12, 8), dtype=torch.uint8)
    got = K.nv12_to_rgb(frame, out_dtype=torch.float32, impl="triton")
    want = K.nv12_to_rgb_reference(frame, out_dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert any(name.endswith("kernels._triton_color") for name in sys.modules)
