"""Batches over local worker processes (``--jobs 2``, ``nvpipe.app.schedule``) on real clips:
outputs identical to a sequential run, a broken clip reported while the rest convert, a
worker killed mid-clip retried with nothing partial left, and resume after an interrupted
batch redoing exactly the clips the record does not count as complete.

The helpers here are shared with tests/app/test_cluster.py (the same cases on Ray).
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

import conftest

from nvpipe.app.batch import job_from_options
from nvpipe.app.schedule import run_batch
from nvpipe.app.schedule import KILL_HOOK, MAX_ATTEMPTS
from nvpipe.platform.capacity import capacity, clip_resources

CLIP_FRAMES = 6  # per clip: tiny, the machine has 2 shared cores
RATIO = 0.5
BOOKKEEPING = [".nvpipe-batch.json", ".nvpipe-batch.lock"]


def make_clip(source: Path, path: Path, start: int, frames: int = CLIP_FRAMES,
              size=(144, 256)) -> Path:
    """``frames`` frames of real footage from frame ``start`` on, at ``size`` (W, H)."""
    return conftest.make_clip(source, path, frames=frames, size=size, start=start)


def make_batch(shared: Path, folder: Path, names=("a", "b", "c"), broken=True) -> Path:
    """A folder of short real clips (each from another part of the footage), and one broken
    file when ``broken``."""
    folder.mkdir(parents=True, exist_ok=True)
    source = shared / "footage" / "person_fullbody_360x640.mp4"
    if not source.exists():
        pytest.skip(f"{source} is absent (../shared holds the footage)")
    for number, name in enumerate(names):
        make_clip(source, folder / f"{name}.mp4", start=number * 12)
    if broken:
        (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return folder


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def visible(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.startswith("."))


def hidden(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def record(folder) -> dict:
    return json.loads((Path(folder) / ".nvpipe-batch.json").read_text())["outputs"]


def assert_same_frames(out: Path, reference: Path, names) -> None:
    for name in names:
        got, want = decoded(out / name), decoded(reference / name)
        assert len(got) == len(want) == CLIP_FRAMES, name
        assert all(np.array_equal(g, w) for g, w in zip(got, want)), f"{name} differs"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """(clips folder: a, b, c and broken.mp4; template job; a sequential run's output folder)."""
    from conftest import SHARED

    weights = SHARED / "weights" / "rvm_mobilenetv3_fp32.onnx"
    if not weights.exists():
        pytest.skip(f"{weights} is absent (../shared holds the weights)")
    root = tmp_path_factory.mktemp("batch")
    clips = make_batch(SHARED, root / "clips")
    template = job_from_options(str(clips), "{stem}.mp4", ratio=RATIO, weights=str(weights))
    reference = root / "sequential"
    summary = run_batch(str(clips), str(reference), template, log=io.StringIO())
    assert len(summary.converted) == 3 and len(summary.failed) == 1
    return clips, template, reference


def check_matches_sequential_and_reports_broken(clips, template, reference, out, **where):
    """The shared case: the same batch elsewhere converts a, b, c to the sequential run's
    frames, reports broken.mp4, leaves nothing hidden but the record; a re-run converts
    nothing."""
    log = io.StringIO()
    summary = run_batch(str(clips), str(out), template, log=log, **where)
    assert sorted(map(os.path.basename, summary.converted)) == ["a.mp4", "b.mp4", "c.mp4"]
    assert [os.path.basename(path) for path, _ in summary.failed] == ["broken.mp4"]
    assert "nvpipe: failed: " in log.getvalue() and "broken.mp4" in log.getvalue()
    assert visible(out) == ["a.mp4", "b.mp4", "c.mp4"]
    assert hidden(out) == BOOKKEEPING
    assert_same_frames(out, reference, ["a.mp4", "b.mp4", "c.mp4"])
    again = run_batch(str(clips), str(out), template, log=io.StringIO(), **where)
    assert again.converted == [] and len(again.skipped) == 3 and len(again.failed) == 1


def check_killed_worker_is_retried(clips, template, reference, out, monkeypatch, **where):
    """b's worker SIGKILLs itself after 2 frames on its first attempt: b is retried (the
    retry's plan finds the record 'started' and redoes it) and completes; only the record
    is left hidden (the dead worker's staging file and lock were removed)."""
    folder = clips.parent / "two"
    folder.mkdir(exist_ok=True)
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(clips / name, folder / name)
    monkeypatch.setenv(KILL_HOOK, "b:2")
    log = io.StringIO()
    summary = run_batch(str(folder), str(out), template, log=log, **where)
    assert sorted(map(os.path.basename, summary.converted)) == ["a.mp4", "b.mp4"], log.getvalue()
    assert summary.failed == []
    assert "b.mp4: the worker died" in log.getvalue() and f"retry 1 of {MAX_ATTEMPTS - 1}" in log.getvalue()
    assert "b.mp4: redo b.mp4: the last run did not finish it" in log.getvalue()
    assert visible(out) == ["a.mp4", "b.mp4"]
    assert hidden(out) == BOOKKEEPING
    assert_same_frames(out, reference, ["a.mp4", "b.mp4"])
    assert {entry["state"] for entry in record(out).values()} == {"complete"}


def test_jobs_2_matches_sequential_and_reports_a_broken_clip(batch, tmp_path):
    check_matches_sequential_and_reports_broken(*batch, tmp_path / "out", jobs=2)


@pytest.mark.slow
def test_jobs_2_retries_a_killed_worker(batch, tmp_path, monkeypatch):
    check_killed_worker_is_retried(*batch, tmp_path / "out", monkeypatch, jobs=2)


@pytest.mark.slow
def test_jobs_2_resume_after_ctrl_c_redoes_only_the_incomplete(batch, tmp_path, footage):
    """The real command: Ctrl-C while a 50-frame clip converts; the batch stops with 130,
    the clip's frames done kept as a partial file that the record calls 'started'; the
    re-run redoes exactly the clips not recorded complete and leaves the others alone."""
    clips, template, _ = batch
    folder, out = tmp_path / "clips", tmp_path / "out"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(clips / name, folder / name)
    # Full size (360x640), so that on a quiet machine too the clip is still converting
    # when the signal lands (at 144x256 it can finish within the wait below).
    make_clip(footage("person_fullbody_360x640.mp4"), folder / "long.mp4", start=0, frames=50,
              size=(360, 640))
    command = [sys.executable, "-m", "nvpipe.app.cli", "run", str(folder), str(out), "--jobs", "2",
               "--ratio", str(RATIO), "--weights", template.weights, "--quiet"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out.exists() and (out / ".nvpipe-batch.json").exists()
               and record(out).get("long.mp4", {}).get("state") == "started"
               and any(p.name.startswith(".long.") and ".partial" in p.name
                       for p in out.iterdir())):
        assert time.time() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    time.sleep(1.5)  # into the clip (x264's look-ahead holds the first packets back)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "long.mp4: interrupted after" in stderr and "Traceback" not in stderr, stderr
    states = {name: entry["state"] for name, entry in record(out).items()}
    assert states["long.mp4"] == "started"
    if (out / "long.mp4").exists():  # the frames done, kept playable
        assert 0 < len(decoded(out / "long.mp4")) < 50
    incomplete = sorted(name for name in ("a.mp4", "b.mp4", "long.mp4")
                        if states.get(name) != "complete")
    complete = {name: os.path.getmtime(out / name) for name in ("a.mp4", "b.mp4")
                if name not in incomplete}

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in incomplete:
        if states.get(name) == "started":
            assert f"redo {name}" in done.stderr
    assert f"{len(incomplete)} converted, {3 - len(incomplete)} skipped, 0 failed" in done.stderr
    assert {name: os.path.getmtime(out / name) for name in complete} == complete
    assert len(decoded(out / "long.mp4")) == 50
    assert hidden(out) == BOOKKEEPING


def test_clip_resources_share_a_gpu_by_nvdec_engines(monkeypatch):
    """7 NVDEC engines (H100/H200): 1/7 of a GPU a clip, rounded down to Ray's 1e-4 steps so
    that 7 fit; CPU clips take one core."""
    monkeypatch.setenv("NVPIPE_CLIPS_PER_GPU", "7")
    share = clip_resources("cuda")["num_gpus"]
    assert share == 0.1428 and 7 * share <= 1 < 8 * share
    assert clip_resources("cpu") == {"num_cpus": 1}


def test_capacity_says_how_many_clips_and_why():
    """Without a GPU: one clip per core, and the reason names the cores."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU-only case (this machine has a GPU)")
    found = capacity()
    assert found.clips == os.cpu_count() and found.gpus == 0
    assert f"{os.cpu_count()} cores" in found.reason and "no CUDA GPU" in found.reason
