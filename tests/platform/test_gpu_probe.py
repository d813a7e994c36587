"""nvpipe.platform.gpu: what --device cuda needs, reported in one line; runs without a GPU."""

import sys
import types

import pytest
import torch

from nvpipe.platform import gpu
from nvpipe.errors import DeviceError, NvpipeError


@pytest.fixture
def failing_pynvvideocodec(tmp_path, monkeypatch):
    """A PyNvVideoCodec whose import raises RuntimeError, as the real one does without a
    driver (it cannot load libnvidia-encode.so.1)."""
    package = tmp_path / "PyNvVideoCodec"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise RuntimeError('libnvidia-encode.so.1: cannot open shared object file: No such "
        "file or directory\\n\\n=== TROUBLESHOOTING STEPS ===\\nmore lines')\n")
    monkeypatch.delitem(sys.modules, "PyNvVideoCodec", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.fixture
def working_pynvvideocodec(monkeypatch):
    module = types.ModuleType("PyNvVideoCodec")
    module.__version__ = "2.2.4"
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", module)
    return module


def _pretend_cuda(monkeypatch, available: bool, init_error: str = ""):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if available else 0)

    def init():
        if init_error:
            raise RuntimeError(init_error)

    monkeypatch.setattr(torch.cuda, "init", init)


def test_cpu_only_torch_is_named(monkeypatch, working_pynvvideocodec):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(DeviceError) as caught:
        gpu.check_cuda_ready(need_triton=False)
    message = str(caught.value)
    assert "CPU-only build" in message and torch.__version__ in message
    assert "\n" not in message
    assert isinstance(caught.value, NvpipeError)


def test_missing_driver_is_named(monkeypatch, working_pynvvideocodec):
    _pretend_cuda(monkeypatch, available=False,
                  init_error="Found no NVIDIA driver on your system. Please check...\nsecond")
    with pytest.raises(DeviceError, match="Found no NVIDIA driver on your system") as caught:
        gpu.check_cuda_ready(need_triton=False)
    assert "second" not in str(caught.value)


def test_gpu_index_beyond_visible_devices(monkeypatch, working_pynvvideocodec):
    _pretend_cuda(monkeypatch, available=True)
    with pytest.raises(DeviceError, match="GPU 3 requested but only 1"):
        gpu.check_cuda_ready(need_triton=False, gpu_id=3)


def test_pynvvideocodec_runtime_error_is_caught(monkeypatch, failing_pynvvideocodec):
    _pretend_cuda(monkeypatch, available=True)
    with pytest.raises(DeviceError) as caught:
        gpu.check_cuda_ready(need_triton=False)
    message = str(caught.value)
    assert "PyNvVideoCodec failed to load" in message
    assert "libnvidia-encode.so.1" in message
    assert "NVIDIA_DRIVER_CAPABILITIES must include video" in message
    assert "TROUBLESHOOTING" not in message and "\n" not in message


def test_pynvvideocodec_not_installed(monkeypatch):
    _pretend_cuda(monkeypatch, available=True)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # import raises ImportError
    with pytest.raises(DeviceError, match="PyNvVideoCodec is not installed"):
        gpu.check_cuda_ready(need_triton=False)
    # Not needed, not reported.
    gpu.check_cuda_ready(need_decoder=False, need_triton=False)


def test_triton_missing_is_named(monkeypatch, working_pynvvideocodec):
    _pretend_cuda(monkeypatch, available=True)
    monkeypatch.setitem(sys.modules, "triton", None)
    with pytest.raises(DeviceError, match="Triton is not installed"):
        gpu.check_cuda_ready()


def test_triton_interpreter_is_refused(monkeypatch, working_pynvvideocodec):
    _pretend_cuda(monkeypatch, available=True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(DeviceError, match="TRITON_INTERPRET=1"):
        gpu.check_cuda_ready()


def test_every_missing_piece_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)
    monkeypatch.setitem(sys.modules, "triton", None)
    with pytest.raises(DeviceError) as caught:
        gpu.check_cuda_ready()
    message = str(caught.value)
    for piece in ("CPU-only build", "PyNvVideoCodec is not installed", "Triton is not installed"):
        assert piece in message
    assert "\n" not in message


def test_ready_when_everything_is_there(monkeypatch, working_pynvvideocodec):
    _pretend_cuda(monkeypatch, available=True)
    monkeypatch.setattr(gpu, "_triton_problem", lambda probe_driver=True: None)
    gpu.check_cuda_ready()  # no exception


def test_describe_reports_reasons_without_raising():
    facts = gpu.describe()
    assert set(facts) >= {"torch cuda", "device", "driver", "pynvvideocodec", "nvdec", "nvenc",
                          "triton", "ready"}
    assert all(isinstance(value, str) and value for value in facts.values())
    if not torch.cuda.is_available():
        assert facts["ready"].startswith("no: ")
        assert facts["device"].startswith("unavailable: ")
        assert facts["driver"].startswith("unavailable: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_has_nvenc_false_without_gpu():
    assert gpu.has_nvenc() is False
    assert gpu.nvenc_status()[1] == "no CUDA GPU"


@pytest.mark.parametrize("supported", [0, 1])
def test_caps_supported_reads_pynvvideocodec_2_keys(supported):
    # PyNvVideoCodec 2.x GetDecoderCaps: "supported" (cuvid bIsSupported), engines, sizes.
    # The engine count and sizes need not be zero for an unsupported stream: "supported" decides.
    from nvpipe.platform.gpu import caps_supported

    caps = {"supported": supported, "num_decoder_engines": 7, "width_max": 8192,
            "height_max": 8192, "bitdepth": 10}
    assert caps_supported(caps) is bool(supported)
    assert caps_supported({"num_decoder_engines": 7, "width_max": 0}) is False
