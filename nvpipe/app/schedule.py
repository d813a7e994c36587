"""Batches scheduled clip by clip: in this process, in local processes, or on a Ray cluster.

A clip is the unit of parallelism (the network's memory runs frame to frame within a clip).
One layer, three back ends, one set of batch semantics:

- ``plan_batch`` lists the clips and decides, from nvpipe's record (``batch.plan_clip``,
  ``nvpipe.app.manifest``), which to convert and which to skip (resume);
- ``convert_clip`` is what every back end runs for one clip: re-plan, mark the outputs
  ``started``, run the job (``nvpipe.sinks.outputs`` stages and commits them), mark them
  ``complete``. A failing clip comes back as ``failed``; the rest go on;
- a worker that dies (killed, out of memory, a lost node) is retried up to
  ``MAX_ATTEMPTS`` times. Its outputs never reach their final names: what it leaves is
  hidden staging files and a lock, which the next run of that target removes, and a record
  still saying ``started``, so the retry's plan redoes the clip like any resume would.

Back ends: ``jobs == 1`` runs clips one after another here, the network loaded once (the
default); ``jobs > 1`` runs each clip in a process of its own (``spawn``: each its own CUDA
context and NVDEC session); ``cluster`` runs each clip as a Ray task with the resources
of ``clip_resources``. Progress and the summary are printed by the submitting process.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from nvpipe.app.batch import (BatchSummary, _recorded_outputs, batch_inputs, batch_outputs,
                              clip_job, job_settings, plan_clip)
from nvpipe.errors import NvpipeError, raise_terminated
from nvpipe.job import Job
from nvpipe.platform.capacity import clip_resources

# A worker that dies is retried this many times in all: a clip that kills its worker every
# time (a decoder crash, memory) fails after 3 tries instead of holding the batch forever.
MAX_ATTEMPTS = 3
# Test hook (tests/app/test_schedule.py, tests/app/test_cluster.py): "STEM:FRAMES" makes the worker
# converting clip STEM kill itself (SIGKILL) after FRAMES frames, on its first attempt only;
# "STEM:FRAMES:every" on every attempt. Only worker processes read it, never --jobs 1.
KILL_HOOK = "NVPIPE_TEST_KILL_WORKER"

CONVERTED, FAILED, SKIPPED, INTERRUPTED, DIED = "converted", "failed", "skipped", "interrupted", "died"


@dataclass
class Clip:
    """One clip of a batch: its number (1-based) of ``total``, and the job that converts it."""

    number: int
    total: int
    job: object  # nvpipe.job.Job

    @property
    def name(self) -> str:
        return os.path.basename(self.job.input)

    @property
    def label(self) -> str:
        return f"[{self.number}/{self.total}] {self.name}"


@dataclass
class ClipResult:
    """What became of one clip: ``status`` is CONVERTED, FAILED, SKIPPED, INTERRUPTED or
    DIED (the worker exited without an answer); ``reason`` says why, for all but CONVERTED."""

    input: str
    status: str
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0
    note: Optional[str] = None
    outputs: list = field(default_factory=list)  # the outputs written (converted clips)


# -- planning and the per-clip function ------------------------------------------------------
def plan_batch(source: str, out: str, template: Job, summary, log=None) -> list[Clip]:
    """The clips of ``source`` to convert into ``out``; those to skip (complete, or blocked
    by a file nvpipe did not write) and those whose job cannot be built go into
    ``summary``. A clip to redo gets ``overwrite`` (the files there are nvpipe's partial
    ones) and its reason is printed."""
    log = log or sys.stderr
    inputs = batch_inputs(source)
    if not inputs:
        raise NvpipeError(f"no video files match {source!r}")
    if "{stem}" not in out:
        if os.path.exists(out) and not os.path.isdir(out):
            raise NvpipeError(f"batch output must be a directory: {out!r} is a file")
        os.makedirs(out, exist_ok=True)
    clips = []
    repaired: set = set()
    for number, input_path in enumerate(inputs, 1):
        _, out_dir = batch_outputs(input_path, out)
        if out_dir not in repaired:  # a damaged record: said once, kept aside, rebuilt
            from nvpipe.app.manifest import BatchManifest

            repaired.add(out_dir)
            if os.path.isdir(out_dir):
                damage = BatchManifest(out_dir).repair()
                if damage:
                    print(f"nvpipe: note: {damage}", file=log)
        try:
            job = clip_job(template, input_path, out)
            convert, reason, note = plan_clip(job)
        except NvpipeError as error:
            _record(summary, ClipResult(input_path, FAILED, str(error)), log)
            continue
        if not convert:
            summary.skipped.append((input_path, reason))
            continue
        if note:
            print(f"nvpipe: {os.path.basename(input_path)}: {note}", file=log)
            job = replace(job, overwrite=True)
        clips.append(Clip(number, len(inputs), job))
    return clips


def convert_clip(clip: Clip, *, networks: Optional[dict] = None, progress=None,
                 verbose: bool = False, kill_after: Optional[int] = None) -> ClipResult:
    """Convert one clip with the output transaction and the batch record; every back end
    calls this. Re-plans first (a retry finds the record ``started`` and redoes the clip).
    ``Interrupted`` (Ctrl-C, SIGTERM) propagates; any other failure comes back ``failed``.
    ``networks``: loaded networks kept between clips (a worker's cache); ``kill_after``:
    the test hook (``KILL_HOOK``)."""
    from nvpipe.app.manifest import manifests_for
    from nvpipe.engine.fallback import run_guarded

    job = clip.job
    try:
        convert, reason, note = plan_clip(job)
        if not convert:
            return ClipResult(job.input, SKIPPED, reason)
        if note:
            job = replace(job, overwrite=True)
        settings = job_settings(job)
        manifests = manifests_for(_recorded_outputs(job))
        for path, manifest in manifests.items():
            manifest.mark_started([path], job.input, settings)
        network = _network_for(job, networks if networks is not None else {})
        if kill_after is not None:
            progress = _killing(progress, kill_after)
        result = run_guarded(job, progress=progress, network=network, verbose=verbose)
        for path, manifest in manifests.items():
            manifest.mark_complete([path], job.input, settings, result.frames)
        return ClipResult(job.input, CONVERTED, frames=result.frames, seconds=result.seconds,
                          note=note, outputs=list(result.outputs))
    except NvpipeError as error:
        return ClipResult(job.input, FAILED, str(error))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - one clip's failure must not stop the batch
        return ClipResult(job.input, FAILED, f"{type(error).__name__}: {error}")


# A worker process's loaded networks, kept between its clips (a Ray worker process runs
# many tasks): loading the official ONNX weights took 5 s here against 2-6 s a clip.
_NETWORKS: dict = {}


def _network_for(job, networks: dict):
    from nvpipe.engine.runner import _dtype_for, load_network

    key = (job.weights, os.environ.get("NVPIPE_WEIGHTS"), job.variant, job.device,
           str(_dtype_for(job)))
    if key not in networks:
        networks.clear()  # one network per process at a time
        networks[key] = load_network(job, _dtype_for(job))
    return networks[key]


def _killing(progress, frames: int):
    """A progress callback that SIGKILLs this process after ``frames`` frames (test hook)."""
    import signal

    def report(done, total, elapsed):
        if progress is not None:
            progress(done, total, elapsed)
        if done >= frames:
            os.kill(os.getpid(), signal.SIGKILL)
    return report


def _kill_after(clip: Clip, attempt: int) -> Optional[int]:
    """The test hook's frame count for this attempt of ``clip``, or None."""
    hook = os.environ.get(KILL_HOOK)
    if not hook:
        return None
    stem, frames, *every = hook.split(":")
    if stem != Path(clip.job.input).stem or (attempt != 1 and every != ["every"]):
        return None
    return int(frames)


def _record(summary, result: ClipResult, log) -> None:
    """Adds a clip's result to the batch summary (the failure line printed as it happens)."""
    if result.status == CONVERTED:
        summary.converted.append(result.input)
        summary.outputs.extend(result.outputs)
        summary.frames += result.frames
    elif result.status == SKIPPED:
        summary.skipped.append((result.input, result.reason))
    else:
        summary.failed.append((result.input, result.reason))
        print(f"nvpipe: failed: {result.input}: {result.reason}", file=log)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a parallel batch, raised once every worker has stopped."""

    def __init__(self, terminated: bool):
        super().__init__()
        self.terminated = terminated


# -- back ends -----------------------------------------------------------------------------
def schedule_batch(source: str, out: str, template: Job, summary, *, jobs: int = 1,
                   cluster: Optional[str] = None,
                   progress_factory: Optional[Callable[[str], Callable]] = None,
                   log=None, verbose: bool = False) -> None:
    """Plans the batch and converts its clips on the chosen back end: here (``jobs`` 1),
    in ``jobs`` local processes, or on the Ray cluster at ``cluster``; each clip's result
    goes into ``summary``. ``log`` None: ``sys.stderr`` as it is at the call (a default
    bound at import kept the stream of whoever imported first: a test's closed capture)."""
    log = log or sys.stderr
    if jobs < 1:
        raise NvpipeError(f"--jobs must be at least 1, got {jobs}")
    if cluster is None:
        clips = plan_batch(source, out, template, summary, log)
        if jobs > 1 and clips:
            _run_in_processes(clips, summary, jobs, progress_factory is not None, log)
        elif clips:
            _run_here(clips, summary, progress_factory, log, verbose)
        return
    ray, started = connect(cluster)
    try:
        template = replace(template, device=cluster_device(ray, template.device))
        clips = plan_batch(source, out, template, summary, log)
        if clips:
            _run_on_ray(ray, clips, summary, jobs, progress_factory is not None, log)
    finally:
        if started:
            ray.shutdown()


def _run_here(clips, summary, progress_factory, log, verbose) -> None:
    """One clip after another in this process; the network is loaded once."""
    networks: dict = {}
    for clip in clips:
        progress = progress_factory(clip.label) if progress_factory else None
        try:
            result = convert_clip(clip, networks=networks, progress=progress,
                                  verbose=verbose)
        finally:
            if progress is not None and hasattr(progress, "finish"):
                progress.finish()
        _record(summary, result, log)


class _Display:
    """The submitting process's view of a parallel batch: one line per clip as it ends
    ("clip k of n"), with frames and fps, and an aggregate at the end."""

    def __init__(self, total: int, show: bool, log):
        self.total, self.show, self.log = total, show, log
        self.done = 0
        self.frames = 0
        self.started = time.perf_counter()

    def ended(self, clip: Clip, result: ClipResult) -> None:
        self.done += 1
        self.frames += result.frames
        if self.show and result.status == CONVERTED:
            fps = result.frames / result.seconds if result.seconds > 0 else 0.0
            print(f"nvpipe: clip {self.done} of {self.total} done: {clip.name}, "
                  f"{result.frames} frames in {result.seconds:.1f} s ({fps:.1f} fps)",
                  file=self.log, flush=True)

    def retrying(self, clip: Clip, attempt: int, why: str) -> None:
        print(f"nvpipe: {clip.name}: the worker died ({why}); retry {attempt} of "
              f"{MAX_ATTEMPTS - 1}", file=self.log, flush=True)

    def finish(self) -> None:
        seconds = time.perf_counter() - self.started
        if self.show and self.frames:
            print(f"nvpipe: batch: {self.frames} frames in {seconds:.1f} s "
                  f"({self.frames / seconds:.1f} fps over all clips)", file=self.log, flush=True)


def _settle(clip, attempt, result, display, summary, log) -> bool:
    """Records a worker's answer; True when the clip should be tried again."""
    if result.status == DIED and attempt < MAX_ATTEMPTS:
        display.retrying(clip, attempt, result.reason)
        return True
    if result.status == DIED:
        result = replace(result, status=FAILED,
                         reason=f"its worker died {MAX_ATTEMPTS} times (last: {result.reason})")
    if result.status == INTERRUPTED:
        print(f"nvpipe: {clip.name}: {result.reason}", file=log)
        return False
    if result.note:
        print(f"nvpipe: {clip.name}: {result.note}", file=log)
    _record(summary, result, log)
    display.ended(clip, result)
    return False


# local processes
def _worker_threads(jobs: int) -> int:
    """Torch threads per worker: the cores shared out (2 cores, --jobs 2 -> 1 each)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _process_main(threads: int, conn) -> None:
    """A worker process: clips from ``conn`` one at a time (None: done), each answer sent
    back; the network stays loaded between clips. SIGINT is left to the submitting process,
    which stops workers with SIGTERM (handled like Ctrl-C: the frames done are kept as a
    partial file that the record does not count as complete)."""
    import signal

    from nvpipe.platform.process import end_program, start_program
    from nvpipe.platform.threads import tune_for_pipeline

    start_program()
    tune_for_pipeline()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        import torch

        torch.set_num_threads(threads)
        while True:
            message = conn.recv()
            if message is None:
                return
            clip, kill_after = message
            try:
                result = convert_clip(clip, networks=_NETWORKS, kill_after=kill_after)
            except KeyboardInterrupt as interrupt:
                conn.send(ClipResult(clip.job.input, INTERRUPTED, _interrupted(interrupt)))
                return
            conn.send(result)
    except (KeyboardInterrupt, EOFError):
        return
    finally:  # the worker process ends here
        end_program()


def _interrupted(interrupt: KeyboardInterrupt) -> str:
    from nvpipe.engine.runner import Interrupted, describe_outcome

    if isinstance(interrupt, Interrupted):
        done = interrupt.result
        return (f"interrupted after {done.frames} frames; "
                f"{describe_outcome(done.placed, keep_partial=True)}")
    return "interrupted"


class _Worker:
    """A local worker process and the clip it is converting (None when idle)."""

    def __init__(self, context, threads: int):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_process_main, args=(threads, child),
                                       name="nvpipe-worker", daemon=True)
        self.process.start()
        child.close()
        self.clip: Optional[Clip] = None
        self.attempt = 0

    def give(self, clip: Clip, attempt: int) -> None:
        self.clip, self.attempt = clip, attempt
        self.conn.send((clip, _kill_after(clip, attempt)))

    def answer(self) -> Optional[ClipResult]:
        """The clip's result, or None when the process died without one."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def death(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        return f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


def _run_in_processes(clips, summary, jobs, show, log) -> None:
    """``jobs`` worker processes (``spawn``: fork after CUDA or OpenMP started is unsafe),
    each converting one clip at a time; a worker that dies is replaced and its clip retried."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = _worker_threads(jobs)
    display = _Display(len(clips), show, log)
    waiting = [(clip, 1) for clip in clips]
    workers = [_Worker(context, threads) for _ in range(min(jobs, len(clips)))]
    interrupt: Optional[KeyboardInterrupt] = None
    try:
        while True:
            try:
                for worker in workers:
                    if worker.clip is None and waiting and interrupt is None:
                        worker.give(*waiting.pop(0))
                busy = [worker for worker in workers if worker.clip is not None]
                if not busy:
                    break
                ready = wait([worker.conn for worker in busy])
                for worker in busy:
                    if worker.conn not in ready:
                        continue
                    clip, attempt = worker.clip, worker.attempt
                    result = worker.answer()
                    worker.clip = None
                    if result is None:
                        result = ClipResult(clip.job.input, DIED, worker.death())
                        workers[workers.index(worker)] = _Worker(context, threads)
                    if _settle(clip, attempt, result, display, summary, log):
                        waiting.insert(0, (clip, attempt + 1))
            except KeyboardInterrupt as error:  # stop the workers; each keeps what it did
                interrupt = error
                waiting.clear()
                for worker in workers:
                    if worker.clip is not None and worker.process.is_alive():
                        worker.process.terminate()  # SIGTERM
    finally:
        for worker in workers:
            worker.close()
    display.finish()
    if interrupt is not None:
        from nvpipe.errors import Terminated

        raise BatchInterrupted(isinstance(interrupt, Terminated)) from None


# Ray
def _ray_convert(clip: Clip, kill_after: Optional[int]) -> ClipResult:
    """One clip as a Ray task (on whichever node Ray chose; the outputs' folder is shared)."""
    from nvpipe.platform.threads import tune_for_pipeline

    tune_for_pipeline()
    try:
        return convert_clip(clip, networks=_NETWORKS, kill_after=kill_after)
    except KeyboardInterrupt as interrupt:  # ray.cancel
        return ClipResult(clip.job.input, INTERRUPTED, _interrupted(interrupt))


def import_ray():
    try:
        import ray
    except ImportError:
        raise NvpipeError("--cluster needs Ray: pip install 'nvpipe[cluster]' "
                          "(or pip install ray)") from None
    return ray


def connect(address: str):
    """Ray, connected: ``auto`` joins the Ray running on this machine or starts one here;
    anything else is a cluster address (``HOST:6379``, ``ray://HOST:10001``). Returns
    ``(ray, started)``; ``started`` when this call connected (disconnect when done)."""
    import logging

    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    # Ray's notice that it turned token authentication on is not the user's to act on.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    # Nor that ray.init ran off the main thread (below): nvpipe handles SIGTERM itself.
    logging.getLogger("ray._private.worker").addFilter(
        lambda record: not str(record.msg).startswith("SIGTERM handler is not set"))
    timeout = cluster_timeout()
    if address != "auto":
        _probe(address, timeout)
        kwargs = dict(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address == "auto":  # this machine's Ray: started here, nothing to wait for
        try:
            ray.init(**kwargs)
        except Exception as error:  # noqa: BLE001 - Ray's errors vary by version
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise NvpipeError(f"cannot start Ray on this machine: {first}") from None
        return ray, True
    outcome: dict = {}

    def init() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as error:  # noqa: BLE001 - reported by the caller's thread
            outcome["error"] = error

    # ray.init retries an unanswering address for minutes and holds Ctrl-C: it runs on a
    # thread of its own, waited for in 0.1 s slices, so both the time limit and Ctrl-C
    # act at once (the thread is a daemon: it ends with the process).
    thread = threading.Thread(target=init, name="nvpipe-ray-connect", daemon=True)
    deadline = time.monotonic() + timeout
    with _stderr_held() as held:
        thread.start()
        try:
            while thread.is_alive() and time.monotonic() < deadline:
                thread.join(0.1)
        except KeyboardInterrupt:
            ABANDONED.set()
            raise
        connected = not thread.is_alive() and "error" not in outcome
        held.replay = connected  # what Ray said on the way in, once it answered
    if thread.is_alive():
        ABANDONED.set()
        raise NvpipeError(f"cannot reach the Ray cluster at {address!r}: no answer within "
                          f"{timeout:g} s ({CLUSTER_TIMEOUT_ENV} sets how long to wait)")
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            raise error
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NvpipeError(f"cannot reach the Ray cluster at {address!r}: {first}") from None
    return ray, True


class _stderr_held:
    """File descriptor 2 sent to a temporary file while Ray connects: its C++ core writes
    each retry there directly ("Failed to connect to GCS ... within 5 seconds"), past
    Python's logging and RAY_BACKEND_LOG_LEVEL. Written back on leaving when ``replay``."""

    replay = False

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if self.replay:
            self._file.seek(0)
            sys.stderr.write(self._file.read().decode(errors="replace"))
        self._file.close()


# Set when a connection attempt was left running (timed out, or Ctrl-C): Ray's C++ core
# may then abort (SIGABRT) while the interpreter tears down, so the CLI ends the process
# with os._exit once its message is out (``nvpipe.app.cli.main``).
ABANDONED = threading.Event()

# How long --cluster waits for the cluster to answer (seconds; the environment variable
# sets it): Ray itself retries an unreachable address for minutes.
CLUSTER_TIMEOUT_ENV = "NVPIPE_CLUSTER_TIMEOUT"
DEFAULT_CLUSTER_TIMEOUT = 15.0


def cluster_timeout() -> float:
    text = os.environ.get(CLUSTER_TIMEOUT_ENV)
    if not text:
        return DEFAULT_CLUSTER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise NvpipeError(f"{CLUSTER_TIMEOUT_ENV} must be a number of seconds above 0, "
                          f"got {text!r}")
    return value


def _probe(address: str, timeout: float) -> None:
    """One TCP connection to ``HOST:PORT`` (``ray://`` too), so a refused or unreachable
    address fails in one line at once, before Ray's own retries."""
    import socket

    text = address.split("://", 1)[-1].rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise NvpipeError(f"--cluster {address!r}: give HOST:PORT (HOST:6379, "
                          f"ray://HOST:10001) or 'auto'")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout, 5.0)):
            pass
    except OSError as error:
        reason = error.strerror or ("timed out" if isinstance(error, TimeoutError)
                                    else type(error).__name__)
        raise NvpipeError(f"cannot reach the Ray cluster at {address!r} ({reason})") from None


def cluster_device(ray, device: str) -> str:
    """``auto`` on a cluster: ``cuda`` when the cluster has GPUs, else ``cpu``."""
    if device != "auto":
        return device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


# What the submitting process's environment says that workers elsewhere must see too.
FORWARDED_ENV = ("NVPIPE_WEIGHTS", "NVPIPE_OFFLINE")


def _run_on_ray(ray, clips, summary, jobs, show, log) -> None:
    resources = clip_resources(clips[0].job.device)
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    if env:
        resources["runtime_env"] = {"env_vars": env}
    task = ray.remote(max_retries=0)(_ray_convert).options(**resources)
    display = _Display(len(clips), show, log)
    # In flight at once: --jobs when given above 1, else every clip (Ray queues them on
    # the cluster's resources).
    limit = jobs if jobs > 1 else len(clips)
    waiting = [(clip, 1) for clip in clips]
    running: dict = {}  # ObjectRef -> (clip, attempt)
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                clip, attempt = waiting.pop(0)
                running[task.remote(clip, _kill_after(clip, attempt))] = (clip, attempt)
            ready, _ = ray.wait(list(running), num_returns=1)
            clip, attempt = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayTaskError as error:  # an exception convert_clip let out
                result = ClipResult(clip.job.input, FAILED, str(error).strip().splitlines()[0])
            except ray.exceptions.RayError as error:  # the worker or its node died
                if not _cluster_alive(ray):
                    _cluster_lost(type(error).__name__, [clip] + [c for c, _ in running.values()],
                                  [c for c, _ in waiting], summary, log)
                    display.finish()
                    return
                result = ClipResult(clip.job.input, DIED, type(error).__name__)
            if _settle(clip, attempt, result, display, summary, log):
                waiting.insert(0, (clip, attempt + 1))
    except KeyboardInterrupt as interrupt:
        for ref in running:
            ray.cancel(ref)  # a KeyboardInterrupt in the task: it keeps what it did
        ray.wait(list(running), num_returns=len(running), timeout=60)
        for clip, _ in running.values():  # what each clip kept, as --jobs N says it
            print(f"nvpipe: {clip.name}: {_kept_on_disk(clip)}", file=log)
        from nvpipe.errors import Terminated

        raise BatchInterrupted(isinstance(interrupt, Terminated)) from None
    display.finish()


# How long the liveness check of a cluster that failed a task may take (seconds).
CLUSTER_PROBE_SECONDS = 10.0


def _cluster_alive(ray) -> bool:
    """Whether the cluster still has a live node (``ray.nodes()``, on a thread: with its
    head gone it retries for minutes)."""
    answer: dict = {}

    def probe() -> None:
        try:
            answer["alive"] = any(node.get("Alive") for node in ray.nodes())
        except Exception:  # noqa: BLE001 - any failure to answer is a lost cluster
            answer["alive"] = False

    thread = threading.Thread(target=probe, name="nvpipe-ray-probe", daemon=True)
    thread.start()
    thread.join(CLUSTER_PROBE_SECONDS)
    if thread.is_alive():
        ABANDONED.set()
    return answer.get("alive", False)


def _cluster_lost(why: str, running: list, waiting: list, summary, log) -> None:
    """The cluster died under the batch: the clips it was converting failed (their hidden
    partial files and locks removed now, not at the next run), the rest never started."""
    from nvpipe.sinks.outputs import clean_leftovers

    print(f"nvpipe: the Ray cluster was lost ({why}): {len(running)} clip"
          f"{'s' * (len(running) != 1)} stopped, {len(waiting)} not started", file=log)
    for clip in running:
        for spec in clip.job.outputs:
            clean_leftovers(str(spec.path))
        summary.failed.append((clip.job.input, f"the Ray cluster was lost while converting "
                                               f"it ({why}); nothing kept"))
    for clip in waiting:
        summary.not_started.append((clip.job.input, "the Ray cluster was lost before it "
                                                    "started"))


def _kept_on_disk(clip: Clip) -> str:
    """What an interrupted clip left under its outputs' names (a task cancelled on a
    cluster answers nothing, so the files tell): its partial outputs, or nothing."""
    from nvpipe.app.manifest import COMPLETE, manifests_for

    settings = job_settings(clip.job)
    kept = [path for path, manifest in manifests_for(_recorded_outputs(clip.job)).items()
            if os.path.exists(path) and manifest.state(path, clip.job.input, settings) != COMPLETE]
    if not kept:
        return "interrupted; nothing kept"
    return "interrupted; kept " + ", ".join(f"{path} (incomplete)" for path in kept)


__all__ = ["Clip", "ClipResult", "run_batch",
           "convert_clip", "plan_batch", "schedule_batch", "connect", "BatchInterrupted",
           "MAX_ATTEMPTS", "KILL_HOOK"]


def run_batch(source: str, out: str, template: Job,
              progress_factory: Optional[Callable[[str], Callable]] = None,
              log=None, *, jobs: int = 1, cluster: Optional[str] = None,
              verbose: bool = False) -> BatchSummary:
    """Convert every clip ``source`` names into ``out``; a failing clip is reported and the
    rest go on. Resume: a clip is skipped only when nvpipe's own record says each of its
    outputs is a complete conversion of that input with these settings (``nvpipe.app.manifest``);
    incomplete ones are redone, saying why. ``jobs`` 1 (the default) converts one clip
    after another in this process, the network loaded once; ``jobs`` > 1 runs that many
    clips at once, each in its own process; ``cluster`` (a Ray address or ``auto``) runs
    each clip as a Ray task. See this module's docstring."""
    summary = BatchSummary()
    schedule_batch(source, out, template, summary, jobs=jobs, cluster=cluster,
                   progress_factory=progress_factory, log=log, verbose=verbose)
    return summary
