"""Batches on Ray (``--cluster``, ``nvpipe.app.schedule``): a local Ray started here on
127.0.0.1 with 2 CPUs, converting real clips: outputs identical to a sequential run, a
broken clip reported while the rest convert, a worker killed mid-clip retried with nothing
partial left, and a clip whose worker always dies failed after the bounded retries, then
resumed alone by the next run."""

import io
import os
import shutil

import pytest

from nvpipe.app.schedule import run_batch
from nvpipe.app.schedule import KILL_HOOK, MAX_ATTEMPTS

from test_schedule import (BOOKKEEPING, assert_same_frames, batch,  # noqa: F401 - fixture
                           check_killed_worker_is_retried,
                           check_matches_sequential_and_reports_broken, hidden, record, visible)

# Ray reads this when it is imported: a single-machine cluster then binds to loopback
# (on Linux it otherwise takes the routable address). Put back once read.
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_saved = os.environ.get(_SINGLE_MACHINE)
os.environ[_SINGLE_MACHINE] = "0"
try:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[cluster]')")
finally:
    if _saved is None:
        os.environ.pop(_SINGLE_MACHINE, None)
    else:
        os.environ[_SINGLE_MACHINE] = _saved


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray of this machine only: loopback, 2 CPUs, no dashboard; shut down after the
    module. Its workers inherit this environment: a cache of the test's own, offline."""
    names = (_SINGLE_MACHINE, "NVPIPE_CACHE", "NVPIPE_OFFLINE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({_SINGLE_MACHINE: "0", "NVPIPE_OFFLINE": "1",
                       "NVPIPE_CACHE": str(tmp_path_factory.mktemp("ray-cache"))})
    import logging

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
        yield "auto"  # nvpipe joins the Ray this process already runs
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_ray_matches_sequential_and_reports_a_broken_clip(cluster, batch, tmp_path):
    check_matches_sequential_and_reports_broken(*batch, tmp_path / "out", cluster=cluster)
    assert ray.is_initialized()  # nvpipe left the Ray it did not start running


def test_ray_retries_a_killed_worker(cluster, batch, tmp_path, monkeypatch):
    check_killed_worker_is_retried(*batch, tmp_path / "out", monkeypatch, cluster=cluster)


def test_ray_bounded_retries_then_resume_redoes_only_that_clip(cluster, batch, tmp_path,
                                                               monkeypatch):
    """b's worker dies on every attempt: b fails after MAX_ATTEMPTS with nothing under its
    name (only the dead workers' hidden staging and lock), a converts; the next run, with
    workers that live, redoes b alone."""
    clips, template, reference = batch
    folder, out = tmp_path / "clips", tmp_path / "out"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(clips / name, folder / name)
    monkeypatch.setenv(KILL_HOOK, "b:2:every")
    log = io.StringIO()
    summary = run_batch(str(folder), str(out), template, log=log, cluster=cluster)
    assert list(map(os.path.basename, summary.converted)) == ["a.mp4"], log.getvalue()
    (failed, reason), = summary.failed
    assert os.path.basename(failed) == "b.mp4"
    assert f"its worker died {MAX_ATTEMPTS} times" in reason
    assert log.getvalue().count("b.mp4: the worker died") == MAX_ATTEMPTS - 1
    assert visible(out) == ["a.mp4"]
    leftovers = [name for name in hidden(out) if name not in BOOKKEEPING]
    assert leftovers and all(name.startswith(".b.") for name in leftovers), leftovers
    assert record(out)["b.mp4"]["state"] == "started"
    a_mtime = os.path.getmtime(out / "a.mp4")

    monkeypatch.delenv(KILL_HOOK)
    log = io.StringIO()
    summary = run_batch(str(folder), str(out), template, log=log, cluster=cluster)
    assert list(map(os.path.basename, summary.converted)) == ["b.mp4"], log.getvalue()
    assert [(os.path.basename(path), why) for path, why in summary.skipped] == [("a.mp4", "done")]
    assert "b.mp4: redo b.mp4: the last run did not finish it" in log.getvalue()
    assert os.path.getmtime(out / "a.mp4") == a_mtime
    assert hidden(out) == BOOKKEEPING
    assert_same_frames(out, reference, ["a.mp4", "b.mp4"])
