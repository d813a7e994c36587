"""The runner: one job through Source -> Convert -> Matting -> Compose -> Sinks.

Threads: a decode thread (source + conversion), the calling thread (network + compose)
and one encode thread per output, joined by bounded queues. The first error anywhere
stops every stage and is raised once from ``run``; Ctrl-C (KeyboardInterrupt) or
``stop.set()`` ends the run with each output finalised as a playable file of the frames
written so far (or no file when none were).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch

from .buffers import BufferRing
from .compose import ComposeTarget, Composer
from .convert import Converter
from .errors import NvpipeError
from .frames import StreamInfo
from .job import Job, OutputSpec, auto_ratio
from .matting import MattingStage

# Queue depths: 4 converted frames ahead of the network (1080p float32 src is 25 MB, so
# about 100 MB in flight on the CPU), 8 composed frames ahead of each encoder.
DECODE_QUEUE_DEPTH = 4
ENCODE_QUEUE_DEPTH = 8
_END = object()

ProgressCallback = Callable[[int, Optional[int], float], None]


@dataclass
class RunResult:
    """What a finished (or interrupted) run did."""

    frames: int
    seconds: float
    outputs: list[str]
    encoders: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    telemetry: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Stages:
    """Shared stop flag and first-error slot of one run."""

    def __init__(self, stop: Optional[threading.Event]):
        self.stop = stop or threading.Event()
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
        self.stop.set()

    def put(self, q: queue.Queue, item) -> bool:
        """Blocking put that gives up when the run is stopping."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue):
        """Blocking get that returns _END when the run is stopping."""
        while True:
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return _END


def default_dtype(device: str) -> torch.dtype:
    """The network's precision unless asked: FP16 on CUDA (tensor cores), FP32 on the CPU."""
    return torch.float16 if device == "cuda" else torch.float32


def _dtype_for(job: Job) -> torch.dtype:
    if job.dtype is not None:
        return {"float32": torch.float32, "float16": torch.float16}[job.dtype]
    return default_dtype(job.device)


def output_info(info: StreamInfo, resize: Optional[tuple[int, int]]) -> StreamInfo:
    """The stream the sinks write: the input's timing at its displayed (or resized) size."""
    width, height = resize if resize is not None else info.display_size
    return replace(info, width=width, height=height, rotation=0)


NVENC_CONTAINERS = (".mp4", ".mkv", ".mov")


def choose_encoder(spec: OutputSpec, job: Job) -> OutputSpec:
    """On CUDA, H.264/HEVC outputs go to NVENC where the GPU has one (``job.encoder`` auto),
    or always (nvenc); alpha formats, other codecs and ``encoder="cpu"`` stay with PyAV."""
    if job.device != "cuda" or job.encoder == "cpu":
        return spec
    suffix = os.path.splitext(spec.path)[1].lower()
    codec = (spec.codec or ("h264" if suffix in (".mp4", ".mkv") else "")).lower()
    if codec not in ("h264", "hevc") or suffix not in NVENC_CONTAINERS \
            or spec.kind in ("rgba", "rgba_premultiplied"):
        if job.encoder == "nvenc":
            raise NvpipeError(f"{spec.path}: NVENC encodes H.264/HEVC without alpha into "
                              f".mp4/.mkv/.mov only")
        return spec
    if job.encoder == "auto":
        from .gpu import has_nvenc

        if not has_nvenc(codec=codec):  # H100, H200, A100: no NVENC
            return spec
    return replace(spec, codec=f"{codec}_nvenc")


def load_network(job: Job, dtype: torch.dtype):
    import rvm

    try:
        network = rvm.load(job.weights, variant=job.variant, device=job.device, dtype=dtype)
    except rvm.WeightsError as error:
        raise NvpipeError(str(error)) from None
    if job.device == "cpu":
        network = rvm.optimize_for_cpu(network)  # channels_last: 0.72x -> 0.80x of ORT's time
    return network


def run(job: Job, *, progress: Optional[ProgressCallback] = None,
        stop: Optional[threading.Event] = None, network: Optional[torch.nn.Module] = None,
        verbose: bool = False) -> RunResult:
    """Run ``job`` to completion; see the module docstring for threads and errors.

    ``network`` overrides loading weights from ``job`` (an ``rvm.MattingNetwork`` already on
    the job's device and dtype). Raises ``NvpipeError`` for anything the user can fix.
    """
    from .backgrounds import open_background
    from .sinks import open_sink
    from .sources import open_source

    if not job.outputs:
        raise NvpipeError("nothing to write: give at least one output")
    if job.device == "cuda":
        from .gpu import check_cuda_ready

        # Pictures decode on the CPU: PyNvVideoCodec is only needed for video inputs, and
        # the NVDEC source raises DeviceError naming it when it cannot load.
        check_cuda_ready(need_decoder=False)
    dtype = _dtype_for(job)
    device = torch.device(job.device)

    started = time.perf_counter()
    source = open_source(job.input, device=job.device)
    sinks: dict[str, object] = {}
    stages = _Stages(stop)
    frames_done = 0
    telemetry = None
    threads: list[threading.Thread] = []
    try:
        info = source.info
        sink_info = output_info(info, job.resize)
        width, height = sink_info.width, sink_info.height
        ratio = job.ratio if job.ratio is not None else auto_ratio(width, height)
        audio_from = job.input if info.has_audio else None
        for spec in job.outputs:
            sinks[spec.path] = open_sink(choose_encoder(spec, job), sink_info,
                                         overwrite=job.overwrite, audio_from=audio_from)
        kinds = {spec.path: spec.kind for spec in job.outputs}
        needs_background = any(kind == "composite" for kind in kinds.values())
        background = None
        if needs_background:
            background = open_background(job.background or "#00ff00", width, height)

        if network is None:
            network = load_network(job, dtype)
        # Rings outlast everything in flight: the queue, the chunk held, the frame in hand.
        converter = Converter(info, ratio=ratio, device=device, dtype=dtype, resize=job.resize,
                              ring_size=DECODE_QUEUE_DEPTH + job.chunk + 2)
        matting = MattingStage(network, ratio=ratio, device=device, dtype=dtype)
        if device.type == "cuda":  # capture before the decode thread starts (convert.downsample's size)
            matting.prepare((job.chunk, 3, math.floor(height * ratio), math.floor(width * ratio)))
        targets = []
        for path, sink in sinks.items():
            color = getattr(sink, "color", None)  # the ColorSpec an NV12-taking sink tags
            targets.append(ComposeTarget(path, kinds[path], sink.pixel_format,
                                         color.matrix if color else "bt709",
                                         color.full_range if color else False))
        # A target's buffer comes round again ENCODE_QUEUE_DEPTH + 3 frames later: by then its
        # encoder has taken the next frame off the queue, so it is done with this one.
        composer = Composer(targets, background, ring_size=ENCODE_QUEUE_DEPTH + 3)
        pinned = {path: BufferRing(ENCODE_QUEUE_DEPTH + 3, pin_memory=True) for path in sinks}
        if verbose and job.device == "cuda":
            from .telemetry import Telemetry

            telemetry = Telemetry()
            telemetry.start()

        decoded: queue.Queue = queue.Queue(DECODE_QUEUE_DEPTH)
        to_encode = {path: queue.Queue(ENCODE_QUEUE_DEPTH) for path in sinks}
        host_copies = device.type == "cuda"

        def decode_loop() -> None:
            stream = torch.cuda.Stream(device) if device.type == "cuda" else None
            if stream is None:
                _lower_priority()
            try:
                with torch.inference_mode(), (torch.cuda.stream(stream) if stream else _null()):
                    for frame in source:
                        if stages.stop.is_set():
                            return
                        src, src_sm = converter(frame)
                        if frame.release is not None:
                            frame.release()
                        ready = None
                        if stream is not None:
                            ready = torch.cuda.Event()
                            ready.record(stream)
                        if not stages.put(decoded, (frame.index, frame.pts, src, src_sm, ready)):
                            return
            except BaseException as error:  # noqa: BLE001 - reported once by run()
                stages.fail(error)
            finally:
                stages.put(decoded, _END)

        def encode_loop(path: str) -> None:
            sink, inbox = sinks[path], to_encode[path]
            if device.type == "cpu":
                _lower_priority()
            try:
                while True:
                    item = stages.get(inbox)
                    if item is _END:
                        return
                    pts, array, ready = item
                    if ready is not None:
                        ready.synchronize()
                    sink.write(array.numpy() if isinstance(array, torch.Tensor)
                               and array.device.type == "cpu" else array, pts)
            except BaseException as error:  # noqa: BLE001
                stages.fail(error)

        def emit(index: int, pts, outputs: dict[str, torch.Tensor]) -> bool:
            ready = None
            if host_copies:
                copies = {}
                for path, array in outputs.items():
                    if getattr(sinks[path], "accepts_cuda", False):
                        copies[path] = array
                    else:
                        host = pinned[path].take(tuple(array.shape), array.dtype)
                        host.copy_(array, non_blocking=True)
                        copies[path] = host
                outputs = copies
                ready = torch.cuda.Event()
                ready.record()
            for path, array in outputs.items():
                if not stages.put(to_encode[path], (pts, array, ready)):
                    return False
            return True

        threads.append(threading.Thread(target=decode_loop, name="nvpipe-decode", daemon=True))
        threads.extend(threading.Thread(target=encode_loop, args=(path,), name="nvpipe-encode",
                                     daemon=True) for path in sinks)
        for thread in threads:
            thread.start()

        total = info.frame_count
        chunk: list = []

        def flush() -> bool:
            nonlocal frames_done
            if not chunk:
                return True
            if device.type == "cuda":
                current = torch.cuda.current_stream(device)
                for item in chunk:
                    current.wait_event(item[4])
                    item[2].record_stream(current)
                    item[3].record_stream(current)
            small = torch.stack([item[3] for item in chunk])
            coeff_a, coeff_b = matting(small, torch.stack([item[2] for item in chunk])
                                       if matting.needs_source else None)  # issue 12
            for i, (index, pts, src, _, _) in enumerate(chunk):
                outputs = composer(coeff_a[i], coeff_b[i], src, index)
                if not emit(index, pts, outputs):
                    return False
                frames_done += 1
                if progress is not None:
                    progress(frames_done, total, time.perf_counter() - started)
            chunk.clear()
            return True

        with torch.inference_mode():
            while True:
                item = stages.get(decoded)
                if item is _END:
                    if stages.error is None and not stages.stop.is_set():
                        flush()
                    break
                chunk.append(item)
                if len(chunk) == job.chunk and not flush():
                    break
        for path in sinks:
            stages.put(to_encode[path], _END)
        for thread in threads:
            thread.join()
    except BaseException as error:
        stages.fail(error)
    finally:
        _join_all(threads, stages)
        source.close()
        if telemetry is not None:
            telemetry.stop()

    error = stages.error
    interrupted = isinstance(error, KeyboardInterrupt) or (error is None and stages.stop.is_set())
    if error is not None and not isinstance(error, KeyboardInterrupt):
        for sink in sinks.values():
            _quietly(sink.discard if hasattr(sink, "discard") else sink.abort)
        raise error
    for sink in sinks.values():
        if interrupted:
            _quietly(sink.abort)
        else:
            sink.close()
    result = RunResult(frames=frames_done, seconds=time.perf_counter() - started,
                       outputs=list(sinks), interrupted=interrupted,
                       encoders={path: getattr(sink, "encoder_name", "?")
                                 for path, sink in sinks.items()},
                       telemetry=telemetry.summary() if telemetry is not None else {})
    if isinstance(error, KeyboardInterrupt):
        raise Interrupted(result) from None
    return result


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``result`` says what was written before it."""

    def __init__(self, result: RunResult):
        super().__init__()
        self.result = result


# Niceness of the decode and encode threads on the CPU path. torch's OpenMP workers wait
# for the slowest of them at every parallel region, so one worker preempted by the encoder
# stalls the whole network; at nice 19 the stages fill the network's gaps instead (1080p,
# ratio 0.25, 2 cores, interleaved runs: 5.9 fps at nice 0, 6.4 at 10, 6.8 at 19). The
# bounded queues keep them from starving: the network waits when they fall behind.
STAGE_NICE = 19


def _lower_priority() -> None:
    """Lowers this thread's priority (Linux: per-thread nice) on the CPU path."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STAGE_NICE)
        except OSError:
            pass


def _join_all(threads: list[threading.Thread], stages: _Stages) -> None:
    """Join every stage thread; a second Ctrl-C while waiting only repeats the stop."""
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join(timeout=0.1)
            except KeyboardInterrupt as error:
                stages.fail(error)


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - cleanup after an earlier error that is being reported
        pass


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
