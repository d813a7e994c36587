"""Where a frame's time goes (``nvpipe run --profile``): per stage, per queue, per core.

``Profile.attach`` wraps the pipeline's stage calls from outside (the runner's threads do
not change): the source's iteration (decode), ``Converter`` (convert), ``Pipeline.matte``
(network; with a subject, also its copy to the host), ``Pipeline.keep_subject`` (subject:
waiting for the tracker's thread, and the masks applied), ``Pipeline.compose`` (tail: the C
kernels to each sink's pixel format) and each sink's ``write`` (encode), plus the queue
operations of ``Stages`` (time waiting on a queue, by thread). Each stage's figures are
wall ms per frame and CPU ms per frame of the thread that called it (``time.thread_time``;
ORT's, torch's and x264's own worker threads are in ``cores_busy``, the process's
user+system CPU over wall time from ``getrusage``).

The network's achieved GFLOP/s: its multiply-adds at the run's input size (counted once,
after the run, by ``torch.utils.flop_counter``: 2 FLOPs per multiply-add of convolutions and
matmuls) over its wall ms per frame, against a measured peak (the best of a few float32
2048x2048 matmuls in torch on the network's threads).
"""

from __future__ import annotations

import resource
import threading
import time
from collections import defaultdict
from typing import Callable, Iterable, Optional

import torch

STAGES = ("decode", "convert", "network", "subject", "tail", "encode")  # subject: --subject only


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def matmul_peak_gflops(size: int = 2048, repeats: int = 3) -> float:
    """The best float32 ``size x size`` matmul rate of torch here, GFLOP/s."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9


def network_gflop(network: torch.nn.Module, shape: tuple[int, ...]) -> Optional[float]:
    """GFLOP of one ``network.coefficients`` call on ``[1, 3, h, w]`` (None where it cannot
    be counted: a forward-only network)."""
    from torch.utils.flop_counter import FlopCounterMode

    if not hasattr(network, "coefficients") or getattr(network, "needs_source", False):
        return None
    dtype = next(network.parameters()).dtype
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        network.coefficients(torch.rand(1, 3, *shape[-2:], dtype=dtype))
    return counter.get_total_flops() / 1e9


class Profile:
    """Figures of one run; ``attach`` before the threads start, ``report`` after."""

    def __init__(self):
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.waits: dict[str, float] = defaultdict(float)
        self.small_shape: Optional[tuple[int, ...]] = None
        self._started = time.perf_counter()
        self._cpu_started = _cpu_seconds()

    def timed(self, name: str, function: Callable) -> Callable:
        def call(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.wall[name] += time.perf_counter() - wall
                self.cpu[name] += time.thread_time() - cpu
                self.calls[name] += 1
        return call

    def timed_iter(self, name: str, iterable: Iterable) -> Iterable:
        iterator = iter(iterable)
        while True:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.wall[name] += time.perf_counter() - wall
                self.cpu[name] += time.thread_time() - cpu
            self.calls[name] += 1
            yield item

    def _waited(self, what: str, function: Callable) -> Callable:
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.waits[f"{threading.current_thread().name} {what}"] += \
                    time.perf_counter() - started
        return call

    def attach(self, pipeline, sinks: dict, stages, frames: Iterable) -> Iterable:
        """Wrap the stages' calls (module docstring); returns the frames to decode from."""
        pipeline.converter = _Converter(pipeline.converter, self.timed("convert",
                                                                        pipeline.converter))
        matte = pipeline.matte

        def network(chunk):
            if self.small_shape is None:
                self.small_shape = tuple(chunk[0].src_sm.shape)
            return matte(chunk)
        pipeline.matte = self.timed("network", network)
        pipeline.compose = self.timed("tail", pipeline.compose)
        if pipeline.subject is not None:  # waiting for the tracker, and the masks applied
            pipeline.keep_subject = self.timed("subject", pipeline.keep_subject)
        for sink in sinks.values():
            sink.write = self.timed("encode", sink.write)
        stages.get = self._waited("waits for its input", stages.get)
        stages.put = self._waited("waits for room downstream", stages.put)
        return self.timed_iter("decode", frames)

    def report(self, frames: int, matting=None) -> dict:
        """The figures (ms per frame, cores busy, waits, the network's GFLOP/s)."""
        wall = time.perf_counter() - self._started
        cpu = _cpu_seconds() - self._cpu_started
        per = max(frames, 1)
        result = {
            "frames": frames, "seconds": round(wall, 3),
            "fps": round(frames / wall, 2) if wall > 0 else 0.0,
            "cores": _cores(), "cores_busy": round(cpu / wall, 2) if wall > 0 else 0.0,
            "stages": {name: {"ms_per_frame": round(1000 * self.wall[name] / per, 2),
                              "thread_cpu_ms_per_frame": round(1000 * self.cpu[name] / per, 2)}
                       for name in STAGES if name in self.wall},
            "waits_ms_per_frame": {name: round(1000 * seconds / per, 2)
                                   for name, seconds in sorted(self.waits.items())},
        }
        if matting is not None:
            network = {"engine": getattr(matting, "engine", None), "input": None}
            if self.small_shape is not None:
                network["input"] = f"{self.small_shape[-1]}x{self.small_shape[-2]}"
                try:
                    gflop = network_gflop(matting.network, self.small_shape)
                except Exception:  # noqa: BLE001 - a figure missing, not a failed run
                    gflop = None
                if gflop is not None and self.wall["network"] > 0:
                    achieved = gflop * per / self.wall["network"]
                    peak = matmul_peak_gflops()
                    network.update(gflop_per_frame=round(gflop, 2),
                                   achieved_gflops=round(achieved, 1),
                                   matmul_peak_gflops=round(peak, 1),
                                   share_of_peak=round(achieved / peak, 3))
            result["network"] = network
        return result


class _Converter:
    """The converter with its call timed; its other attributes are the converter's."""

    def __init__(self, converter, timed_call):
        self._converter, self._call = converter, timed_call

    def __call__(self, frame):
        return self._call(frame)

    def __getattr__(self, name):
        return getattr(self._converter, name)


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def format_profile(report: dict) -> str:
    """The report as lines for the terminal."""
    lines = [f"profile: {report['frames']} frames in {report['seconds']:.1f} s "
             f"({report['fps']} fps), cores busy {report['cores_busy']} of {report['cores']}"]
    for name, figures in report["stages"].items():
        lines.append(f"  {name:<8} {figures['ms_per_frame']:8.1f} ms/frame wall, "
                     f"{figures['thread_cpu_ms_per_frame']:7.1f} ms CPU on its thread")
    for name, ms in report["waits_ms_per_frame"].items():
        lines.append(f"  wait: {name}: {ms:.1f} ms/frame")
    network = report.get("network")
    if network:
        line = f"  network: {network.get('engine')} at {network.get('input')}"
        if "achieved_gflops" in network:
            line += (f", {network['gflop_per_frame']} GFLOP/frame, {network['achieved_gflops']} "
                     f"GFLOP/s = {100 * network['share_of_peak']:.0f}% of a "
                     f"{network['matmul_peak_gflops']} GFLOP/s matmul peak")
        lines.append(line)
    return "\n".join(lines)


__all__ = ["Profile", "STAGES", "format_profile", "matmul_peak_gflops", "network_gflop"]
