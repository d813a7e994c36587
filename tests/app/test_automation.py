"""What scripts read from nvpipe run: exit codes, the --json summary, the --progress
stream, and --help's examples and codes."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import CLIP_FRAMES, count_frames


def _nvpipe(*args, cwd=None, env=None, timeout=300):
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "nvpipe", *map(str, args)], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=timeout)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_json_summary_on_standard_output(small_clip, weights_env, tmp_path):
    out = tmp_path / "out.mp4"
    done = _nvpipe("run", small_clip, out, "--alpha", tmp_path / "pha.mp4", "--json", "-q")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # nothing else on standard output
    assert summary["status"] == "ok" and summary["exit_code"] == 0
    assert summary["frames"] == CLIP_FRAMES and summary["fps"] > 0
    assert [o["path"] for o in summary["outputs"]] == [str(out), str(tmp_path / "pha.mp4")]
    assert all(o["outcome"] == "written" and o["frames"] == CLIP_FRAMES
               for o in summary["outputs"])
    decisions = summary["decisions"]
    assert decisions["ratio"] == pytest.approx(256 / 256 * 1.0) and decisions["ratio_auto"]
    assert decisions["device"] == "cpu" and decisions["pacing"] == "file"
    assert decisions["kinds"] == {str(out): "composite", str(tmp_path / "pha.mp4"): "alpha"}
    assert set(decisions["encoders"]) == {str(out), str(tmp_path / "pha.mp4")}
    assert summary["dropped"] == 0 and summary["latency"] is None
    assert isinstance(summary["notes"], list)


def test_json_summary_of_a_failure(tmp_path):
    done = _nvpipe("run", tmp_path / "missing.mp4", tmp_path / "out.mp4", "--json")
    assert done.returncode == 3
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed" and summary["exit_code"] == 3
    assert "input not found" in summary["error"]


def test_progress_stream_as_ffmpeg(small_clip, weights_env, tmp_path):
    progress = tmp_path / "progress.txt"
    done = _nvpipe("run", small_clip, tmp_path / "out.mp4", "--progress", progress,
                   "--ratio", "0.5", "-q")
    assert done.returncode == 0, done.stderr
    blocks, block = [], {}
    for line in progress.read_text().splitlines():
        key, _, value = line.partition("=")
        block[key] = value
        if key == "progress":
            blocks.append(block)
            block = {}
    assert block == {} and blocks, progress.read_text()
    assert [b["progress"] for b in blocks] == ["continue"] * (len(blocks) - 1) + ["end"]
    frames = [int(b["frame"]) for b in blocks]
    assert frames == sorted(frames) and frames[-1] == CLIP_FRAMES
    last = blocks[-1]
    assert last["total_frames"] == str(CLIP_FRAMES) and last["percent"] == "100.0"
    assert last["input"] == small_clip.name and float(last["elapsed_s"]) > 0
    # --progress - writes the same to standard output.
    to_stdout = _nvpipe("run", small_clip, tmp_path / "again.mp4", "--progress", "-",
                        "--ratio", "0.5", "-q")
    assert to_stdout.returncode == 0 and to_stdout.stdout.rstrip().endswith("progress=end")


@pytest.mark.parametrize("args, code, message", [
    (("--fps", "3"), 2, "--fps is for picture-sequence inputs"),
    (("--json", "--progress", "-"), 2, "both write to standard output"),
    (("--watch-idle", "3"), 2, "go with --watch"),
    (("--device", "cuda:x"), 2, "invalid choice"),
])
def test_usage_errors_exit_2(small_clip, tmp_path, args, code, message):
    done = _nvpipe("run", small_clip, tmp_path / "out.mp4", *args)
    assert done.returncode == code and message in _one_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_output_exists_or_locked_exits_4(small_clip, weights_env, tmp_path):
    from nvpipe.sinks.outputs import TargetLock

    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"mine")
    done = _nvpipe("run", small_clip, existing)
    assert done.returncode == 4 and "output exists" in _one_line(done.stderr)
    assert existing.read_bytes() == b"mine"
    lock = TargetLock(str(tmp_path), "locked.mp4", str(tmp_path / "locked.mp4"))
    lock.acquire()  # another run writing it
    try:
        done = _nvpipe("run", small_clip, tmp_path / "locked.mp4")
        assert done.returncode == 4
        assert "being written by another nvpipe run" in _one_line(done.stderr)
        assert f"pid {os.getpid()}" in done.stderr
    finally:
        lock.release()
    assert not (tmp_path / ".locked.mp4.nvpipe-lock").exists()


def test_bad_input_exits_3(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    done = _nvpipe("run", tmp_path / "notes.mp4", tmp_path / "out.mp4")
    assert done.returncode == 3 and "not a readable video file" in _one_line(done.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: cuda runs")
def test_no_gpu_exits_5(small_clip, weights_env, tmp_path):
    for device in ("cuda", "cuda:1"):
        done = _nvpipe("run", small_clip, tmp_path / "out.mp4", "--device", device)
        assert done.returncode == 5, done.stderr
        assert "--device cuda cannot run" in _one_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_help_ends_with_examples_exit_codes_and_the_readme():
    for argv in (("--help",), ("run", "--help")):
        done = _nvpipe(*argv)
        assert done.returncode == 0
        tail = done.stdout[done.stdout.index("examples:"):]
        assert "nvpipe run photo.jpg cut.png" in tail and "--watch" in tail
        for code in ("0", "1", "2", "3", "4", "5", "130", "143"):
            assert f"\n  {code} " in tail, code
        assert "README" in tail.splitlines()[-2] + tail.splitlines()[-1]


def test_device_strings():
    from nvpipe.app.devices import DEVICE_CHOICES, parse_device_option
    from nvpipe.job import Job, device_type, gpu_index, parse_device

    assert tuple(DEVICE_CHOICES) == ("auto", "cpu", "cuda")
    assert "cuda:3" in DEVICE_CHOICES and "cuda:" not in DEVICE_CHOICES and "gpu" not in DEVICE_CHOICES
    assert parse_device_option("CUDA:1") == "cuda:1"
    assert parse_device("cuda:2") == ("cuda", 2) and parse_device("cpu") == ("cpu", None)
    assert device_type("cuda:7") == "cuda" and gpu_index("cuda:7") == 7
    assert Job(input="in.mp4", device="cuda:1").device == "cuda:1"
    with pytest.raises(ValueError, match="cuda:N"):
        Job(input="in.mp4", device="cuda:one")


def test_json_of_a_batch(small_clip, weights_env, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.mp4").write_bytes(small_clip.read_bytes())
    done = _nvpipe("run", clips, tmp_path / "out", "--json", "-q", "--ratio", "0.5")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["batch"]["converted"] == [str(clips / "a.mp4")]
    assert summary["outputs"] == [str(tmp_path / "out" / "a.mp4")]
    assert summary["frames"] == CLIP_FRAMES == count_frames(tmp_path / "out" / "a.mp4")


def test_locks_are_portable(tmp_path):
    """Output and batch-record locks go through filelock (flock on POSIX, LockFileEx on
    Windows): no module imports fcntl, and a filelock.FileLock contends with the output lock."""
    import ast
    from pathlib import Path

    import filelock

    from nvpipe.app.manifest import BatchManifest
    from nvpipe.sinks.outputs import TargetLock

    root = Path(__file__).resolve().parents[2] / "nvpipe"
    users = [str(path) for path in root.rglob("*.py") if "kernels" not in path.parts
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, (ast.Import, ast.ImportFrom))
             and "fcntl" in ([a.name for a in node.names] if isinstance(node, ast.Import)
                             else [node.module])]
    assert users == []
    lock = TargetLock(str(tmp_path), "out.mp4", str(tmp_path / "out.mp4"))
    lock.acquire()
    try:
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(lock.path, timeout=0).acquire()
    finally:
        lock.release()
    manifest = BatchManifest(str(tmp_path))
    manifest.mark_started([str(tmp_path / "out.mp4")], str(tmp_path / "in.mp4"), "s")
    assert json.loads((tmp_path / ".nvpipe-batch.json").read_text())["outputs"]["out.mp4"][
        "state"] == "started"
