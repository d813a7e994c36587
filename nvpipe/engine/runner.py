"""The runner: one job through Source -> Convert -> Matting -> Compose -> Sinks.

Threads: a decode thread (source + conversion), the calling thread (network + compose)
and one encode thread per output, joined by bounded queues of typed items. A live input
adds a receive thread in front (``nvpipe.engine.pacing``: the pacing, chosen once per job
from the input and the outputs): recorded to files, every frame is buffered up to a memory
bound; written to a live output, a one-frame mailbox drops the oldest frame when the
pipeline falls behind. How frames
cross between them (streams, events, host copies) is the job's ``transfer``, chosen once
(``nvpipe.engine.transfer``). The first error anywhere stops every stage and is raised once from
``run``. Where the outputs end up is ``nvpipe.sinks.outputs``' policy: all committed when the
run completes, all discarded when it fails, the frames done kept (never over an existing
file) when it is interrupted (Ctrl-C, SIGTERM, ``stop.set()``) or ``job.keep_partial``.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Optional

import torch

from nvpipe.engine.compose import ComposeTarget, Composer
from nvpipe.engine.convert import Converter
from nvpipe.errors import InputError, NvpipeError, Terminated
from nvpipe.frames import StreamInfo
from nvpipe.job import DEFAULT_GREEN, Job, OutputSpec, auto_ratio, device_type, gpu_index
from nvpipe.engine.pacing import (FILE_PACING, LatencyLog, LatestFrames, LiveStats, Pacing,
                                  choose_pacing)
from nvpipe.engine.matting import MattingStage
from nvpipe.sinks.outputs import Outputs, Placed

# Queue depths of files (nvpipe.engine.pacing.FILE_PACING; live inputs take LIVE_PACING's).
DECODE_QUEUE_DEPTH = FILE_PACING.decoded
ENCODE_QUEUE_DEPTH = FILE_PACING.encode
# A composed buffer comes round again this many frames later: by then its encoder has taken
# the next frame off the queue, so it is done with this one.
COMPOSE_RING = FILE_PACING.compose_ring
# A live run's --verbose report comes at most this often (seconds).
LIVE_REPORT_INTERVAL = 1.0
# The live receive thread's name: the one stage thread a stopping run may leave behind.
RECEIVE_THREAD = "nvpipe-receive"

ProgressCallback = Callable[[int, Optional[int], float], None]


@dataclass
class RunResult:
    """What a finished (or interrupted) run did. ``placed``: each output's outcome."""

    frames: int
    seconds: float
    outputs: list[str]
    encoders: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    telemetry: dict = field(default_factory=dict)
    placed: list[Placed] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    live: Optional[LiveStats] = None  # a live input's drops, rate and latency
    cuts: list[int] = field(default_factory=list)  # frames where the memory was reset
    engine: Optional[str] = None  # what ran the network (MattingStage.engine)
    profile: Optional[dict] = None  # --profile: nvpipe.engine.profile.Profile.report()
    device: str = ""  # where it ran: the job's device, or "cpu" after a fallback
    # What the run chose where it was not told: ratio, dtype, pacing, output kinds... (--json)
    decisions: dict = field(default_factory=dict)
    # The same told to a person, one phrase each (ratio, subject, audio, background, live):
    # the summary's "decided" line.
    decided: list[str] = field(default_factory=list)
    subject: object = None  # nvpipe.engine.subject.SubjectTracker where a subject was kept

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM: ``terminated``) during a run; ``result`` says what was kept."""

    def __init__(self, result: RunResult, terminated: bool = False):
        super().__init__()
        self.result = result
        self.terminated = terminated


# -- the items between stages ----------------------------------------------------------------
@dataclass
class ConvertedFrame:
    """Decode thread -> network: the converted frame, and when it is ready (CUDA event)."""

    index: int
    pts: Optional[int]
    src: torch.Tensor      # [3, H, W], the job's dtype, on the job's device
    src_sm: torch.Tensor   # [3, h, w], the network's input
    ready: object = None
    arrival: Optional[float] = None  # time.monotonic() when the frame reached nvpipe
    cut: bool = False  # the first frame of a new shot: the network's memory is reset


@dataclass
class EncodeItem:
    """Network thread -> one encoder: a composed frame in its sink's pixel format."""

    pts: Optional[int]
    array: object          # numpy / CPU tensor, or a CUDA tensor for CUDA sinks
    ready: object = None
    arrival: Optional[float] = None


class _End:
    """The end of a queue's items (the producer finished, or the run is stopping)."""


END = _End()


class Stages:
    """The run's stop flag and first error, and queue operations that give up on a stop."""

    def __init__(self, stop: Optional[threading.Event]):
        self.stop = stop or threading.Event()
        self.error: Optional[BaseException] = None
        self.failed_outputs: set[str] = set()  # outputs whose writing failed (--keep-partial drops them)
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
        self.stop.set()

    def put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue):
        while True:
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return END

    def finish_queue(self, q: queue.Queue) -> None:
        """Puts END even when the run is stopping (the consumer may be waiting on it)."""
        while True:
            try:
                q.put(END, timeout=0.05)
                return
            except queue.Full:
                if self.stop.is_set():
                    return


# -- the stage threads ---------------------------------------------------------------------
def receive_worker(source, mailbox: LatestFrames, stages: Stages) -> None:
    """A live source -> ``mailbox``, never waiting on the pipeline: each frame is stamped
    with its arrival and put into the mailbox, which keeps it (a recording's buffer) or
    replaces the oldest one waiting (live); ``mailbox.dropped`` counts what it dropped."""
    try:
        for frame in source:
            frame.arrival = time.monotonic()
            mailbox.put(frame)
            if stages.stop.is_set():
                return
    except BaseException as error:  # noqa: BLE001
        stages.fail(error)
    finally:
        mailbox.close()


def decode_worker(frames, converter: Converter, transfer, out: queue.Queue, stages: Stages,
                  cuts=None) -> None:
    """Frames (a source, or a live mailbox's ``drain``) -> Converter -> ``out``
    (``ConvertedFrame``s, then END). ``cuts``: a ``nvpipe.engine.cuts.CutDetector`` marking the
    frames that start a new shot."""
    transfer.stage_thread_started()
    try:
        with torch.inference_mode(), transfer.decode_stream():
            for frame in frames:
                if stages.stop.is_set():
                    return
                arrival = frame.arrival if frame.arrival is not None else time.monotonic()
                src, src_sm = converter(frame)
                if frame.release is not None:  # a borrowed NVDEC surface
                    frame.release()
                cut = cuts(src_sm) if cuts is not None else False
                item = ConvertedFrame(frame.index, frame.pts, src, src_sm, transfer.converted(),
                                      arrival, cut)
                if not stages.put(out, item):
                    return
    except BaseException as error:  # noqa: BLE001 - reported once by run()
        stages.fail(error)
    finally:
        stages.finish_queue(out)


def encode_worker(sink, inbox: queue.Queue, transfer, stages: Stages, busy: dict, path: str,
                  latency: Optional[LatencyLog] = None) -> None:
    """``inbox`` (``EncodeItem``s) -> ``sink.write``, until END; ``busy[path]`` adds up the
    seconds spent writing (how close the encoder is to being the run's ceiling), and
    ``latency`` each frame's seconds from arrival to written."""
    transfer.stage_thread_started()
    try:
        while True:
            item = stages.get(inbox)
            if item is END:
                return
            transfer.wait(item.ready)
            started = time.perf_counter()
            sink.write(item.array, item.pts)
            busy[path] += time.perf_counter() - started
            if latency is not None:
                latency.record(item.arrival)
    except OSError as error:  # a sink's disk filled or went away: one line, not a traceback
        from nvpipe.errors import OutputError

        stages.failed_outputs.add(path)
        stages.fail(OutputError(f"writing {path} failed ({error.strerror or error})"))
    except BaseException as error:  # noqa: BLE001
        if isinstance(error, NvpipeError):  # OutputError: this output's disk or encoder
            stages.failed_outputs.add(path)
        stages.fail(error)


def chunks(decoded: queue.Queue, size: int, stages: Stages) -> Iterator[list[ConvertedFrame]]:
    """Up to ``size`` converted frames at a time; the last chunk may be shorter, and so is
    one before a cut (a chunk never spans two shots). Stops (without the partial chunk)
    when the run is stopping."""
    chunk: list[ConvertedFrame] = []
    while True:
        item = stages.get(decoded)
        if item is END:
            if chunk and not stages.stop.is_set():
                yield chunk
            return
        if item.cut and chunk:
            yield chunk
            chunk = []
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []


# -- the job's parts -------------------------------------------------------------------------
def default_dtype(device: str) -> torch.dtype:
    """The network's precision unless asked: FP16 on CUDA (tensor cores), FP32 on the CPU."""
    return torch.float16 if device_type(device) == "cuda" else torch.float32


def _dtype_for(job: Job) -> torch.dtype:
    """The pipeline's dtype (frames, coefficients). ``bfloat16`` is the CPU network's
    alone (``_network_dtype``): the frames and the tail stay float32."""
    if job.dtype is not None:
        return {"float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.float32}[job.dtype]
    return default_dtype(job.device)


def _network_dtype(job: Job) -> Optional[torch.dtype]:
    """The CPU network's precision where the job names one (None: the engine's default)."""
    if job.device != "cpu" or job.dtype is None:
        return None
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(job.dtype)


def output_info(info: StreamInfo, resize: Optional[tuple[int, int]]) -> StreamInfo:
    """The stream the sinks write: the input's timing at its displayed (or resized) size."""
    width, height = resize if resize is not None else info.display_size
    return replace(info, width=width, height=height, rotation=0)


def choose_encoder(spec: OutputSpec, job: Job) -> OutputSpec:
    """``spec`` routed to NVENC or the CPU by ``nvpipe.sinks.encoders.choose_encoder``."""
    from nvpipe.sinks import choose_encoder as route

    gpu = gpu_index(job.device) if device_type(job.device) == "cuda" else 0

    def has_nvenc(codec: str) -> bool:
        from nvpipe.platform.gpu import has_nvenc as probe

        return probe(gpu, codec=codec)

    return route(spec, device=device_type(job.device), policy=job.encoder, has_nvenc=has_nvenc)


def load_network(job: Job, dtype: torch.dtype):
    import rvm

    if job.weights is not None and os.path.isdir(job.weights):
        raise NvpipeError(f"--weights {job.weights} is a folder: give a .pth or .onnx file")
    try:
        # The matting stage prepares it for the device (nvpipe.engine.matting.prepare_network).
        # ONNX weights: converted once, then read from nvpipe's cache (start-up).
        from nvpipe.model import converted

        return converted.load(job.weights, variant=job.variant, device=job.device, dtype=dtype)
    except rvm.WeightsError as error:
        raise NvpipeError(str(error)) from None


def check_ratio_leaves_pixels(ratio: float, width: int, height: int) -> None:
    """``NvpipeError`` where ``ratio`` leaves the network no row or column of the frame
    (the automatic ratio never does: ``nvpipe.job.auto_ratio``)."""
    import math

    if math.floor(min(width, height) * ratio) < 1:
        raise NvpipeError(f"ratio {ratio:g} leaves no pixels of a {width}x{height} frame: "
                          f"give a larger one (--ratio 1 keeps every pixel) or leave it "
                          f"automatic")


def _compose_targets(outputs: Outputs, kinds: dict[str, str]) -> list[ComposeTarget]:
    return [ComposeTarget(path, kinds[path], sink.pixel_format, sink.color.matrix,
                          sink.color.full_range) for path, sink in outputs.sinks.items()]


@dataclass
class Matted:
    """A chunk after the network: its coefficients (``[T, 4, h, w]``) and, with a subject,
    each frame's keep mask on its way (``nvpipe.engine.subject.PendingKeep``)."""

    chunk: list[ConvertedFrame]
    coeff_a: torch.Tensor
    coeff_b: torch.Tensor
    pending: tuple = ()


@dataclass
class Pipeline:
    """The stages of one job between its source and its sinks, and how frames cross."""

    converter: Converter
    matting: MattingStage
    composer: Composer
    transfer: object  # nvpipe.engine.transfer.HostTransfer | CudaTransfer
    pacing: Pacing = FILE_PACING
    cuts: object = None  # nvpipe.engine.cuts.CutDetector, or None (--no-cut-reset)
    subject: object = None  # nvpipe.engine.subject.SubjectSelector, or None (keep everyone)

    def matte(self, chunk: list[ConvertedFrame]) -> "Matted":
        """The network on a chunk, after its conversions are ready. With a subject, each
        frame's keep mask is submitted (the one place ``nvpipe.engine.subject`` is applied,
        before the full-size tail): ``keep_subject`` applies it, by when the tracker has run
        on its own thread beside the next chunk's network call."""
        self.transfer.network_waits_for([f.ready for f in chunk],
                                        [t for f in chunk for t in (f.src, f.src_sm)])
        coeff_a, coeff_b = self.matting(torch.stack([f.src_sm for f in chunk]),
                                        [f.src for f in chunk])
        if self.subject is None:
            return Matted(chunk, coeff_a, coeff_b)
        if self.matting.outputs_are_views:  # CUDA graphs: the next call overwrites them
            coeff_a, coeff_b = coeff_a.clone(), coeff_b.clone()
        return Matted(chunk, coeff_a, coeff_b, tuple(
            self.subject.submit(coeff_a[i], coeff_b[i], frame.src_sm, cut=frame.cut)
            for i, frame in enumerate(chunk)))

    def keep_subject(self, matted: "Matted") -> None:
        """Everyone else's alpha zeroed in ``matted``'s coefficients (waits for the tracker)."""
        for pending in matted.pending:
            self.subject.apply(pending)

    def compose(self, coeff_a, coeff_b, frame: ConvertedFrame) -> tuple[dict, object]:
        """Every output's frame, delivered where its sink reads it, and when it is ready."""
        return self.transfer.to_sinks(self.composer(coeff_a, coeff_b, frame.src, frame.index))

    def warm_up(self, job: Job, size: tuple[int, int], ratio: float, device: torch.device,
                dtype: torch.dtype) -> None:
        """CUDA (and live runs): graph capture and every kernel's first compilation (on the
        CPU, the first call's one-time costs) before any thread starts, so no other thread's
        CUDA work can invalidate the capture and no frame waits on a compiler (0.5-1.5 s a
        kernel, cold cache). The state is reset after."""
        from nvpipe import kernels

        height, width = size
        with torch.inference_mode(), self.transfer.network_stream():
            small = (job.chunk, 3, *kernels.small_size(height, width, ratio))
            self.matting.prepare(small)
            self.converter.warm_up()
            black = torch.zeros((job.chunk, 3, height, width), dtype=dtype, device=device)
            coeff_a, coeff_b = self.matting(torch.zeros(small, dtype=dtype, device=device), black)
            self.composer.warm_up(coeff_a[0], coeff_b[0], black[0])
            self.matting.reset()
            if device.type == "cuda":
                torch.cuda.synchronize(device)


def _build_pipeline(job: Job, info: StreamInfo, sink_info: StreamInfo, outputs: Outputs,
                    network, device: torch.device, dtype: torch.dtype,
                    pacing: Pacing = FILE_PACING) -> Pipeline:
    from nvpipe.sources.backgrounds import open_background
    from nvpipe.engine.transfer import transfer_for

    width, height = sink_info.width, sink_info.height
    ratio = job.ratio if job.ratio is not None else auto_ratio(width, height)
    check_ratio_leaves_pixels(ratio, width, height)
    kinds = {str(spec.path): spec.kind for spec in job.outputs}
    background = None
    if "composite" in kinds.values():
        background = open_background(job.background or DEFAULT_GREEN, width, height)
    if network is None:
        network = load_network(job, dtype)
    # Rings outlast everything in flight: the queue, the chunks held (with a subject, the one
    # waiting for its tracker too: the main loop's in_flight), the frame in hand.
    held = job.chunk * (2 if job.subject_spec is not None else 1)
    converter = Converter(info, ratio=ratio, device=device, dtype=dtype, resize=job.resize,
                          ring_size=pacing.decoded + held + 2)
    matting = MattingStage(network, ratio=ratio, device=device, dtype=dtype, engine=job.engine,
                           network_dtype=_network_dtype(job))
    cuts = None
    if job.cut_reset:
        from nvpipe.engine.cuts import CutDetector

        cuts = CutDetector()
    subject = None
    if job.subject_spec is not None:
        from nvpipe.engine.subject import SubjectSelector

        subject = SubjectSelector(job.subject_spec, info.display_size)
    pipeline = Pipeline(converter, matting,
                        Composer(_compose_targets(outputs, kinds), background,
                                 ring_size=pacing.compose_ring),
                        transfer_for(device, outputs.sinks, pacing.compose_ring, matting.stream),
                        pacing, cuts, subject)
    if device.type == "cuda" or pacing.live:
        # Live runs warm up on the CPU too: the first network call's one-time costs (1-2 s
        # on 2 cores) would otherwise be the first frames' latency.
        pipeline.warm_up(job, (height, width), ratio, device, dtype)
    return pipeline


def _open_outputs(job: Job, source, device: torch.device,
                  notes: Optional[list[str]] = None) -> tuple[StreamInfo, Outputs]:
    """The run's outputs, opened; ``notes`` gets a line for each output that ``--encoder
    auto`` sent to NVENC and that opened on the CPU because NVENC could not start."""
    from nvpipe.sinks import open_sink
    from nvpipe.sinks.encoders import fallback_opener, requests_nvenc

    info = source.info
    sink_info = output_info(info, job.resize)
    specs = [choose_encoder(spec, job) for spec in job.outputs]
    opener = functools.partial(open_sink, shares_cores_with_network=device.type == "cpu",
                               gpu_id=device.index or 0)
    if job.encoder == "auto":  # NVENC chosen for the user, not asked for: the CPU can take over
        cpu_specs = {str(routed.path): spec for routed, spec in zip(specs, job.outputs)
                     if routed is not spec and not requests_nvenc(spec)}
        opener = fallback_opener(opener, cpu_specs, notes if notes is not None else [])
    return sink_info, Outputs(specs, sink_info, overwrite=job.overwrite, open_sink=opener,
                              audio_from=job.input if info.has_audio else None)


def run(job: Job, *, progress: Optional[ProgressCallback] = None,
        stop: Optional[threading.Event] = None, network: Optional[torch.nn.Module] = None,
        verbose: bool = False, live_report: Optional[Callable[[LiveStats], None]] = None,
        profile: bool = False) -> RunResult:
    """Run ``job`` to completion; see the module docstring for threads, errors and outputs.

    ``network`` overrides loading weights from ``job`` (an ``rvm.MattingNetwork`` already on
    the job's device and dtype). ``profile``: ``RunResult.profile`` says where the time went
    (``nvpipe.engine.profile``). ``live_report`` is called about once a second of a live
    run with its figures so far. Raises ``NvpipeError`` for anything the user can fix, its
    message ending with what became of the outputs; ``Interrupted`` on Ctrl-C.
    ``job.device`` ``cuda:N`` runs everything on GPU N (decoder, network, encoder).
    """
    if not job.outputs:
        raise NvpipeError("nothing to write: give at least one output")
    if device_type(job.device) == "cuda":
        from nvpipe.platform.gpu import check_cuda_ready

        # Pictures decode on the CPU: PyNvVideoCodec is only needed for video inputs, and
        # the NVDEC source raises DeviceError naming it when it cannot load.
        check_cuda_ready(need_decoder=False, gpu_id=gpu_index(job.device))
        device = torch.device("cuda", gpu_index(job.device))
        # This thread's current device for the run (the stage threads set theirs: the
        # transfer's stage_thread_started), put back after it.
        with torch.cuda.device(device):
            return _run(job, device, progress, stop, network, verbose, live_report, profile)
    return _run(job, torch.device("cpu"), progress, stop, network, verbose, live_report,
                profile)


def _run(job: Job, device: torch.device, progress, stop, network, verbose, live_report,
         profile) -> RunResult:
    from nvpipe.sources import open_source, trim

    dtype = _dtype_for(job)
    started = time.perf_counter()
    stages = Stages(stop)
    source = trim(open_source(job.input, device=str(device), fps=job.fps,
                              input_format=job.input_format, input_options=job.input_options,
                              timeout=job.timeout, live=job.live, stop=stages.stop), job)
    open_notes: list[str] = []
    try:
        sink_info, outputs = _open_outputs(job, source, device, open_notes)
    except BaseException:
        source.close()
        raise
    try:
        pacing = choose_pacing(source.live, [str(spec.path) for spec in job.outputs], job.live)
    except ValueError as error:  # a bad $NVPIPE_RECORD_BUFFER_MB
        outputs.discard()
        source.close()
        raise NvpipeError(str(error)) from None
    encoder_busy = {path: 0.0 for path in outputs.sinks}
    latency = {path: LatencyLog() for path in outputs.sinks}
    mailbox = pacing.receive_buffer() if pacing.live else None
    frames_done = 0
    cuts: list[int] = []
    telemetry = None
    pipeline = profiler = None
    threads: list[threading.Thread] = []
    pipeline = None
    try:
        pipeline = _build_pipeline(job, source.info, sink_info, outputs, network, device, dtype,
                                   pacing)
        if verbose and device.type == "cuda":
            from nvpipe.platform.telemetry import Telemetry

            telemetry = Telemetry(gpu_id=device.index or 0)
            telemetry.start()
        decoded: queue.Queue = queue.Queue(pacing.decoded)
        inboxes = {path: queue.Queue(pacing.encode) for path in outputs.sinks}
        frames = source
        if mailbox is not None:
            threads.append(threading.Thread(target=receive_worker, name=RECEIVE_THREAD,
                                            daemon=True, args=(source, mailbox, stages)))
            frames = mailbox.drain(stages.stop)
        if profile:
            from nvpipe.engine.profile import Profile

            profiler = Profile()
            frames = profiler.attach(pipeline, outputs.sinks, stages, frames)
        threads.append(threading.Thread(
            target=decode_worker, name="nvpipe-decode", daemon=True,
            args=(frames, pipeline.converter, pipeline.transfer, decoded, stages, pipeline.cuts)))
        threads += [threading.Thread(
            target=encode_worker, name="nvpipe-encode", daemon=True,
            args=(sink, inboxes[path], pipeline.transfer, stages, encoder_busy, path,
                  latency[path]))
            for path, sink in outputs.sinks.items()]
        for thread in threads:
            thread.start()

        # The main loop: network and compose on this thread, everything else on theirs.
        total = source.info.frame_count
        reported = time.perf_counter()

        def deliver(matted: Matted) -> bool:
            """The chunk's frames composed and handed to the encoders; False: stopping."""
            nonlocal frames_done
            pipeline.keep_subject(matted)
            for i, frame in enumerate(matted.chunk):
                composed, ready = pipeline.compose(matted.coeff_a[i], matted.coeff_b[i], frame)
                if not all(stages.put(inboxes[path],
                                      EncodeItem(frame.pts, array, ready, frame.arrival))
                           for path, array in composed.items()):
                    return False  # stopping: chunks() ends too
                frames_done += 1
                if progress is not None:
                    progress(frames_done, total, time.perf_counter() - started)
            return True

        # With a subject, one chunk waits between the network and the tail while the next
        # chunk's network call runs: its tracker (on the selector's thread) runs beside the
        # network rather than after it (2 cores, 640x360, four people: the tracker is ~60 ms
        # of one core a frame, the network ~55 ms of both).
        in_flight: Optional[Matted] = None
        with torch.inference_mode(), pipeline.transfer.network_stream():
            for chunk in chunks(decoded, job.chunk, stages):
                if chunk[0].cut:  # chunks() starts a chunk at each cut
                    pipeline.matting.reset()
                    cuts.append(chunk[0].index)
                matted = pipeline.matte(chunk)
                if pipeline.subject is not None:
                    matted, in_flight = in_flight, matted
                if matted is not None and not deliver(matted):
                    in_flight = None
                    break
                if live_report is not None and mailbox is not None \
                        and time.perf_counter() - reported >= LIVE_REPORT_INTERVAL:
                    reported = time.perf_counter()
                    live_report(_live_stats(mailbox, latency, outputs))
            if in_flight is not None:
                deliver(in_flight)

        for inbox in inboxes.values():
            stages.finish_queue(inbox)
        for thread in threads:
            thread.join()
        if stages.error is None and source.damage is not None:
            stages.fail(InputError(f"{job.input} is damaged: {source.damage}"))
    except BaseException as error:
        stages.fail(error)
    finally:
        if pipeline is not None and pipeline.subject is not None:
            pipeline.subject.close()
        _join_all(threads, stages, give_up_on=(RECEIVE_THREAD,) if mailbox else ())
        _close_source(source, threads)
        if telemetry is not None:
            telemetry.stop()
    live = _live_stats(mailbox, latency, outputs) if mailbox is not None else None
    ratio_used = job.ratio if job.ratio is not None else auto_ratio(*output_info(
        source.info, job.resize).display_size)
    decisions = {"device": job.device, "dtype": str(dtype).replace("torch.", ""),
                 "ratio": round(ratio_used, 6), "ratio_auto": job.ratio is None,
                 "pacing": pacing.mode, "chunk": job.chunk,
                 "kinds": {str(spec.path): spec.kind for spec in job.outputs}}
    if pacing.mode == "record":
        decisions["record_buffer_mb"] = round(pacing.buffer_bytes / 2 ** 20, 1)
    subject = pipeline.subject if pipeline is not None else None
    result = _end_outputs(job, outputs, stages, frames_done, started, telemetry, encoder_busy,
                          notes=list(source.notes) + open_notes, live=live, cuts=cuts,
                          decisions=decisions)
    result.decided = decided(job, source, outputs, subject, result.notes)
    result.subject = subject.tracker if subject is not None else None
    if subject is not None:
        result.decisions["subject"] = subject.describe()
    if pipeline is not None:
        result.engine = pipeline.matting.engine
        result.decisions["engine"] = pipeline.matting.engine
    if profiler is not None:
        result.profile = profiler.report(frames_done, pipeline.matting)
    return result


def decided(job: Job, source, outputs: Outputs, subject, notes: list[str]) -> list[str]:
    """What the run decided and why, one phrase each: the ratio (automatic or given), the
    subject, the audio (copied, dropped or none), the background, live or not."""
    info = source.info
    width, height = output_info(info, job.resize).display_size
    if job.ratio is not None:
        said = [f"ratio {job.ratio:g} (given)"]
    else:
        ratio = auto_ratio(width, height)
        said = [f"ratio {ratio:.3g} (automatic: " + (
            f"512 / {max(width, height)}, the longer side)" if ratio < 1 else
            "1, the frame is 512 pixels or less)")]
    said.append(subject.describe() if subject is not None else "subject: everyone (no --subject)")
    if not info.has_audio:
        said.append("audio: none in the input")
    else:
        copying = [os.path.basename(os.path.normpath(path)) for path, sink in outputs.sinks.items()
                   if _copies_audio(sink)]
        dropped = [note for note in notes if "audio" in note]
        if copying and not dropped:
            said.append(f"audio: copied to {', '.join(copying)}")
        elif copying:
            said.append(f"audio: partly dropped ({dropped[0]})")
        else:
            said.append("audio: dropped (" + (dropped[0] if dropped else
                        "these outputs take none: pictures, streams, the null output") + ")")
    if any(spec.kind == "composite" for spec in job.outputs):
        said.append(f"background {job.background or DEFAULT_GREEN}")
    else:
        said.append("background: none (" + ", ".join(sorted({spec.kind for spec in job.outputs}))
                    + " outputs)")
    if source.live:
        said.append("live (frames dropped rather than fall behind"
                    + (", as asked)" if job.live else f": {job.input} arrives in real time)"))
    else:
        said.append("not live (every frame converted" + (", as asked)" if job.live is False
                                                         else ")"))
    return said


def _copies_audio(sink) -> bool:
    """Whether ``sink`` carries the input's audio (a PyAV file, or NVENC's muxer)."""
    if getattr(sink, "_audio", None) is not None:
        return True
    return getattr(getattr(sink, "_muxer", None), "_audio", None) is not None


def _live_stats(mailbox: LatestFrames, latency: dict[str, LatencyLog],
                outputs: Outputs) -> LiveStats:
    """A live run's figures; latency and rate are the first output's (the main one)."""
    first = next(iter(outputs.sinks))
    log = latency[first]
    percentiles = log.percentiles() or (None, None)
    recording = getattr(mailbox, "max_bytes", None)
    return LiveStats(received=mailbox.received, written=outputs.sinks[first].frames_written,
                     dropped=mailbox.dropped, fps=log.rate(),
                     latency_p50=percentiles[0], latency_p99=percentiles[1],
                     mode="record" if recording else "live",
                     buffer_peak=getattr(mailbox, "peak", 0), buffer_bound=recording or 0)


def _close_source(source, threads: list[threading.Thread]) -> None:
    """Closes the source, unless its receive thread is still blocked in a read (a silent
    stream at Ctrl-C): closing under it would free what it reads. The process's exit, or
    the read's timeout, ends that thread; it closes nothing."""
    if any(t.name == RECEIVE_THREAD and t.is_alive() for t in threads):
        return
    source.close()


def _end_outputs(job: Job, outputs: Outputs, stages: Stages, frames_done: int,
                 started: float, telemetry, encoder_busy: dict, *, notes: list[str],
                 live: Optional[LiveStats] = None, cuts: Optional[list[int]] = None,
                 decisions: Optional[dict] = None) -> RunResult:
    """Applies the output policy to how the run ended; returns or raises accordingly."""
    error = stages.error
    interrupted = isinstance(error, KeyboardInterrupt) or (error is None and stages.stop.is_set())
    failed = error is not None and not isinstance(error, KeyboardInterrupt)
    encoders = {path: sink.encoder_name for path, sink in outputs.sinks.items()}
    notes += [note for sink in outputs.sinks.values() for note in sink.notes]
    if failed:
        started_writing = any(sink.frames_written for sink in outputs.sinks.values())
        placed = (outputs.keep_partial(failed=stages.failed_outputs) if job.keep_partial
                  else outputs.discard())
        if isinstance(error, NvpipeError):
            if not started_writing:
                raise error
            raise type(error)(f"{error}; {describe_outcome(placed, job.keep_partial)}") from None
        raise error
    try:
        placed = outputs.keep_partial() if interrupted else outputs.commit(
            keep_partial=job.keep_partial)
    except NvpipeError as error:  # a full disk at the end, --keep-partial: what was kept
        placed = getattr(error, "placed", None)
        if placed is None:
            raise
        raise type(error)(f"{error}; {describe_outcome(placed, True)}") from None
    seconds = time.perf_counter() - started
    bound = encoder_bound(encoder_busy, encoders, seconds, job.device)
    if bound:
        notes.append(bound)
    result = RunResult(frames=frames_done, seconds=seconds,
                       outputs=[p.path for p in placed], interrupted=interrupted,
                       encoders=encoders, placed=placed, notes=notes, live=live,
                       cuts=list(cuts or ()), device=job.device,
                       decisions=dict(decisions or {}),
                       telemetry=telemetry.summary() if telemetry is not None else {})
    if isinstance(error, KeyboardInterrupt):
        raise Interrupted(result, terminated=isinstance(error, Terminated)) from None
    return result


# An encoder writing this share of the run's time or more is what holds the run back.
ENCODER_BOUND_SHARE = 0.9


def encoder_bound(busy: dict[str, float], encoders: dict[str, str], seconds: float,
                  device: str) -> Optional[str]:
    """A note when a CPU encoder was the run's ceiling on the GPU path (on the CPU path the
    network shares the cores, so an encoder's busy time there says little)."""
    if device_type(device) != "cuda" or seconds <= 0:
        return None
    on_cpu = {path: spent for path, spent in busy.items() if "(CPU)" in encoders[path]}
    path, spent = max(on_cpu.items(), key=lambda item: item[1], default=(None, 0.0))
    if path is None or spent < ENCODER_BOUND_SHARE * seconds:
        return None
    return (f"encoder-bound: {encoders[path]} writing {os.path.basename(path)} was busy "
            f"{spent / seconds:.0%} of the run; a faster --preset (superfast, ultrafast) or "
            f"a GPU with NVENC goes faster")


def describe_outcome(placed: list[Placed], keep_partial: bool) -> str:
    """What became of a run's outputs, for a one-line message."""
    from nvpipe.sinks.outputs import KEPT_PARTIAL, LEFT_UNCHANGED, NOT_WRITTEN, STREAMED, WRITTEN

    kept = [p.describe() for p in placed if p.outcome in (WRITTEN, KEPT_PARTIAL, STREAMED)]
    untouched = [p.path for p in placed if p.outcome == LEFT_UNCHANGED]
    missing = [p.path for p in placed if p.outcome == NOT_WRITTEN]
    parts = []
    if kept:
        parts.append("kept " + ", ".join(kept))
    if missing and not kept:
        parts.append("no output written" + ("" if keep_partial else
                                            " (--keep-partial keeps the frames done)"))
    elif missing:
        parts.append("not written: " + ", ".join(missing))
    if untouched:
        parts.append("left unchanged: " + ", ".join(untouched))
    return "; ".join(parts) or "nothing written"


# A live receive thread blocked in a silent stream's read is left after this long.
RECEIVE_GRACE_SECONDS = 1.0


def _join_all(threads: list[threading.Thread], stages: Stages, give_up_on: tuple = ()) -> None:
    """Join every stage thread; a second Ctrl-C while waiting only repeats the stop.
    Threads named in ``give_up_on`` get ``RECEIVE_GRACE_SECONDS`` (a daemon blocked in a
    network read: its stream's timeout ends it)."""
    for thread in threads:
        deadline = time.monotonic() + RECEIVE_GRACE_SECONDS
        while thread.is_alive():
            if thread.name in give_up_on and time.monotonic() > deadline:
                break
            try:
                thread.join(timeout=0.1)
            except KeyboardInterrupt as error:
                stages.fail(error)


__all__ = ["run", "RunResult", "Interrupted", "Terminated", "ConvertedFrame", "EncodeItem", "load_network",
           "choose_encoder", "output_info", "default_dtype"]
