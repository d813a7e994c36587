"""``--device auto`` is never worse than ``--device cpu`` (issue 17): a GPU pipeline that fails
before its first frame reruns on the CPU with a one-line note; ``--device cuda`` fails with
one line; nothing partial is left; a failure after frames went out is not rerun.

Each failure point of the GPU path is faked on this CPU where the runner reaches it: the
CUDA checks (real here: torch is a CPU build), NVDEC opening the input, an encoder
starting, and the warm-up's graph capture and kernel compilation (``_build_pipeline``).
"""

import pytest
import torch

from conftest import CLIP_FRAMES, count_frames
from nvpipe.engine import runner
from nvpipe.engine.fallback import run_guarded
from nvpipe.errors import DeviceError, InputError, OutputError
from nvpipe.job import Job, OutputSpec


class CompilationError(Exception):
    """Triton's (triton.compiler.errors.CompilationError) as it reads."""


def _fake_failure(point, monkeypatch):
    """Make the GPU path fail at ``point``; returns the list of calls that failed."""
    import nvpipe.platform.gpu as gpu
    import nvpipe.sinks as sinks
    import nvpipe.sources as sources

    failed = []
    if point == "cuda not ready":  # the real check: this CPU has no CUDA
        if torch.cuda.is_available():
            pytest.skip("checks a machine without CUDA")
        real_check = gpu.check_cuda_ready

        def check(*args, **kwargs):
            failed.append(point)
            return real_check(*args, **kwargs)
        monkeypatch.setattr(gpu, "check_cuda_ready", check)
        return failed
    monkeypatch.setattr(gpu, "check_cuda_ready", lambda *a, **k: None)
    # This CPU build of torch has no CUDA device to make current: GPU 0 stands in.
    import contextlib

    monkeypatch.setattr(runner, "gpu_index", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    real_open_source = sources.open_source

    def open_source(path, device="cpu", **kwargs):
        if str(device).startswith("cuda") and point == "nvdec open":
            failed.append(point)
            raise RuntimeError("cuvidCreateDecoder failed: CUDA_ERROR_OUT_OF_MEMORY\nmore")
        return real_open_source(path, device="cpu", **kwargs)
    monkeypatch.setattr(sources, "open_source", open_source)
    if point == "encoder start":
        real_open_sink = sinks.open_sink

        def open_sink(spec, info, *, shares_cores_with_network=True, **kwargs):
            if not shares_cores_with_network:  # the GPU path's sinks
                failed.append(point)
                raise OutputError(f"NVENC could not start for {spec.path}: unsupported device")
            return real_open_sink(spec, info, shares_cores_with_network=True, **kwargs)
        monkeypatch.setattr(sinks, "open_sink", open_sink)
    if point in ("graph capture", "kernel compile"):
        real_build = runner._build_pipeline

        def build(job, info, sink_info, outputs, network, device, *args, **kwargs):
            if device.type == "cuda":
                failed.append(point)
                if point == "graph capture":
                    raise RuntimeError("CUDA error: operation not permitted when stream is "
                                       "capturing\nCUDA kernel errors might be asynchronously reported")
                raise CompilationError("at 12:4: tl.arange's range must be a power of 2\n  ^")
            return real_build(job, info, sink_info, outputs, network, device, *args, **kwargs)
        monkeypatch.setattr(runner, "_build_pipeline", build)
    return failed


POINTS = ["cuda not ready", "nvdec open", "encoder start", "graph capture", "kernel compile"]


@pytest.mark.parametrize("point", POINTS)
def test_auto_reruns_on_the_cpu_when_the_gpu_fails_before_its_first_frame(
        point, small_clip, weights_env, tmp_path, monkeypatch, one_thread):
    failed = _fake_failure(point, monkeypatch)
    target = tmp_path / "out.mp4"
    job = Job(input=str(small_clip), outputs=[OutputSpec(str(target))], device="cuda",
              cpu_fallback=True, ratio=0.5)
    result = run_guarded(job)
    assert failed == [point]  # the GPU path was tried, and failed there
    assert result.device == "cpu" and result.frames == CLIP_FRAMES
    assert count_frames(target) == CLIP_FRAMES
    note = result.notes[0]
    assert note.startswith("ran on the CPU: the GPU pipeline failed before its first frame")
    assert "\n" not in note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # nothing partial, no lock


@pytest.mark.parametrize("point", ["graph capture", "nvdec open"])
def test_device_cuda_fails_with_one_line_and_leaves_nothing(point, small_clip, tmp_path,
                                                           monkeypatch):
    failed = _fake_failure(point, monkeypatch)
    target = tmp_path / "out.mp4"
    job = Job(input=str(small_clip), outputs=[OutputSpec(str(target))], device="cuda", ratio=0.5)
    with pytest.raises(DeviceError) as caught:
        run_guarded(job)
    message = str(caught.value)
    assert failed == [point] and "\n" not in message
    assert message.startswith("the GPU pipeline failed before its first frame (RuntimeError: ")
    assert list(tmp_path.iterdir()) == []


def test_nvpipe_errors_under_device_cuda_keep_their_own_line(tmp_path):
    def run(job, **kwargs):
        raise InputError("input not found: x.mp4")

    job = Job(input="x.mp4", outputs=[OutputSpec(str(tmp_path / "o.mp4"))], device="cuda")
    with pytest.raises(InputError, match="^input not found: x.mp4$"):
        run_guarded(job, run=run)


def test_a_failure_after_frames_went_out_is_not_rerun(tmp_path):
    """Frames were handed to the encoders: the output policy decides (no CPU rerun)."""
    calls = []

    def run(job, progress=None, **kwargs):
        calls.append(job.device)
        progress(1, 8, 0.1)
        raise OutputError("disk full; kept out.mp4 (1 frames, incomplete)")

    job = Job(input="in.mp4", outputs=[OutputSpec(str(tmp_path / "o.mp4"))], device="cuda",
              cpu_fallback=True)
    with pytest.raises(OutputError, match="disk full"):
        run_guarded(job, run=run)
    assert calls == ["cuda"]


def test_interrupts_are_not_rerun(tmp_path):
    calls = []

    def run(job, **kwargs):
        calls.append(job.device)
        raise KeyboardInterrupt

    job = Job(input="in.mp4", outputs=[OutputSpec(str(tmp_path / "o.mp4"))], device="cuda",
              cpu_fallback=True)
    with pytest.raises(KeyboardInterrupt):
        run_guarded(job, run=run)
    assert calls == ["cuda"]


def test_cli_device_auto_says_why_it_ran_on_the_cpu(small_clip, weights_env, tmp_path,
                                                    monkeypatch, capsys, one_thread):
    """`nvpipe run --device auto` where auto picks cuda and its graph capture fails."""
    import nvpipe.platform.gpu as gpu
    from nvpipe.app.cli import main

    monkeypatch.setattr(gpu, "resolve_device", lambda device: ("cuda", None))
    failed = _fake_failure("graph capture", monkeypatch)
    target = tmp_path / "out.mp4"
    assert main(["run", str(small_clip), str(target), "--device", "auto", "--ratio", "0.5"]) == 0
    err = capsys.readouterr().err
    assert failed == ["graph capture"] and count_frames(target) == CLIP_FRAMES
    notes = [line for line in err.splitlines() if "ran on the CPU" in line]
    assert len(notes) == 1 and notes[0].startswith("nvpipe: note: ran on the CPU: the GPU pipeline")
    assert "operation not permitted when stream is capturing" in notes[0]
    assert "fps on cpu" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
