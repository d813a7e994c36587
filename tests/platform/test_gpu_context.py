"""The stray CUDA context (../shared/docs/gpu-first-contact.md, section 1): NVENC presence
decided without PyNvVideoCodec's encoder where NVML or the GPU's name can tell, every
PyNvVideoCodec probe leaving the thread's current context as it found it, decoder caps
asked once, and CPU decoding where NVDEC cannot run.

On the CPU a fake libcuda (a context stack per the driver API) and a fake PyNvVideoCodec
that leaks as the 2.2.4 binary does stand in; on a GPU the real ones are checked.
"""

import ctypes
import sys
import types
import warnings

import pytest
import torch

from conftest import needs_cuda
from nvpipe.platform import gpu
from nvpipe.errors import DeviceError

PRIMARY = 0x1000


class FakeLibCuda:
    """The driver calls ``gpu.CudaDriver`` makes, over one thread's context stack."""

    def __init__(self, current=PRIMARY):
        self.stack = [current] if current else []
        self.primary = PRIMARY
        self.created: list[int] = []
        self.destroyed: list[int] = []
        self._next = 0x2000

    @staticmethod
    def _set(ref, value):
        ref._obj.value = value  # ctypes.byref(x)._obj is x

    # the leaking library's own calls
    def create_and_push(self) -> int:  # cuCtxCreate_v2 makes the new context current
        self._next += 0x100
        self.created.append(self._next)
        self.stack.append(self._next)
        return self._next

    # the calls CudaDriver makes
    def cuCtxGetCurrent(self, ref):
        self._set(ref, self.stack[-1] if self.stack else None)
        return 0

    def cuCtxPopCurrent_v2(self, ref):
        if not self.stack:
            return 201  # CUDA_ERROR_INVALID_CONTEXT
        self._set(ref, self.stack.pop())
        return 0

    def cuCtxDestroy_v2(self, context):
        self.destroyed.append(context.value)
        return 0

    def cuCtxSetCurrent(self, context):
        if self.stack:
            self.stack.pop()
        if context.value:
            self.stack.append(context.value)
        return 0

    def cuDeviceGetCount(self, ref):
        self._set(ref, 1)
        return 0

    def cuDeviceGet(self, ref, ordinal):
        self._set(ref, ordinal.value)
        return 0

    def cuDevicePrimaryCtxGetState(self, device, flags, active):
        self._set(active, 1)
        return 0

    def cuDevicePrimaryCtxRetain(self, ref, device):
        self._set(ref, self.primary)
        return 0

    def cuDevicePrimaryCtxRelease(self, device):
        return 0


@pytest.fixture
def libcuda(monkeypatch):
    lib = FakeLibCuda()
    monkeypatch.setattr(gpu, "cuda_driver", lambda: gpu.CudaDriver(lib))
    return lib


def leaking_pynvvideocodec(lib: FakeLibCuda) -> types.ModuleType:
    """PyNvVideoCodec 2.2.4 on a GPU without NVENC: the encoder probes create a context and
    throw without popping it; the decoder caps create and destroy theirs."""
    module = types.ModuleType("PyNvVideoCodec")
    module.__version__ = "2.2.4"
    module.calls = []

    def no_nvenc(*args, **kwargs):
        module.calls.append("encoder")
        lib.create_and_push()
        raise RuntimeError("NvEncodeAPI: nvEncOpenEncodeSessionEx: unsupported device (2)")

    def decoder_caps(**kwargs):
        module.calls.append("GetDecoderCaps")
        lib.stack.pop(lib.stack.index(lib.create_and_push()))
        return {"supported": 1, "num_decoder_engines": 7, "width_max": 8192, "height_max": 8192}

    module.GetEncoderCaps = module.CreateEncoder = no_nvenc
    module.GetDecoderCaps = decoder_caps
    module.cudaVideoCodec = types.SimpleNamespace(H264=4, HEVC=8, AV1=11)
    module.cudaVideoChromaFormat = types.SimpleNamespace(YUV420=1)
    return module


@pytest.fixture
def cuda_gpu(monkeypatch):
    """torch says a GPU of a given name is there (``cuda_gpu("NVIDIA H200")``)."""
    def pretend(name, uuid="2f9c7a1e-0000-4000-8000-000000000001"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda index=0: types.SimpleNamespace(name=name, uuid=uuid))
        gpu.nvenc_status.cache_clear()

    yield pretend
    gpu.nvenc_status.cache_clear()


def fake_nvml(monkeypatch, capacity):
    """pynvml whose encoder capacity is ``capacity`` (an int, or an exception to raise)."""
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        def __str__(self):
            return "Not Supported"

    module.NVMLError, module.NVMLError_NotSupported = NVMLError, NVMLError_NotSupported
    module.asked = []
    module.nvmlInit = module.nvmlShutdown = lambda: None
    module.nvmlDeviceGetHandleByUUID = lambda uuid: ("uuid", uuid)
    module.nvmlDeviceGetHandleByIndex = lambda index: ("index", index)

    def encoder_capacity(handle, query):
        module.asked.append((handle, query))
        if isinstance(capacity, type) and issubclass(capacity, Exception):
            raise capacity()
        return capacity

    module.nvmlDeviceGetEncoderCapacity = encoder_capacity
    module.not_supported = NVMLError_NotSupported
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


# --------------------------------------------------------------------------- the guard


def test_a_leaking_encoder_probe_is_repaired(libcuda, cuda_gpu, monkeypatch):
    """Neither NVML nor the name can tell: PyNvVideoCodec is asked, leaks twice (caps, then
    the 256x256 encoder), and the thread ends in torch's primary context with both stray
    contexts destroyed."""
    nvc = leaking_pynvvideocodec(libcuda)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", nvc)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML
    cuda_gpu("NVIDIA Graphics Device")
    with pytest.warns(RuntimeWarning, match="changed this thread's current CUDA context"):
        available, reason = gpu.nvenc_status(0, "h264")
    assert not available and "unsupported device" in reason
    assert nvc.calls == ["encoder", "encoder"]
    assert libcuda.stack == [PRIMARY]
    assert sorted(libcuda.destroyed) == sorted(libcuda.created) and len(libcuda.created) == 2
    assert PRIMARY not in libcuda.destroyed


def test_without_the_guard_the_fake_does_leak(libcuda):
    """The fake reproduces the bug the guard repairs (so the test above can fail)."""
    nvc = leaking_pynvvideocodec(libcuda)
    with pytest.raises(RuntimeError):
        nvc.GetEncoderCaps(gpuid=0, codec="h264")
    assert libcuda.stack[-1] != PRIMARY
    assert gpu.CudaDriver(libcuda).current() == libcuda.created[-1]


def test_guard_restores_a_context_the_call_popped(libcuda):
    with pytest.warns(RuntimeWarning), gpu.keep_cuda_context("a call that pops"):
        libcuda.stack.clear()
    assert libcuda.stack == [PRIMARY] and libcuda.destroyed == []


def test_guard_pops_but_never_destroys_a_primary_context(libcuda):
    libcuda.stack = []  # nothing current before the call (a fresh thread)
    with pytest.warns(RuntimeWarning), gpu.keep_cuda_context("a call that leaves the primary current"):
        libcuda.stack.append(PRIMARY)
        libcuda.create_and_push()
    assert libcuda.stack == [] and libcuda.destroyed == libcuda.created


def test_guard_is_silent_when_nothing_changed(libcuda):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gpu.keep_cuda_context("a well-behaved call"):
            libcuda.stack.pop(libcuda.stack.index(libcuda.create_and_push()))
    assert libcuda.stack == [PRIMARY]


def test_guard_restores_even_when_the_call_raises(libcuda):
    with pytest.raises(RuntimeError, match="boom"), pytest.warns(RuntimeWarning):
        with gpu.keep_cuda_context("a failing call"):
            libcuda.create_and_push()
            raise RuntimeError("boom")
    assert libcuda.stack == [PRIMARY]


def test_guard_without_libcuda_is_a_no_op(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_driver", lambda: None)
    with gpu.keep_cuda_context("anything"):
        pass


def test_decoder_caps_are_asked_once_per_process(libcuda, monkeypatch):
    nvc = leaking_pynvvideocodec(libcuda)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", nvc)
    gpu._decoder_caps.cache_clear()
    try:
        first = gpu.decoder_caps("h264", 8)
        first["supported"] = 0  # a caller's change does not reach the cache
        second = gpu.decoder_caps("h264", 8)
        gpu.decoder_caps("hevc", 10)
    finally:
        gpu._decoder_caps.cache_clear()
    assert second["supported"] == 1
    assert nvc.calls == ["GetDecoderCaps", "GetDecoderCaps"]  # h264/8 once, hevc/10 once
    assert libcuda.stack == [PRIMARY]


# --------------------------------------------------------------------------- NVENC presence


def test_nvml_not_supported_means_no_nvenc_without_touching_the_encoder(libcuda, cuda_gpu,
                                                                        monkeypatch):
    nvc = leaking_pynvvideocodec(libcuda)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", nvc)
    nvml = fake_nvml(monkeypatch, capacity=None)
    nvml_not_supported = nvml.not_supported
    nvml.nvmlDeviceGetEncoderCapacity = lambda handle, query: (_ for _ in ()).throw(
        nvml_not_supported())
    cuda_gpu("NVIDIA Graphics Device")  # a name the list does not know
    available, reason = gpu.nvenc_status(0, "hevc")
    assert not available and "Not Supported" in reason
    assert nvc.calls == [] and libcuda.stack == [PRIMARY]


def test_nvml_capacity_means_nvenc_and_asks_the_right_codec(cuda_gpu, monkeypatch):
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # must not be needed
    nvml = fake_nvml(monkeypatch, capacity=100)
    cuda_gpu("NVIDIA L4", uuid="abcd")
    assert gpu.nvenc_status(0, "hevc") == (True, "NVENC hevc present (NVML encoder capacity 100%)")
    assert nvml.asked == [(("uuid", "GPU-abcd"), 1)]  # NVML_ENCODER_QUERY_HEVC, by UUID


@pytest.mark.parametrize("capacity", [0, 100])
def test_listed_gpus_have_no_nvenc_whatever_nvml_reads(capacity, libcuda, cuda_gpu, monkeypatch):
    """Issue 17: an H200's driver may answer NVML's encoder capacity with a number (0 or
    more); the list of NVENC-less GPUs is consulted first, so .mp4 outputs never go to an
    NVENC that is not there."""
    nvc = leaking_pynvvideocodec(libcuda)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", nvc)
    nvml = fake_nvml(monkeypatch, capacity=capacity)
    cuda_gpu("NVIDIA H200")
    available, reason = gpu.nvenc_status(0, "h264")
    assert not available and "H200" in reason
    assert nvml.asked == [] and nvc.calls == [] and libcuda.stack == [PRIMARY]


def test_nvml_capacity_zero_means_no_encoder(libcuda, cuda_gpu, monkeypatch):
    nvc = leaking_pynvvideocodec(libcuda)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", nvc)
    nvml = fake_nvml(monkeypatch, capacity=0)
    cuda_gpu("NVIDIA Graphics Device")  # a name the list does not know
    available, reason = gpu.nvenc_status(0, "h264")
    assert not available and "capacity 0%" in reason
    assert len(nvml.asked) == 1 and nvc.calls == []


@pytest.mark.parametrize("name", ["NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB",
                                  "NVIDIA GH200 480GB", "NVIDIA A30"])
def test_nvenc_less_names_decide_when_nvml_cannot(name, libcuda, cuda_gpu, monkeypatch):
    nvc = leaking_pynvvideocodec(libcuda)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", nvc)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    cuda_gpu(name)
    available, reason = gpu.nvenc_status(0, "h264")
    assert not available and "has no NVENC" in reason
    assert nvc.calls == [] and libcuda.stack == [PRIMARY]


@pytest.mark.parametrize("name", ["NVIDIA RTX A3000 Laptop GPU", "NVIDIA GeForce RTX 4090",
                                  "NVIDIA L40S", "NVIDIA A10"])
def test_names_with_nvenc_are_not_listed(name):
    assert gpu._NVENC_LESS.search(name) is None


# --------------------------------------------------------------------------- CPU decoding


@pytest.fixture
def pynvvideocodec_without_video_libraries(tmp_path, monkeypatch):
    """PyNvVideoCodec as it imports where the driver's video libraries are missing."""
    package = tmp_path / "PyNvVideoCodec"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise RuntimeError('libnvidia-encode.so.1: cannot open shared object file: No such "
        "file or directory\\n\\n=== TROUBLESHOOTING STEPS ===')\n")
    monkeypatch.delitem(sys.modules, "PyNvVideoCodec", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_open_source_decodes_on_the_cpu_when_nvdec_cannot_run(
        small_clip, pynvvideocodec_without_video_libraries):
    from nvpipe.sources import open_source
    from nvpipe.sources.pyav import PyAVSource

    with pytest.warns(UserWarning) as caught:
        source = open_source(str(small_clip), device="cuda")
    with source:
        assert isinstance(source, PyAVSource)
        assert sum(1 for _ in source) == 8
    messages = [str(w.message) for w in caught]
    assert any("NVDEC cannot run" in m and "libnvidia-encode.so.1" in m
               and "decoding on the CPU" in m for m in messages)
    assert all("\n" not in m for m in messages)


def test_open_source_still_refuses_a_missing_file(tmp_path):
    from nvpipe.errors import InputError
    from nvpipe.sources import open_source

    with pytest.raises(InputError, match="not found"):
        open_source(str(tmp_path / "missing.mp4"), device="cuda")


def test_nvdec_source_itself_still_names_the_missing_libraries(
        small_clip, pynvvideocodec_without_video_libraries):
    from nvpipe.sources.nvdec import NvdecSource

    with pytest.raises(DeviceError, match="video libraries are missing"):
        NvdecSource(str(small_clip))


# --------------------------------------------------------------------------- on a GPU


def _real_current() -> int:
    lib = ctypes.CDLL("libcuda.so.1")
    context = ctypes.c_void_p()
    assert lib.cuCtxGetCurrent(ctypes.byref(context)) == 0
    return int(context.value or 0)


@needs_cuda
def test_probes_leave_the_threads_context_unchanged_on_a_gpu():
    """Every PyNvVideoCodec probe nvpipe makes, then torch work on this thread."""
    try:
        nvc = gpu.import_pynvvideocodec()
    except DeviceError as error:
        pytest.skip(f"PyNvVideoCodec unavailable: {error}")
    x = torch.arange(1 << 16, device="cuda", dtype=torch.int64)
    torch.cuda.synchronize()
    before = _real_current()
    assert before != 0
    gpu.nvenc_status.cache_clear()
    gpu.nvenc_status(0, "h264")
    assert _real_current() == before
    for probe in (lambda: gpu.encoder_caps("h264"), lambda: gpu.decoder_caps("h264", 8)):
        try:
            probe()
        except Exception:  # noqa: BLE001 - no NVENC raises; the context is what matters
            pass
        assert _real_current() == before
    with gpu.keep_cuda_context("CreateEncoder"):  # the raw call, as ctxleak.py makes it
        try:
            nvc.CreateEncoder(256, 256, "NV12", 1, codec="h264", gpu_id=0)
        except Exception:  # noqa: BLE001
            pass
    assert _real_current() == before
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        total = (x + 1).sum()
    torch.cuda.synchronize()
    assert total.item() == sum(range(1, (1 << 16) + 1))
