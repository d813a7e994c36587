"""``--device auto`` never leaves a user worse off than ``--device cpu`` (issue 17).

``run_guarded(job)`` runs ``nvpipe.engine.runner.run``. When the GPU pipeline fails before
its first frame reaches an encoder (the CUDA checks, NVDEC opening, an encoder starting,
kernel compilation and graph capture in the warm-up: all before any thread starts) and
``job.cpu_fallback`` is set (``--device auto`` chose cuda), the job runs again on the CPU;
the result's first note says why, in one line. The failed attempt left nothing behind: with
no frame written, the output policy (``nvpipe.sinks.outputs``) discarded every staged file.
A failure after a frame was handed on follows that policy as it is (no rerun). With
``--device cuda`` (no fallback) an error that is not already one of nvpipe's one-line
errors becomes a ``DeviceError`` of one line.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

from nvpipe.errors import DeviceError, NvpipeError
from nvpipe.job import Job, device_type


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line}" if not isinstance(error, NvpipeError) else line


def run_guarded(job: Job, *, run: Optional[Callable[..., object]] = None,
                progress: Optional[Callable] = None, **kwargs):
    """``run(job, progress=..., **kwargs)``, falling back to the CPU as the module says.

    ``run`` defaults to ``nvpipe.engine.runner.run`` (tests give a stand-in). ``kwargs``
    (``network``, ``stop``, ``verbose``...) go to both attempts, except ``network``: a
    network loaded for the GPU is not the CPU's, so the CPU attempt loads its own.
    """
    if run is None:
        from nvpipe.engine.runner import run
    if device_type(job.device) != "cuda":
        return run(job, progress=progress, **kwargs)
    frames = [0]

    def counted(done, total, elapsed):
        frames[0] = done
        if progress is not None:
            progress(done, total, elapsed)

    try:
        return run(job, progress=counted, **kwargs)
    except Exception as error:  # noqa: BLE001 - KeyboardInterrupt (Interrupted) passes
        if frames[0] > 0:  # frames went out: the output policy has decided already
            raise
        if not job.cpu_fallback:
            if isinstance(error, NvpipeError):
                raise
            raise DeviceError(f"the GPU pipeline failed before its first frame "
                              f"({first_line(error)}); --device cpu runs on the CPU") from error
        why = first_line(error)
    cpu_job = replace(job, device="cpu", cpu_fallback=False)
    kwargs.pop("network", None)
    result = run(cpu_job, progress=progress, **kwargs)
    result.notes.insert(0, f"ran on the CPU: the GPU pipeline failed before its first frame "
                           f"({why})")
    result.device = "cpu"
    return result


__all__ = ["run_guarded"]
