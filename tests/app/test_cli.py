"""End to end on the CPU: `nvpipe run`, bad input, Ctrl-C, batches, the Python API."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from nvpipe.app.cli import main

from conftest import CLIP_FRAMES, count_frames


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _read(path):
    """(frames as uint8 (H,W,3) arrays, pts list, time_base, has_audio) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, pts = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(frame.pts)
        return frames, pts, stream.time_base, bool(container.streams.audio)


def _cli(*args, timeout=300):
    """Run the real command in a subprocess: (returncode, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "nvpipe.app.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def _one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_run_writes_composite_alpha_foreground(small_clip, weights_env, tmp_path, official_network):
    out, alpha, fgr = tmp_path / "out.mp4", tmp_path / "alpha.mp4", tmp_path / "fgr.mp4"
    before = _sha(small_clip)
    code = main(["run", str(small_clip), str(out), "--alpha", str(alpha), "--foreground",
                 str(fgr), "--quiet", "--ratio", "0.5"])
    assert code == 0
    assert _sha(small_clip) == before
    source_frames, source_pts, source_tb, _ = _read(small_clip)
    for path in (out, alpha, fgr):
        frames, pts, time_base, _ = _read(path)
        assert len(frames) == len(source_frames) == CLIP_FRAMES
        assert frames[0].shape == source_frames[0].shape
        assert [p * time_base for p in pts] == [p * source_tb for p in source_pts]

    # The composite equals the network's own output over green, within H.264's loss.
    import rvm

    network = official_network
    state = [None] * 4
    composite, _, _, _ = _read(out)
    alphas, _, _, _ = _read(alpha)
    errors, alpha_errors = [], []
    with torch.inference_mode():
        for i, frame in enumerate(source_frames):
            src = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
            fgr_t, pha_t, *state = network(src, *state, downsample_ratio=0.5)
            green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
            expected = (fgr_t * pha_t + green * (1 - pha_t))[0].permute(1, 2, 0).numpy() * 255
            errors.append(np.abs(composite[i].astype(np.float32) - expected).mean())
            alpha_errors.append(np.abs(alphas[i][..., 0].astype(np.float32)
                                       - pha_t[0, 0].numpy() * 255).mean())
    # H.264 at the default quality on real footage: mean error a few levels of 255.
    assert max(errors) < 4.0, errors
    assert max(alpha_errors) < 4.0, alpha_errors


@pytest.mark.parametrize("case", ["missing", "not_video", "truncated", "no_out_dir", "exists",
                                  "bad_value", "bad_ratio"])
def test_bad_input_one_line_nonzero(case, small_clip, weights_env, tmp_path):
    src, out = small_clip, tmp_path / "out.mp4"
    args = []
    if case == "missing":
        src = tmp_path / "nope.mp4"
    elif case == "not_video":
        src = tmp_path / "notes.mp4"
        src.write_text("this is not a video\n" * 100)
    elif case == "truncated":
        data = open(small_clip, "rb").read()
        src = tmp_path / "truncated.mp4"
        src.write_bytes(data[: len(data) // 2])
    elif case == "no_out_dir":
        out = tmp_path / "missing_dir" / "out.mp4"
    elif case == "exists":
        out.write_bytes(b"precious")
    elif case == "bad_value":
        args = ["--device", "gpu"]
    elif case == "bad_ratio":
        args = ["--ratio", "1.5"]
    before = _sha(src) if os.path.exists(src) else None
    code, _, stderr = _cli("run", src, out, "--quiet", *args)
    # The exit codes of nvpipe.app.automation: input bad 3, output exists 4, usage 2.
    assert code == {"missing": 3, "not_video": 3, "truncated": 3, "no_out_dir": 1, "exists": 4,
                    "bad_value": 2, "bad_ratio": 2}[case], stderr
    line = _one_clean_line(stderr)
    assert "error" in line
    if before is not None:
        assert _sha(src) == before
    if case == "exists":
        assert out.read_bytes() == b"precious"
    elif case != "no_out_dir":
        assert not out.exists()  # a failed run leaves no output
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []


def test_null_output_converts_every_frame_and_writes_nothing(small_clip, weights_env, tmp_path):
    """``nvpipe run in.mp4 /dev/null`` (FFmpeg's -f null): the whole pipeline, no file."""
    import os

    from nvpipe.app.batch import carries_alpha
    from nvpipe.job import Job, OutputSpec
    from nvpipe.engine.runner import run

    assert not carries_alpha(os.devnull)
    code, _, stderr = _cli("run", small_clip, os.devnull, "--alpha", tmp_path / "alpha.mp4", "--ratio", "0.5")
    assert code == 0, stderr
    assert f"{CLIP_FRAMES} frames" in stderr and "frames discarded" in stderr
    assert len(_read(tmp_path / "alpha.mp4")[0]) == CLIP_FRAMES  # a real output beside it
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)
    result = run(Job(input=str(small_clip), outputs=[OutputSpec(os.devnull, kind="alpha")], ratio=0.5))
    assert result.frames == CLIP_FRAMES and "discarded" in result.encoders[os.devnull]


def test_device_auto_picks_what_can_run(small_clip, weights_env, tmp_path, monkeypatch):
    """--device auto (the default, or $NVPIPE_DEVICE): the GPU pipeline where it can run,
    else the CPU, saying why with --verbose; a bad $NVPIPE_DEVICE is one line, exit 2."""
    import torch

    from nvpipe.platform import gpu

    monkeypatch.delenv("NVPIPE_DEVICE")
    if not torch.cuda.is_available():
        code, _, stderr = _cli("run", small_clip, tmp_path / "a.mp4", "--ratio", "0.5", "--verbose")
        assert code == 0, stderr
        assert "device cpu (not cuda: " in stderr and "on cpu," in stderr
    monkeypatch.setattr(gpu, "check_cuda_ready", lambda **kwargs: None)
    assert gpu.resolve_device("auto") == ("cuda", None)
    assert gpu.resolve_device("cpu") == ("cpu", None)

    def not_ready(**kwargs):
        raise gpu.DeviceError("--device cuda cannot run: no driver")

    monkeypatch.setattr(gpu, "check_cuda_ready", not_ready)
    assert gpu.resolve_device("auto") == ("cpu", "no driver")
    monkeypatch.setenv("NVPIPE_DEVICE", "gpu")
    code, _, stderr = _cli("run", small_clip, tmp_path / "b.mp4")
    assert code == 2 and "NVPIPE_DEVICE must be auto, cpu, cuda or cuda:N" in _one_clean_line(stderr)
    assert not (tmp_path / "b.mp4").exists()


@pytest.mark.slow
def test_ctrl_c_leaves_playable_file_of_frames_done(weights_env, tmp_path, footage):
    # 100 frames of 1080p take well over 10 s on this CPU, so the signal lands mid-run.
    source = footage("four_people_1080p.mp4")
    out = tmp_path / "out.mp4"
    process = subprocess.Popen([sys.executable, "-m", "nvpipe.app.cli", "run", str(source),
                                str(out), "--ratio", "0.25", "--quiet"],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    partial = None
    while time.time() < deadline and partial is None:  # the encoder has started writing
        partial = next((p for p in tmp_path.iterdir()
                        if ".partial" in p.name and p.stat().st_size > 4096), None)
        time.sleep(0.1)
    assert partial is not None, "no output was started"
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "interrupted after" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no partial file left
    assert 0 < count_frames(out) < 100


def test_ctrl_c_before_any_frame_leaves_nothing(weights_env, tmp_path, footage):
    from nvpipe import Job, OutputSpec, run
    from nvpipe.engine.runner import Interrupted

    class InterruptedNetwork(torch.nn.Module):
        def coefficients(self, *args, **kwargs):
            raise KeyboardInterrupt

    job = Job(input=str(footage("person_fullbody_360x640.mp4")),
              outputs=[OutputSpec(str(tmp_path / "out.mp4"))], ratio=0.25)
    with pytest.raises(Interrupted) as interrupted:
        run(job, network=InterruptedNetwork())
    assert interrupted.value.result.interrupted and interrupted.value.result.frames == 0
    assert list(tmp_path.iterdir()) == []


def test_batch_converts_good_reports_bad_and_resumes(small_clip, weights_env, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (clips / name).write_bytes(small_clip.read_bytes())
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    out = tmp_path / "out"
    code, _, stderr = _cli("run", clips, out, "--quiet", "--ratio", "0.5")
    assert code != 0
    assert "broken.mp4" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.mp4", "b.mp4"]
    assert count_frames(out / "a.mp4") == CLIP_FRAMES
    mtime = os.path.getmtime(out / "a.mp4")
    code, _, stderr = _cli("run", str(clips / "[ab].mp4"), out, "--quiet")
    assert code == 0, stderr
    assert "2 skipped" in stderr
    assert os.path.getmtime(out / "a.mp4") == mtime


def test_convert_video_takes_rvm_arguments(small_clip, weights_env, tmp_path):
    import nvpipe

    result = nvpipe.convert_video(
        input_source=str(small_clip), downsample_ratio=0.5, output_type="video",
        output_composition=str(tmp_path / "com.mp4"), output_alpha=str(tmp_path / "pha.mp4"),
        output_video_mbps=4, seq_chunk=4, progress=False, device="cpu", dtype=torch.float32)
    assert result.frames == CLIP_FRAMES
    assert count_frames(tmp_path / "com.mp4") == CLIP_FRAMES
    assert count_frames(tmp_path / "pha.mp4") == CLIP_FRAMES


def test_session_matches_network_and_resets(weights_env, small_clip, official_network):
    import nvpipe
    import rvm

    frames, _, _, _ = _read(small_clip)
    session = nvpipe.MattingSession(ratio=0.5, weights=str(weights_env))
    network = official_network
    state = [None] * 4
    with torch.inference_mode():
        for frame in frames[:4]:
            matte = session.process(frame)
            src = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
            fgr, pha, *state = network(src, *state, downsample_ratio=0.5)
            assert torch.allclose(matte.alpha, pha[0], atol=1e-5)
            assert torch.allclose(matte.foreground, fgr[0], atol=1e-5)
        session.reset()
        first = session.process(frames[0])
        fresh_fgr, fresh_pha, *_ = network(
            torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255,
            downsample_ratio=0.5)
        assert torch.allclose(first.alpha, fresh_pha[0], atol=1e-5)


def test_info_reports_without_gpu(capsys, monkeypatch):
    from nvpipe.engine.matting import engines

    key = engines.choice_key((270, 480), "mobilenetv3", True, 2)
    stale = key.replace(engines.library_versions(), "torch 0.1")
    monkeypatch.setattr(engines, "read_choices", lambda: {key: {"engine": "openvino"},
                                                          stale: {"engine": "torch"}})
    assert main(["info"]) == 0
    report = capsys.readouterr().out
    assert "torch" in report and "gpu" in report and "weights" in report
    engines_line = next(line for line in report.splitlines()
                        if line.startswith("cpu network engines:"))
    assert "torch, onnxruntime" in engines_line
    # what auto chose with these libraries, not with older ones
    assert engines_line.endswith("auto chose openvino at 270x480"), engines_line


def test_batch_names_of_extra_outputs():
    """--alpha/--foreground in a batch: a {stem} template (a bare name goes into the clip's
    output folder, a path is taken as it is), an extension, or a name."""
    from nvpipe.app.batch import _name_for

    assert _name_for("{stem}_pha.mp4", "a", "_alpha", "out") == os.path.join("out", "a_pha.mp4")
    assert _name_for("mattes/{stem}.mov", "a", "_alpha", "out") == os.path.join("mattes", "a.mov")
    assert _name_for(".mov", "a", "_alpha", "out") == os.path.join("out", "a_alpha.mov")
    assert _name_for("mov", "a", "_alpha", "out") == os.path.join("out", "a_alpha.mov")
    assert _name_for("pha.mp4", "a", "_alpha", "out") == os.path.join("out", "a_pha.mp4")
    # The template case that looked for batch_tpl/batch_tpl/...: the folder is taken once.
    assert _name_for("batch_tpl/{stem}_alpha.mp4", "a", "_alpha", "batch_tpl") == \
        os.path.join("batch_tpl", "a_alpha.mp4")
