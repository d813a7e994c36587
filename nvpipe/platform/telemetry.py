"""NVML telemetry: NVDEC/NVENC utilisation and GPU memory, sampled on a background thread.

``pynvml`` (PyPI ``nvidia-ml-py``) imports without a driver; ``nvmlInit()`` then raises
``NVMLError_LibraryNotFound``. Every failure here degrades to a summary that says
``available: False`` and why, so a run never fails for want of telemetry.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

_MIB = 2**20


def _load_nvml():
    """``(pynvml module, None)`` after a successful ``nvmlInit``, else ``(None, reason)``."""
    try:
        import pynvml
    except ImportError:
        return None, "NVML unavailable: pynvml is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as error:  # noqa: BLE001 - NVMLError_LibraryNotFound without a driver
        return None, f"NVML unavailable: {type(error).__name__}: {error}"
    return pynvml, None


def nvml_driver_version() -> str:
    """The NVIDIA driver version NVML reports, or ``"unavailable: <reason>"``."""
    nvml, reason = _load_nvml()
    if nvml is None:
        return f"unavailable: {reason}"
    try:
        version = nvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception as error:  # noqa: BLE001
        return f"unavailable: {error}"
    finally:
        _quiet_shutdown(nvml)


def _quiet_shutdown(nvml) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # noqa: BLE001
        pass


class Telemetry:
    """Samples one GPU every ``interval`` seconds between ``start()`` and ``stop()``.

    Args:
        interval: seconds between samples (0.1 s: NVML's decoder/encoder utilisation is
            averaged over its own sampling period, ~0.1-1 s, so faster sampling adds nothing).
        gpu_id: the NVML device index (CUDA and NVML order agree unless
            ``CUDA_DEVICE_ORDER`` says otherwise).

    ``summary()`` returns ``{"available": False, "reason": str}`` where NVML cannot be used,
    else ``{"available": True, "device", "samples", "seconds", "nvdec_util_mean",
    "nvdec_util_max", "nvenc_util_mean", "nvenc_util_max", "gpu_util_mean",
    "memory_used_mib_max", "memory_used_mib_start", "memory_total_mib"}`` (utilisation in
    percent, memory in MiB, the device's whole usage as NVML sees it).
    """

    def __init__(self, interval: float = 0.1, gpu_id: int = 0):
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.interval = float(interval)
        self.gpu_id = gpu_id
        self._nvml = None
        self._handle = None
        self._reason: Optional[str] = None
        self._device = ""
        self._memory_total = 0
        self._samples: list[tuple[float, float, float, float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started_at = self._stopped_at = None

    def start(self) -> "Telemetry":
        """Initialise NVML and start sampling; never raises (see ``summary()['reason']``)."""
        if self._thread is not None:
            raise RuntimeError("Telemetry already started")
        nvml, reason = _load_nvml()
        if nvml is None:
            self._reason = reason
            return self
        try:
            self._handle = nvml.nvmlDeviceGetHandleByIndex(self.gpu_id)
            name = nvml.nvmlDeviceGetName(self._handle)
            self._device = name.decode() if isinstance(name, bytes) else str(name)
            self._memory_total = nvml.nvmlDeviceGetMemoryInfo(self._handle).total
        except Exception as error:  # noqa: BLE001
            self._reason = f"NVML device {self.gpu_id} unavailable: {error}"
            _quiet_shutdown(nvml)
            return self
        self._nvml = nvml
        self._started_at = time.perf_counter()
        self._sample()  # one sample at start: the memory baseline
        self._thread = threading.Thread(target=self._run, name="nvpipe-telemetry", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        nvml, handle = self._nvml, self._handle
        try:
            nvdec = float(nvml.nvmlDeviceGetDecoderUtilization(handle)[0])
        except Exception:  # noqa: BLE001 - NVML_ERROR_NOT_SUPPORTED on some devices
            nvdec = float("nan")
        try:
            nvenc = float(nvml.nvmlDeviceGetEncoderUtilization(handle)[0])
        except Exception:  # noqa: BLE001
            nvenc = float("nan")
        try:
            gpu = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001
            gpu = float("nan")
        try:
            used = float(nvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:  # noqa: BLE001
            used = float("nan")
        with self._lock:
            self._samples.append((time.perf_counter(), nvdec, nvenc, gpu, used))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict:
        """Stop sampling (one last sample first) and release NVML; returns ``summary()``."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample()
            self._stopped_at = time.perf_counter()
            _quiet_shutdown(self._nvml)
        return self.summary()

    def summary(self) -> dict:
        """Aggregates of the samples so far (see the class docstring for the keys)."""
        if self._nvml is None:
            return {"available": False, "reason": self._reason or "Telemetry was not started"}
        with self._lock:
            samples = list(self._samples)
        end = self._stopped_at if self._stopped_at is not None else time.perf_counter()

        def column(i):
            return [s[i] for s in samples if s[i] == s[i]]  # drop NaN (unsupported readings)

        def mean(values):
            return round(sum(values) / len(values), 2) if values else None

        nvdec, nvenc, gpu, used = column(1), column(2), column(3), column(4)
        return {
            "available": True,
            "device": self._device,
            "samples": len(samples),
            "seconds": round(end - self._started_at, 3),
            "nvdec_util_mean": mean(nvdec),
            "nvdec_util_max": max(nvdec) if nvdec else None,
            "nvenc_util_mean": mean(nvenc),
            "nvenc_util_max": max(nvenc) if nvenc else None,
            "gpu_util_mean": mean(gpu),
            "memory_used_mib_max": round(max(used) / _MIB, 1) if used else None,
            "memory_used_mib_start": round(used[0] / _MIB, 1) if used else None,
            "memory_total_mib": round(self._memory_total / _MIB, 1),
        }

    def __enter__(self) -> "Telemetry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["Telemetry", "nvml_driver_version"]
