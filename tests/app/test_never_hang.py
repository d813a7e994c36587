"""Issue 22: never hang, never say "internal error". Each case of the issue: the exit code,
the one line printed, and the files left."""

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from nvpipe.app.automation import EXIT_INPUT
from nvpipe.app.cli import main

from conftest import SHARED, count_frames, make_clip, mount_tmpfs


def _cli(*args, timeout=120, **popen):
    done = subprocess.run([sys.executable, "-m", "nvpipe.app.cli", *map(str, args)],
                          capture_output=True, timeout=timeout, **popen)
    return done.returncode, done.stderr.decode(errors="replace")


def _line(stderr: str) -> str:
    """The one line printed: no traceback, no Ray chatter, nothing else."""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def _main_line(capsys, *args) -> tuple[int, str]:
    """``main`` in this process (no interpreter start-up): its exit code and one line."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    return code, _line(capsys.readouterr().err)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- broken: hangs ---------------------------------------------------------------------------
def test_fifo_without_writer_ends_at_timeout(weights_env, tmp_path):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    code, stderr = _cli("run", fifo, tmp_path / "out.mp4", "--timeout", "2", "--quiet",
                        timeout=60)
    assert code == EXIT_INPUT
    assert f"no data from {fifo} within 2 s" in _line(stderr)
    assert time.monotonic() - started < 30  # interpreter start-up + 2 s, not forever
    assert _listing(tmp_path) == ["in.fifo"]


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_fifo_without_writer_ends_on_ctrl_c_and_sigterm(weights_env, tmp_path, signum, code, word):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen([sys.executable, "-m", "nvpipe.app.cli", "run", str(fifo),
                                str(tmp_path / "out.mp4"), "--quiet"], stderr=subprocess.PIPE)
    time.sleep(6)  # past start-up, into the wait for a writer
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == code
    assert _line(stderr.decode()) == f"nvpipe: {word}"
    assert _listing(tmp_path) == ["in.fifo"]


def test_cluster_refusing_address_is_one_line_at_once(small_clip, weights_env, tmp_path):
    (tmp_path / "clips").mkdir()
    os.link(small_clip, tmp_path / "clips" / "a.mp4")
    started = time.monotonic()
    code, stderr = _cli("run", tmp_path / "clips", tmp_path / "out", "--cluster",
                        "127.0.0.1:1", "--quiet", timeout=60)
    assert code == 1
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in _line(stderr)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists() or _listing(tmp_path / "out") == []


@pytest.mark.slow
def test_cluster_silent_address_gives_up_after_the_timeout(small_clip, weights_env, tmp_path):
    """A port that accepts but never answers as Ray would: ray.init retries for minutes;
    nvpipe gives up after NVPIPE_CLUSTER_TIMEOUT seconds, and Ctrl-C acts at once."""
    (tmp_path / "clips").mkdir()
    os.link(small_clip, tmp_path / "clips" / "a.mp4")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        env = {**os.environ, "NVPIPE_CLUSTER_TIMEOUT": "2"}
        started = time.monotonic()
        code, stderr = _cli("run", tmp_path / "clips", tmp_path / "out", "--cluster", address,
                            "--quiet", env=env, timeout=90)
        assert code == 1
        assert "no answer within 2 s (NVPIPE_CLUSTER_TIMEOUT" in _line(stderr)
        assert time.monotonic() - started < 45

        env["NVPIPE_CLUSTER_TIMEOUT"] = "600"
        process = subprocess.Popen([sys.executable, "-m", "nvpipe.app.cli", "run",
                                    str(tmp_path / "clips"), str(tmp_path / "out"),
                                    "--cluster", address, "--quiet"],
                                   stderr=subprocess.PIPE, env=env)
        time.sleep(8)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130
        assert _line(stderr.decode()) == "nvpipe: interrupted"
        assert time.monotonic() - interrupted < 10  # was 22 s inside ray.init


# -- poor: "internal error" where the user can act --------------------------------------------
def test_resize_beyond_the_limit_is_refused_at_parse_time(small_clip, tmp_path, capsys):
    code, line = _main_line(capsys, "run", small_clip, tmp_path / "out.mp4", "--resize",
                            "99999x99999")
    assert code == 2
    assert "99999x99999 is too large: each side at most 8192 pixels" in line
    assert _listing(tmp_path) == []


def test_fps_beyond_the_limit_is_refused(tmp_path, capsys):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    code, line = _main_line(capsys, "run", pictures, tmp_path / "out.mp4", "--fps", "1e9")
    assert code == 2
    assert "fps must be in (0, 1000]" in line
    assert _listing(tmp_path) == ["pictures"]


def test_unknown_input_format_is_one_line(small_clip, weights_env, tmp_path, capsys):
    code, line = _main_line(capsys, "run", small_clip, tmp_path / "out.mp4", "--input-format",
                            "nosuchfmt", "--quiet")
    assert code == EXIT_INPUT
    assert "--input-format nosuchfmt: this FFmpeg has no such format" in line
    assert _listing(tmp_path) == []


def test_stream_without_a_codec_is_not_a_readable_video(small_clip, weights_env, tmp_path, capsys):
    """Bytes flipped in the moov's sample description: FFmpeg opens the file, its video
    stream has no decoder (PyAV's codec_context is None)."""
    data = small_clip.read_bytes().replace(b"avc1", b"zzzz")
    clip = tmp_path / "fuzzed.mp4"
    clip.write_bytes(data)
    code, line = _main_line(capsys, "run", clip, tmp_path / "out.mp4", "--quiet")
    assert code == EXIT_INPUT
    assert f"not a readable video file: {clip}" in line
    assert clip.read_bytes() == data
    assert _listing(tmp_path) == ["fuzzed.mp4"]


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    mount_tmpfs(folder, "ro,size=64k")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_export_into_read_only_folder_is_one_line(weights_env, read_only_folder, capsys):
    code, line = _main_line(capsys, "export", read_only_folder / "net.onnx")
    assert code == 1
    assert line == f"nvpipe: error: cannot write to {read_only_folder} (Read-only file system)"
    assert _listing(read_only_folder) == []


# -- poor: misleading or missing messages ------------------------------------------------------
def test_empty_standard_input_says_it_was_empty(weights_env, tmp_path):
    code, stderr = _cli("run", "-", tmp_path / "out.mp4", "--quiet", input=b"", cwd=tmp_path)
    assert code == EXIT_INPUT
    line = _line(stderr)
    assert line == "nvpipe: error: standard input was empty: no data came before its end"
    assert _listing(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "small"
    mount_tmpfs(folder, "size=8k")  # two pages: a few frames of alpha, not 40
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_keep_partial_keeps_the_output_whose_disk_did_not_fill(weights_env, tmp_path,
                                                             small_disk, capsys):
    clip = make_clip(SHARED / "footage" / "person_fullbody_360x640.mp4", tmp_path / "in.mp4",
                     frames=40, size=(144, 256))
    out, alpha = tmp_path / "out" / "out.mp4", small_disk / "alpha.mp4"
    out.parent.mkdir()
    code, line = _main_line(capsys, "run", clip, out, "--alpha", alpha, "--keep-partial",
                            "--ratio", "0.5", "--quiet")
    assert code == 1
    assert "No space left on device" in line
    assert "kept " in line and "out.mp4 (40 frames, incomplete)" in line
    assert f"not written: {alpha}" in line
    assert count_frames(out) == 40  # every frame done, decodable
    assert _listing(out.parent) == ["out.mp4"]  # no hidden partial, no lock left
    assert _listing(small_disk) == []


def test_keep_partial_mid_run_disk_full_keeps_the_others(weights_env, small_clip, tmp_path,
                                                         monkeypatch, capsys):
    """A sink whose disk fills after 3 frames (write raises ENOSPC): the other output keeps
    the frames done, the failed one is dropped."""
    import nvpipe.sinks as sinks

    real_open = sinks.open_sink

    class FillingSink:
        def __init__(self, sink):
            self._sink = sink

        def __getattr__(self, name):
            return getattr(self._sink, name)

        def write(self, array, pts):
            if self._sink.frames_written == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._sink.write(array, pts)

    def opener(spec, info, **kwargs):
        sink = real_open(spec, info, **kwargs)
        return FillingSink(sink) if "alpha" in str(spec.path) else sink

    monkeypatch.setattr(sinks, "open_sink", opener)
    out, alpha = tmp_path / "out.mp4", tmp_path / "alpha.mp4"
    code, line = _main_line(capsys, "run", small_clip, out, "--alpha", alpha, "--keep-partial",
                            "--ratio", "0.5", "--quiet")
    assert code == 1
    assert f"writing {alpha} failed (No space left on device)" in line
    assert "kept " in line and "incomplete" in line and f"not written: {alpha}" in line
    assert 1 <= count_frames(out) <= 8
    assert _listing(tmp_path) == ["out.mp4"]


@pytest.fixture
def wide_clip(tmp_path):
    """A 2048x2 clip, 4 frames."""
    path = tmp_path / "wide.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 2048, 2, "yuv420p"
        for i in range(4):
            picture = np.full((2, 2048, 3), 40 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_automatic_ratio_never_leaves_zero_pixels(wide_clip, weights_env, tmp_path, capsys):
    from nvpipe.job import auto_ratio

    assert auto_ratio(2048, 2) == 0.5 and auto_ratio(1920, 1080) == 512 / 1920
    assert all(int(short * auto_ratio(9000, short)) >= 1 for short in range(1, 40))
    out = tmp_path / "out.mp4"
    assert main(["run", str(wide_clip), str(out), "--quiet"]) == 0
    assert count_frames(out) == 4


def test_a_ratio_that_leaves_no_pixels_suggests_ratio_1(wide_clip, weights_env, tmp_path, capsys):
    code, line = _main_line(capsys, "run", wide_clip, tmp_path / "out.mp4", "--ratio", "0.25",
                            "--quiet")
    assert code == 1
    assert "ratio 0.25 leaves no pixels of a 2048x2 frame" in line and "--ratio 1" in line
    assert _listing(tmp_path) == ["wide.mp4"]


@pytest.mark.parametrize("case", ["random_bytes", "truncated_onnx", "folder", "resnet50_given_mobilenet"])
def test_weights_command_checks_what_run_checks(case, onnx_weights, pth_weights, tmp_path, capsys):
    args = []
    if case == "random_bytes":
        path = tmp_path / "random.pth"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    elif case == "truncated_onnx":
        path = tmp_path / "cut.onnx"
        path.write_bytes(onnx_weights.read_bytes()[:100_000])
    elif case == "folder":
        path = tmp_path
    else:
        path, args = pth_weights, ["--variant", "resnet50"]
    code, line = _main_line(capsys, "weights", "--weights", path, *args)
    assert code == 1
    expected = {"random_bytes": "neither a PyTorch state_dict nor an ONNX model",
                "truncated_onnx": "not a readable ONNX model",
                "folder": "is a folder, not a weights file",
                "resnet50_given_mobilenet": "holds mobilenetv3 weights, but variant 'resnet50'"}
    assert expected[case] in line
    assert "missing" not in line


def test_weights_command_accepts_the_official_file(onnx_weights, capsys):
    assert main(["weights", "--weights", str(onnx_weights)]) == 0
    assert str(onnx_weights) in capsys.readouterr().out


# -- poor: batches ----------------------------------------------------------------------------
@pytest.mark.slow  # six short conversions: ~15 s on 2 idle cores
def test_damaged_batch_record_is_said_kept_aside_and_rebuilt(small_clip, weights_env, tmp_path,
                                                             capsys):
    import json

    clips, out = tmp_path / "clips", tmp_path / "out"
    clips.mkdir()
    for name in ("a", "b", "c"):
        os.link(small_clip, clips / f"{name}.mp4")
    assert main(["run", str(clips), str(out), "--quiet", "--ratio", "0.5", "--frames", "2"]) == 0, \
        capsys.readouterr().err
    record = out / ".nvpipe-batch.json"
    entries = json.loads(record.read_text())["outputs"]
    assert sorted(entries) == ["a.mp4", "b.mp4", "c.mp4"]
    os.utime(out / "b.mp4", ns=(1, 1))  # changed since it was recorded: cannot be proven
    text = record.read_text()
    damaged = text[: text.index('"c.mp4"') + 20]  # cut inside c's entry
    record.write_text(damaged)
    capsys.readouterr()

    assert main(["run", str(clips), str(out), "--quiet", "--ratio", "0.5", "--frames", "2"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    note = [line for line in err.splitlines() if "batch record" in line]
    assert len(note) == 1 and "was damaged: kept aside as .nvpipe-batch.json.damaged-" in note[0]
    assert "rebuilt 1 entry" in note[0] and "not trusted" in note[0]
    assert "skipped: " + str(clips / "a.mp4") + ": done" in err
    assert "b.mp4 exists and was not written by this batch" in err
    assert "c.mp4 exists and was not written by this batch" in err
    aside = [p for p in out.iterdir() if p.name.startswith(".nvpipe-batch.json.damaged-")]
    assert len(aside) == 1 and aside[0].read_text() == damaged
    assert sorted(json.loads(record.read_text())["outputs"]) == ["a.mp4"]
    for name in ("a", "b", "c"):
        assert count_frames(out / f"{name}.mp4") == 2  # nothing replaced, nothing removed


class _FakeRay:
    """Enough of Ray for ``_run_on_ray``: every task's node dies (``get`` raises), and
    ``nodes()`` then reports no live node, as a lost local Ray does."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            pass

        class NodeDiedError(RayError):
            pass

    def __init__(self):
        self.submitted = []

    def remote(self, **_):
        fake = self

        class Task:
            def options(self, **_):
                return self

            def remote(self, clip, kill_after):
                fake.submitted.append(clip.name)
                return object()

        return lambda function: Task()

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        raise self.exceptions.NodeDiedError("the node running this task died")

    def nodes(self):
        return [{"Alive": False}]

    def cancel(self, ref):
        pass


def test_lost_cluster_fails_running_clips_and_leaves_the_rest_not_started(small_clip, tmp_path):
    import io

    from nvpipe.app.batch import BatchSummary
    from nvpipe.app.schedule import Clip, _run_on_ray
    from nvpipe.job import Job, OutputSpec

    out = tmp_path / "out"
    out.mkdir()
    clips = [Clip(i + 1, 3, Job(str(small_clip), [OutputSpec(str(out / f"{name}.mp4"))]))
             for i, name in enumerate("abc")]
    # What a worker killed with its node leaves: a hidden partial file and its lock.
    (out / ".a.nvpipe-4242-abcdef.partial.mp4").write_bytes(b"partial")
    (out / ".a.mp4.nvpipe-lock").write_text("4242")
    summary, log, fake = BatchSummary(), io.StringIO(), _FakeRay()
    _run_on_ray(fake, clips, summary, 2, False, log)
    assert fake.submitted == ["person.mp4", "person.mp4"]  # a and b started, c never
    assert [reason for _, reason in summary.failed] == [
        "the Ray cluster was lost while converting it (NodeDiedError); nothing kept"] * 2
    assert summary.not_started == [(str(small_clip), "the Ray cluster was lost before it started")]
    assert "worker died" not in log.getvalue() + summary.report()
    assert "1 not started" in summary.report()
    assert "the Ray cluster was lost (NodeDiedError): 2 clips stopped, 1 not started" in log.getvalue()
    assert _listing(out) == []  # partials and locks cleaned now, not at the next run


class _InterruptedRay(_FakeRay):
    """Ctrl-C arrives while the batch waits on its tasks; the cancelled tasks answer
    nothing (as Ray's cancelled tasks do), so what they kept is read from the disk."""

    def __init__(self):
        super().__init__()
        self.waits = 0
        self.cancelled = 0

    def wait(self, refs, num_returns=1, timeout=None):
        self.waits += 1
        if self.waits == 1:
            raise KeyboardInterrupt
        return refs, []

    def cancel(self, ref):
        self.cancelled += 1


def test_ctrl_c_in_a_cluster_batch_names_what_each_clip_kept(small_clip, tmp_path):
    import io

    from nvpipe.app.batch import BatchSummary, job_settings
    from nvpipe.app.manifest import BatchManifest
    from nvpipe.app.schedule import BatchInterrupted, Clip, _run_on_ray
    from nvpipe.job import Job, OutputSpec

    out = tmp_path / "out"
    out.mkdir()
    clips = [Clip(i + 1, 2, Job(str(clip), [OutputSpec(str(out / f"{name}.mp4"))]))
             for i, (name, clip) in enumerate([("a", small_clip), ("b", small_clip)])]
    # a's task kept its frames done under the final name (its record says "started"); b's
    # had written none.
    (out / "a.mp4").write_bytes(small_clip.read_bytes())
    BatchManifest(str(out)).mark_started([str(out / "a.mp4")], str(small_clip),
                                         job_settings(clips[0].job))
    log, fake = io.StringIO(), _InterruptedRay()
    with pytest.raises(BatchInterrupted):
        _run_on_ray(fake, clips, BatchSummary(), 1, False, log)
    assert fake.cancelled == 2
    lines = log.getvalue().splitlines()
    assert f"nvpipe: person.mp4: interrupted; kept {out / 'a.mp4'} (incomplete)" in lines
    assert "nvpipe: person.mp4: interrupted; nothing kept" in lines


def test_ray_notices_are_silenced_before_connecting():
    """Ray's "Token authentication is enabled" notice (and its off-main-thread SIGTERM
    notice) printed even under --quiet: connect() silences both before ray.init."""
    import logging

    pytest.importorskip("ray")
    from nvpipe.app.schedule import connect
    from nvpipe.errors import NvpipeError

    with pytest.raises(NvpipeError, match="cannot reach the Ray cluster at '127.0.0.1:1'"):
        connect("127.0.0.1:1")
    token = logging.getLogger("ray._private.authentication.authentication_token_setup")
    assert not token.isEnabledFor(logging.WARNING)
    worker = logging.getLogger("ray._private.worker")
    record = logging.LogRecord("ray._private.worker", logging.WARNING, __file__, 1,
                               "SIGTERM handler is not set because current thread is not "
                               "the main thread.", None, None)
    assert not worker.filter(record)
