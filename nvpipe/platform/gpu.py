"""What the CUDA path needs, and whether this machine has it.

- ``check_cuda_ready()`` raises ``DeviceError`` with one line naming every missing piece
  (a CUDA build of torch, a driver and GPU, PyNvVideoCodec, Triton) before a CUDA job starts.
- ``describe()`` is the GPU part of ``nvpipe info``: names, versions, NVDEC/NVENC, with reasons.
- ``has_nvenc()`` says whether the GPU has a hardware encoder (H100, H200 and A100 have none):
  a list of NVENC-less GPU names first, then NVML (capacity 0 is none), and only then
  PyNvVideoCodec's encoder.
- ``keep_cuda_context(what)`` wraps every PyNvVideoCodec call that may touch CUDA contexts:
  the calling thread's current context after the call is the one before it.

Everything here imports and runs on a machine without CUDA: the probes catch and report.

Why the guard: PyNvVideoCodec 2.2.4's encoder-caps helper (behind ``GetEncoderCaps`` and
``CreateEncoder``) calls ``cuCtxCreate`` and, when NVENC refuses the device (H100/H200/A100),
throws without popping it (``docs/gpu-first-contact.md`` in ../shared, section 1). The
thread's later torch work would then run in that stray context, not in torch's primary one
where NVDEC's frames live.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import re
import threading
import warnings
from typing import Iterator, Optional

import torch

from nvpipe.errors import DeviceError

# PyNvVideoCodec names its codecs after cuvid's enum; these are the ones the pipeline decodes.
DECODE_CODECS = ("h264", "hevc", "av1")
ENCODE_CODECS = ("h264", "hevc")
_CUVID_CODEC_NAMES = {"h264": "H264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9"}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ----------------------------------------------------------------------------- CUDA contexts

class CudaDriver:
    """The few CUDA driver calls (libcuda through ctypes) that keep a thread's context.

    ``lib`` is ``ctypes.CDLL("libcuda.so.1")`` or a stand-in with the same functions (tests).
    Every call returns 0 on success (``CUresult``); handles are ints, 0 meaning none.
    """

    def __init__(self, lib):
        self.lib = lib

    def current(self) -> int:
        """``cuCtxGetCurrent``: the calling thread's current context, 0 for none."""
        context = ctypes.c_void_p()
        if self.lib.cuCtxGetCurrent(ctypes.byref(context)) != 0:
            return 0
        return int(context.value or 0)

    def _primary_contexts(self) -> set[int]:
        """Active primary contexts (torch's): never destroyed, whoever left them current."""
        count, found = ctypes.c_int(), set()
        if self.lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return found
        for ordinal in range(count.value):
            device, flags, active = ctypes.c_int(), ctypes.c_uint(), ctypes.c_int()
            if self.lib.cuDeviceGet(ctypes.byref(device), ctypes.c_int(ordinal)) != 0:
                continue
            if self.lib.cuDevicePrimaryCtxGetState(device, ctypes.byref(flags),
                                                   ctypes.byref(active)) != 0 or not active.value:
                continue
            context = ctypes.c_void_p()
            if self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(context), device) == 0:
                found.add(int(context.value or 0))
                self.lib.cuDevicePrimaryCtxRelease(device)
        return found

    def restore(self, target: int) -> int:
        """Make ``target`` current again; returns how many contexts were popped to get there.

        Contexts above ``target`` on the thread's stack are popped, and destroyed unless they
        are a device's primary context; if the stack runs out before ``target`` (a call that
        popped it), ``target`` is set current.
        """
        popped, primaries = 0, None
        while True:
            now = self.current()
            if now == target:
                return popped
            if now == 0:
                if target:
                    self.lib.cuCtxSetCurrent(ctypes.c_void_p(target))
                return popped
            context = ctypes.c_void_p()
            if self.lib.cuCtxPopCurrent_v2(ctypes.byref(context)) != 0:
                self.lib.cuCtxSetCurrent(ctypes.c_void_p(target or None))
                return popped
            popped += 1
            if primaries is None:
                primaries = self._primary_contexts()
            if int(context.value or 0) not in primaries:
                self.lib.cuCtxDestroy_v2(context)
            if popped > 64:  # a stack that does not shrink: stop rather than loop
                self.lib.cuCtxSetCurrent(ctypes.c_void_p(target or None))
                return popped


_driver_lock = threading.Lock()
_driver: Optional[CudaDriver] = None
_driver_loaded = False


def cuda_driver() -> Optional[CudaDriver]:
    """The CUDA driver (loaded once), or None where ``libcuda.so.1`` cannot be loaded."""
    global _driver, _driver_loaded
    with _driver_lock:
        if not _driver_loaded:
            _driver_loaded = True
            try:
                _driver = CudaDriver(ctypes.CDLL("libcuda.so.1"))
            except OSError:
                _driver = None
        return _driver


# How many stray contexts keep_cuda_context removed, per call name (reported by the benchmark).
stray_contexts: dict[str, int] = {}


@contextlib.contextmanager
def keep_cuda_context(what: str) -> Iterator[None]:
    """Run the ``with`` body (a PyNvVideoCodec call) and leave the calling thread's current
    CUDA context as it was before it: what the call left current is popped (and destroyed
    unless it is a primary context). ``what`` names the call in the one-line warning given
    when something had to be repaired. A no-op where libcuda cannot be loaded."""
    driver = cuda_driver()
    before = driver.current() if driver is not None else 0
    try:
        yield
    finally:
        if driver is not None and driver.current() != before:
            popped = driver.restore(before)
            stray_contexts[what] = stray_contexts.get(what, 0) + max(popped, 1)
            warnings.warn(f"{what} changed this thread's current CUDA context; restored the "
                          f"previous one ({popped} stray context(s) popped)", RuntimeWarning,
                          stacklevel=3)


def import_pynvvideocodec():
    """Import PyNvVideoCodec or raise ``DeviceError`` saying why.

    Without an NVIDIA driver the import raises RuntimeError (it cannot load
    ``libnvidia-encode.so.1``), not ImportError, so all three kinds are caught.
    """
    try:
        with keep_cuda_context("import PyNvVideoCodec"):
            import PyNvVideoCodec  # noqa: N813 - the library's own name
    except ImportError as error:
        raise DeviceError(f"PyNvVideoCodec is not installed ({_first_line(error)}); "
                          "pip install pynvvideocodec") from None
    except (RuntimeError, OSError) as error:
        message = _first_line(error)
        if "libnvidia-encode" in message or "libnvcuvid" in message:
            # PyNvVideoCodec 2.2 loads the encoder library even to decode.
            message += ("; the driver's video libraries are missing (in a container, "
                        "NVIDIA_DRIVER_CAPABILITIES must include video)")
        raise DeviceError(f"PyNvVideoCodec failed to load: {message}") from None
    return PyNvVideoCodec


def _torch_cuda_problem(gpu_id: int) -> Optional[str]:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA build of PyTorch)"
    if not torch.cuda.is_available():
        try:
            torch.cuda.init()
        except Exception as error:  # noqa: BLE001 - its message says driver vs device
            return f"CUDA is not usable ({_first_line(error)})"
        return "no CUDA GPU is visible (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides it)"
    count = torch.cuda.device_count()
    if gpu_id >= count:
        return f"GPU {gpu_id} requested but only {count} CUDA device(s) are visible"
    return None


def _triton_problem(probe_driver: bool = True) -> Optional[str]:
    """What keeps Triton from compiling for the GPU, or None. ``probe_driver=False`` only
    checks that it is installed, without importing it (0.08 s of the CPU path's start-up
    after torch: 2.55 -> 2.47 s on a 4-frame 360p clip)."""
    if not probe_driver:
        return None if importlib.util.find_spec("triton") else \
            "Triton is not installed (pip install triton)"
    try:
        import triton
    except ImportError:
        return "Triton is not installed (pip install triton)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1 is set (Triton would run kernels on the CPU); unset it"
    try:
        triton.runtime.driver.active.get_current_target()
    except Exception as error:  # noqa: BLE001 - "0 active drivers" and the like
        return f"Triton cannot use the GPU ({_first_line(error)})"
    return None


def check_cuda_ready(need_decoder: bool = True, need_triton: bool = True, gpu_id: int = 0) -> None:
    """Raise ``DeviceError`` naming what ``--device cuda`` lacks here; return None when ready.

    Args:
        need_decoder: require PyNvVideoCodec (NVDEC decoding).
        need_triton: require Triton able to compile for the GPU (the pipeline's kernels).
        gpu_id: the CUDA device the job will use.

    The message is one line listing every missing piece, e.g.
    ``"--device cuda cannot run: torch 2.13.0+cpu is a CPU-only build ...; PyNvVideoCodec is
    not installed ..."``.
    """
    problems = []
    cuda_problem = _torch_cuda_problem(gpu_id)
    if cuda_problem:
        problems.append(cuda_problem)
    if need_decoder:
        try:
            import_pynvvideocodec()
        except DeviceError as error:
            problems.append(str(error))
    # Triton's driver probe needs a working CUDA; report only its import when CUDA is absent.
    if need_triton:
        triton_problem = _triton_problem(probe_driver=cuda_problem is None)
        if triton_problem:
            problems.append(triton_problem)
    if problems:
        raise DeviceError("--device cuda cannot run: " + "; ".join(problems))


def resolve_device(device: str) -> tuple[str, Optional[str]]:
    """``"auto"`` -> ``("cuda", None)`` where the GPU pipeline can run here, else
    ``("cpu", why not)``; ``"cpu"``/``"cuda"`` are returned as they are.

    PyNvVideoCodec is not required: without it the GPU pipeline decodes on the CPU.
    """
    if device != "auto":
        return device, None
    try:
        check_cuda_ready(need_decoder=False)
    except DeviceError as error:
        return "cpu", str(error).replace("--device cuda cannot run: ", "", 1)
    return "cuda", None


class PrimaryContext:
    """The device's primary CUDA context (the one torch uses), retained for PyNvVideoCodec.

    ``handle`` is the ``CUcontext`` as an int, or 0 where libcuda cannot be reached (the
    library then picks the primary context of its ``gpuid`` itself). ``release()`` once.
    """

    def __init__(self, gpu_id: int):
        self.handle = 0
        self._lib = self._device = None
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError:
            return
        device, context = ctypes.c_int(), ctypes.c_void_p()
        if lib.cuDeviceGet(ctypes.byref(device), ctypes.c_int(gpu_id)) != 0:
            return
        if lib.cuDevicePrimaryCtxRetain(ctypes.byref(context), device) != 0:
            return
        self._lib, self._device, self.handle = lib, device, int(context.value or 0)

    def release(self) -> None:
        if self._lib is not None and self.handle:
            self._lib.cuDevicePrimaryCtxRelease(self._device)
        self._lib, self.handle = None, 0


def _enum_member(enum_type, *names):
    members = getattr(enum_type, "__members__", {})
    for name in names:
        if name in members:
            return members[name]
        if hasattr(enum_type, name):
            return getattr(enum_type, name)
    raise KeyError(f"none of {names} in {enum_type}")


def decoder_caps(codec: str, bit_depth: int = 8, gpu_id: int = 0) -> dict:
    """NVDEC capabilities for a 4:2:0 stream: ``{'num_decoder_engines', 'width_max', ...}``.

    Asked once per process for each ``(codec, bit_depth, gpu_id)``: ``GetDecoderCaps``
    creates and destroys a whole CUDA context (0.1-0.3 s) and would inflate NVML memory
    readings taken during a run. Returns a copy. Raises ``DeviceError`` when PyNvVideoCodec
    is unusable; other failures propagate (and are asked again next time).
    """
    return dict(_decoder_caps(codec, bit_depth, gpu_id))


@functools.lru_cache(maxsize=None)
def _decoder_caps(codec: str, bit_depth: int, gpu_id: int) -> dict:
    nvc = import_pynvvideocodec()
    codec_id = _enum_member(nvc.cudaVideoCodec, _CUVID_CODEC_NAMES[codec])
    chroma = _enum_member(nvc.cudaVideoChromaFormat, "420", "_420", "YUV420")
    with keep_cuda_context("GetDecoderCaps"):
        return dict(nvc.GetDecoderCaps(gpuid=gpu_id, codec=codec_id, chromaformat=chroma,
                                       bitdepth=bit_depth))


def caps_supported(caps: dict) -> bool:
    """Whether ``GetDecoderCaps``'s answer says the stream can be decoded.

    PyNvVideoCodec 2.x answers ``{"supported", "num_decoder_engines", "width_max", ...}``
    (cuvid's ``bIsSupported``, ``nNumNVDECs``, ``nMaxWidth``); ``is_supported`` is also read.
    """
    for key in ("supported", "is_supported"):
        if key in caps:
            return bool(caps[key])
    return caps.get("num_decoder_engines", 0) > 0 and caps.get("width_max", 0) > 0


def encoder_caps(codec: str = "h264", gpu_id: int = 0) -> dict:
    """NVENC capabilities (``GetEncoderCaps``) for ``codec``; raises where there is no NVENC."""
    nvc = import_pynvvideocodec()
    with keep_cuda_context("GetEncoderCaps"):
        try:
            caps = nvc.GetEncoderCaps(gpuid=gpu_id, codec=codec)
        except TypeError:  # older bindings take the codec only
            caps = nvc.GetEncoderCaps(codec=codec)
    return dict(caps)


# Data-centre GPUs with NVDEC but no NVENC (NVIDIA's Video Encode and Decode GPU Support
# Matrix); matched as whole words in the CUDA device name, so "RTX A3000" is not "A30".
NVENC_LESS_GPUS = ("A100", "A800", "A30", "H100", "H200", "H800", "GH200")
_NVENC_LESS = re.compile(r"\b(" + "|".join(NVENC_LESS_GPUS) + r")\b")

# NVML's encoder query types (nvmlEncoderType_t).
_NVML_ENCODER_QUERY = {"h264": 0, "hevc": 1, "av1": 2}


def nvenc_from_nvml(gpu_id: int = 0, codec: str = "h264") -> Optional[tuple[bool, str]]:
    """``(available, reason)`` from ``nvmlDeviceGetEncoderCapacity``, or None where NVML
    cannot tell (no pynvml, no driver, another error). "Not Supported" means no NVENC."""
    from nvpipe.platform.telemetry import _load_nvml, _quiet_shutdown

    nvml, _ = _load_nvml()
    if nvml is None:
        return None
    try:
        handle = None
        uuid = getattr(torch.cuda.get_device_properties(gpu_id), "uuid", None)
        if uuid is not None:  # NVML's order may differ from CUDA's (CUDA_VISIBLE_DEVICES)
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            except Exception:  # noqa: BLE001 - fall back to the index
                handle = None
        if handle is None:
            handle = nvml.nvmlDeviceGetHandleByIndex(gpu_id)
        try:
            capacity = nvml.nvmlDeviceGetEncoderCapacity(handle, _NVML_ENCODER_QUERY[codec])
        except Exception as error:  # noqa: BLE001
            not_supported = getattr(nvml, "NVMLError_NotSupported", None)
            if (not_supported is not None and isinstance(error, not_supported)) \
                    or "not supported" in str(error).lower():
                return False, f"no NVENC for {codec} (NVML encoder capacity: Not Supported)"
            return None
        if not capacity:  # 0: NVML answers, but there is no encoder to use
            return False, f"no NVENC for {codec} (NVML encoder capacity 0%)"
        return True, f"NVENC {codec} present (NVML encoder capacity {capacity}%)"
    except Exception:  # noqa: BLE001 - NVML could not answer: ask elsewhere
        return None
    finally:
        _quiet_shutdown(nvml)


@functools.lru_cache(maxsize=None)
def nvenc_status(gpu_id: int = 0, codec: str = "h264") -> tuple[bool, str]:
    """``(available, reason)`` for a hardware encoder of ``codec`` on ``gpu_id``.

    In order, stopping at the first that can tell: the device name against
    ``NVENC_LESS_GPUS`` (a listed GPU has none, whatever NVML answers); NVML's encoder
    capacity (Not Supported or 0: none); PyNvVideoCodec (``GetEncoderCaps``, then creating
    and dropping a 256x256 encoder), each call under ``keep_cuda_context``. H100/H200/A100
    have NVDEC but no NVENC: the first two say so without touching PyNvVideoCodec's encoder.
    """
    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    name = torch.cuda.get_device_name(gpu_id)
    listed = _NVENC_LESS.search(name)
    if listed:
        return False, f"{name} has no NVENC ({listed.group(1)}-class GPUs have none)"
    from_nvml = nvenc_from_nvml(gpu_id, codec)
    if from_nvml is not None:
        return from_nvml
    try:
        nvc = import_pynvvideocodec()
    except DeviceError as error:
        return False, str(error)
    try:
        caps = encoder_caps(codec, gpu_id)
    except Exception as error:  # noqa: BLE001 - no NVENC device reads as an exception here
        caps_error = _first_line(error)
    else:
        engines = caps.get("num_encoder_engines")
        if engines is not None:
            if engines > 0:
                return True, f"{engines} NVENC engine(s) on {name}"
            return False, f"{name} has no NVENC engine"
        caps_error = "GetEncoderCaps gave no engine count"
    try:
        with keep_cuda_context("CreateEncoder"):
            encoder = nvc.CreateEncoder(256, 256, "NV12", 1, codec=codec, gpu_id=gpu_id)
            del encoder
    except Exception as error:  # noqa: BLE001
        return False, f"{name}: no NVENC for {codec} ({caps_error}; {_first_line(error)})"
    return True, f"NVENC {codec} encoder created on {name}"


def has_nvenc(gpu_id: int = 0, codec: str = "h264") -> bool:
    """True when ``gpu_id`` has a hardware encoder for ``codec`` usable through PyNvVideoCodec."""
    return nvenc_status(gpu_id, codec)[0]


def _describe_decoders(gpu_id: int) -> str:
    supported, engines = [], None
    for codec in DECODE_CODECS:
        for depth in (8, 10):
            try:
                caps = decoder_caps(codec, depth, gpu_id)
            except Exception:  # noqa: BLE001 - unsupported combinations may raise
                continue
            if caps_supported(caps):
                supported.append(f"{codec} {depth}-bit (max {caps.get('width_max')}x"
                                 f"{caps.get('height_max')})")
                engines = caps.get("num_decoder_engines", engines)
    if not supported:
        return "none found"
    prefix = f"{engines} engine(s): " if engines else ""
    return prefix + ", ".join(supported)


def describe(gpu_id: int = 0) -> dict:
    """Facts for ``nvpipe info``: ``{name: str}``, each value a fact or a reason it is missing.

    Keys: ``torch cuda``, ``device``, ``compute capability``, ``memory``, ``driver``,
    ``pynvvideocodec``, ``nvdec``, ``nvenc``, ``triton``, ``ready``.
    """
    facts: dict = {"torch cuda": torch.version.cuda or f"none (torch {torch.__version__} is CPU-only)"}
    problem = _torch_cuda_problem(gpu_id)
    if problem is None:
        props = torch.cuda.get_device_properties(gpu_id)
        facts["device"] = f"{props.name} (cuda:{gpu_id} of {torch.cuda.device_count()})"
        facts["compute capability"] = f"{props.major}.{props.minor}"
        facts["memory"] = f"{props.total_memory / 2**30:.1f} GiB"
    else:
        facts["device"] = f"unavailable: {problem}"
    from nvpipe.platform.telemetry import nvml_driver_version

    facts["driver"] = nvml_driver_version()
    try:
        nvc = import_pynvvideocodec()
        version = getattr(nvc, "__version__", "?")
        sdk = getattr(nvc, "__video_codec_sdk_version__", None)
        facts["pynvvideocodec"] = version + (f" (Video Codec SDK {sdk})" if sdk else "")
    except DeviceError as error:
        facts["pynvvideocodec"] = f"unavailable: {error}"
    if problem is None and not str(facts["pynvvideocodec"]).startswith("unavailable"):
        facts["nvdec"] = _describe_decoders(gpu_id)
        statuses = {codec: nvenc_status(gpu_id, codec) for codec in ENCODE_CODECS}
        if any(ok for ok, _ in statuses.values()):
            facts["nvenc"] = ", ".join(f"{codec}: {'yes' if ok else 'no'}"
                                       for codec, (ok, _) in statuses.items())
        else:
            facts["nvenc"] = "none (" + statuses["h264"][1] + "); outputs use CPU encoders"
    else:
        facts["nvdec"] = facts["nvenc"] = "unknown (needs a GPU and PyNvVideoCodec)"
    try:
        import triton

        triton_problem = _triton_problem() if problem is None else None
        facts["triton"] = triton.__version__ + (f" ({triton_problem})" if triton_problem else "")
    except ImportError:
        facts["triton"] = "not installed"
    try:
        check_cuda_ready(gpu_id=gpu_id)
        facts["ready"] = "yes"
    except DeviceError as error:
        facts["ready"] = f"no: {error}"
    return facts


__all__ = ["CudaDriver", "NVENC_LESS_GPUS", "PrimaryContext", "caps_supported", "check_cuda_ready",
           "cuda_driver", "decoder_caps", "describe", "encoder_caps", "has_nvenc",
           "import_pynvvideocodec", "keep_cuda_context", "nvenc_from_nvml", "nvenc_status"]
