"""nvpipe.platform.telemetry: NVML sampling, and its summary where NVML is missing."""

import random
import sys
import threading
import time
import types

import pytest

from nvpipe.platform import telemetry
from nvpipe.platform.telemetry import Telemetry


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(_nvml_works(), reason="checks the answer without an NVIDIA driver")
def test_summary_says_why_without_nvml():
    sampler = Telemetry(interval=0.01).start()
    time.sleep(0.03)
    summary = sampler.stop()
    assert summary["available"] is False
    assert "NVML" in summary["reason"]
    assert telemetry.nvml_driver_version().startswith("unavailable: ")


def test_summary_says_why_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with Telemetry(interval=0.01) as sampler:
        pass
    summary = sampler.summary()
    assert summary == {"available": False, "reason": summary["reason"]}
    assert "nvidia-ml-py" in summary["reason"]


def test_not_started():
    assert Telemetry().summary()["available"] is False
    with pytest.raises(ValueError):
        Telemetry(interval=0)


class _FakeNvml(types.ModuleType):
    """A device whose readings are fresh random numbers, recorded as they are handed out."""

    class NVMLError(Exception):
        pass

    def __init__(self, decoder_supported=True):
        super().__init__("pynvml")
        self.lock = threading.Lock()
        self.given = {"nvdec": [], "nvenc": [], "gpu": [], "used": []}
        self.decoder_supported = decoder_supported
        self.shutdowns = 0
        self.total = 80 * 2**30

    def _draw(self, key, value):
        with self.lock:
            self.given[key].append(value)
        return value

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetName(self, handle):
        return b"Fake H100"

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = self._draw("used", random.randint(1, 40) * 2**20 * 37)
        return types.SimpleNamespace(total=self.total, used=used, free=self.total - used)

    def nvmlDeviceGetDecoderUtilization(self, handle):
        if not self.decoder_supported:
            raise self.NVMLError("Not Supported")
        return [self._draw("nvdec", random.randint(0, 100)), 167000]

    def nvmlDeviceGetEncoderUtilization(self, handle):
        return [self._draw("nvenc", random.randint(0, 100)), 167000]

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=self._draw("gpu", random.randint(0, 100)), memory=0)


def test_summary_aggregates_every_sample(monkeypatch):
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = Telemetry(interval=0.005).start()
    time.sleep(0.08)
    summary = sampler.stop()
    # The reading of total memory at start is the first "used" draw's neighbour: skip it.
    used = fake.given["used"][1:]
    n = len(fake.given["nvdec"])
    assert summary["available"] is True and summary["device"] == "Fake H100"
    assert summary["samples"] == n >= 3
    assert summary["nvdec_util_mean"] == pytest.approx(sum(fake.given["nvdec"]) / n, abs=0.01)
    assert summary["nvdec_util_max"] == max(fake.given["nvdec"])
    assert summary["nvenc_util_mean"] == pytest.approx(sum(fake.given["nvenc"]) / n, abs=0.01)
    assert summary["nvenc_util_max"] == max(fake.given["nvenc"])
    assert summary["gpu_util_mean"] == pytest.approx(sum(fake.given["gpu"]) / n, abs=0.01)
    assert summary["memory_used_mib_max"] == pytest.approx(max(used) / 2**20, abs=0.05)
    assert summary["memory_used_mib_start"] == pytest.approx(used[0] / 2**20, abs=0.05)
    assert summary["memory_total_mib"] == pytest.approx(fake.total / 2**20)
    assert summary["seconds"] >= 0.07
    assert fake.shutdowns == 1
    # Stopped: no more samples.
    count = len(fake.given["gpu"])
    time.sleep(0.03)
    assert len(fake.given["gpu"]) == count


def test_unsupported_readings_are_left_out(monkeypatch):
    fake = _FakeNvml(decoder_supported=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = Telemetry(interval=0.005).start()
    time.sleep(0.03)
    summary = sampler.stop()
    assert summary["available"] is True
    assert summary["nvdec_util_mean"] is None and summary["nvdec_util_max"] is None
    n = len(fake.given["gpu"])
    assert summary["samples"] == n == len(fake.given["nvenc"])
    assert summary["nvenc_util_mean"] == pytest.approx(sum(fake.given["nvenc"]) / n, abs=0.01)
    assert summary["gpu_util_mean"] == pytest.approx(sum(fake.given["gpu"]) / n, abs=0.01)
