"""--subject / --subject-mask and their Python forms on real footage: files, picture
sequences, streams, convert_video, MattingSession; the run's "decided" line."""

import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from conftest import footage_clip, make_clip

# four_people at 320x180: the plaid shirt (the subject) is second from the right; in the
# input's pixels of this size his chest is at about (166, 125).
SUBJECT = (166, 125)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    return footage_clip(tmp_path_factory, "four_people_1080p.mp4", "four.mp4", frames=6,
                        size=(320, 180), timed=True)


def _alpha_frames(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray").astype(np.float32) / 255
                for f in container.decode(video=0)]


def _pictures(folder):
    """A PNG sequence's frames as float alpha (H, W), in order."""
    return [np.asarray(Image.open(path).convert("L")).astype(np.float32) / 255
            for path in sorted(folder.iterdir())]


def _only_the_subject(alphas, frames):
    """The bystanders (two at the left, one at the right) exactly zero, the subject's chest
    kept, in every frame of a lossless (PNG) alpha."""
    assert len(alphas) == frames
    for alpha in alphas:
        assert alpha[:, :60].max() == 0 and alpha[:, 290:].max() == 0
        assert alpha[100:, 150:185].mean() > 0.9


@pytest.fixture(scope="module")
def pictures(four, tmp_path_factory):
    """``four`` as a PNG sequence (a folder of 00000.png ...)."""
    folder = tmp_path_factory.mktemp("pictures")
    with av.open(str(four)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(folder / f"{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def plain_pictures(pictures, tmp_path_factory, _official_network_once):
    """Plain RVM's alpha of ``pictures``: the bystanders are there without a subject."""
    import copy

    from nvpipe import convert_video

    out = tmp_path_factory.mktemp("plain") / "alpha"
    convert_video(copy.deepcopy(_official_network_once), input_source=str(pictures),
                  output_type="png_sequence", output_alpha=str(out), progress=False)
    alphas = _pictures(out)
    assert all(a[:, :60].max() > 0.9 and a[:, 290:].max() > 0.9 for a in alphas)
    return alphas


def _cli(*args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "nvpipe.app.cli", *map(str, args)],
                          capture_output=True, text=True if stdin is None else False,
                          timeout=timeout, stdin=stdin)


def _plain_and_kept(four, tmp_path, *subject_args):
    plain, kept = tmp_path / "plain.mkv", tmp_path / "kept.mkv"
    for out, extra in ((plain, ()), (kept, subject_args)):
        done = _cli("run", four, tmp_path / f"{out.stem}.mp4", "--alpha", out, "--codec",
                    "h264", "--crf", "0", *extra)
        assert done.returncode == 0, done.stderr
    return _alpha_frames(plain), _alpha_frames(kept), done.stderr


def test_run_keeps_the_person_under_the_point(four, tmp_path, weights_env):
    plain, kept, stderr = _plain_and_kept(four, tmp_path, "--subject",
                                          f"{SUBJECT[0]},{SUBJECT[1]}")
    decided = [line for line in stderr.splitlines() if line.startswith("nvpipe: decided:")]
    assert len(decided) == 1
    line = decided[0]
    assert "ratio 1 (automatic: 1, the frame is 512 pixels or less)" in line
    assert f"subject: the person at {SUBJECT[0]},{SUBJECT[1]}" in line
    assert "audio: none in the input" in line and "background #00ff00" in line
    assert "not live" in line
    for p, k in zip(plain, kept):
        assert k.sum() < 0.6 * p.sum()  # the others are gone...
        assert k[100:, 150:185].mean() > 0.9  # ...the subject's chest is there
        assert k[:, :60].max() < 0.02 and k[:, 290:].max() < 0.02  # the ends: bystanders


def test_run_without_subject_says_everyone(four, tmp_path, weights_env):
    done = _cli("run", four, tmp_path / "o.mp4", "--frames", "1")
    assert done.returncode == 0, done.stderr
    assert "subject: everyone (no --subject)" in done.stderr


def test_point_on_nobody_is_one_line_naming_the_people(four, tmp_path, weights_env):
    done = _cli("run", four, tmp_path / "o.mp4", "--subject", "160,2")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "on nobody" in lines[0] and "centred at" in lines[0]
    assert not (tmp_path / "o.mp4").exists()


def test_bad_subject_options(four, tmp_path):
    done = _cli("run", four, tmp_path / "o.mp4", "--subject", "left")
    assert done.returncode == 2 and "X,Y" in done.stderr
    done = _cli("run", four, tmp_path / "o.mp4", "--subject", "1,2", "--subject-mask", "m.png")
    assert done.returncode == 2 and "not allowed with" in done.stderr


def test_subject_mask_on_a_picture_sequence_through_convert_video(four, tmp_path,
                                                                 official_network):
    from nvpipe import convert_video

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    with av.open(str(four)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(pictures / f"{i:05d}.png")
    mask = np.zeros((360, 640), np.uint8)  # twice the frames' size
    mask[160:, 280:400] = 255  # the subject's chest and belly only: a rough mask is enough
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = convert_video(official_network, input_source=str(pictures),
                           output_type="png_sequence", output_alpha=str(tmp_path / "alpha"),
                           subject_mask=str(tmp_path / "mask.png"), progress=False)
    assert result.subject is not None and result.subject.lost_frames == 0
    assert any(d.startswith("subject: the people under the mask") for d in result.decided)
    alphas = sorted((tmp_path / "alpha").iterdir())
    assert len(alphas) == 6
    for path in alphas:
        alpha = np.asarray(Image.open(path).convert("L")).astype(np.float32) / 255
        assert alpha[:, :60].max() < 0.02 and alpha[100:, 150:185].mean() > 0.9


def test_matting_session_subject_main(four, official_network):
    import torch

    from nvpipe import MattingSession

    session = MattingSession(network=official_network, subject="main")
    plain = MattingSession(network=official_network)
    with av.open(str(four)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            kept, every = session.process(rgb).alpha[0], plain.process(rgb).alpha[0]
            assert float(kept.sum()) < 0.6 * float(every.sum())
            inside = session.subject.labels is not None
            assert inside
            # Where it keeps, it keeps plain RVM's matte exactly.
            where = kept > 0
            assert torch.equal(kept[where], every[where])
    assert session.subject.describe().startswith("subject: the largest person")


def test_stream_input_with_a_subject(four, tmp_path, weights_env):
    ts = make_clip(four, tmp_path / "four.ts", frames=4, timed=True)
    with open(ts, "rb") as stdin:
        done = _cli("run", "-", tmp_path / "o.mkv", "--alpha", tmp_path / "a.mkv",
                    "--input-format", "mpegts", "--subject", "main", stdin=stdin)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "subject: the largest person" in stderr
    alphas = _alpha_frames(tmp_path / "a.mkv")
    assert len(alphas) == 4 and all(a[:, :60].max() < 0.05 for a in alphas)


def test_picture_sequence_cli_subject_point(pictures, plain_pictures, tmp_path, weights_env,
                                           pipeline_device):
    """``%05d.png`` in, PNG alpha out, ``--subject X,Y``, on each device (CUDA: FP16, the
    low-resolution alpha copied to the host for the tracker and the keep mask back): the
    bystanders RVM mattes (see ``plain_pictures``) are exactly zero."""
    done = _cli("run", pictures / "%05d.png", tmp_path / "alpha" / "%05d.png", "--type",
                "alpha", "--codec", "png", "--subject", f"{SUBJECT[0]},{SUBJECT[1]}",
                "--device", pipeline_device)
    assert done.returncode == 0, done.stderr
    assert f"subject: the person at {SUBJECT[0]},{SUBJECT[1]}" in done.stderr
    _only_the_subject(_pictures(tmp_path / "alpha"), len(plain_pictures))


def test_picture_sequence_convert_video_subject_point(pictures, plain_pictures, tmp_path,
                                                      official_network):
    from nvpipe import convert_video

    result = convert_video(official_network, input_source=str(pictures),
                           output_type="png_sequence", output_alpha=str(tmp_path / "alpha"),
                           subject=SUBJECT, progress=False)
    assert result.subject is not None and result.subject.lost_frames == 0
    kept = _pictures(tmp_path / "alpha")
    _only_the_subject(kept, len(plain_pictures))
    for alpha, plain in zip(kept, plain_pictures):  # where it keeps, plain RVM's matte
        where = alpha > 0
        assert np.array_equal(alpha[where], plain[where])


def test_stream_on_stdin_subject_point(four, plain_pictures, tmp_path, weights_env):
    """MPEG-TS on standard input (a stream: no length, no seeking), ``--subject X,Y``,
    PNG alpha out: the bystanders exactly zero, the subject kept."""
    ts = make_clip(four, tmp_path / "four.ts", frames=4, timed=True)
    with open(ts, "rb") as stdin:
        done = _cli("run", "-", tmp_path / "alpha" / "%05d.png", "--type", "alpha", "--codec",
                    "png", "--input-format", "mpegts", "--subject",
                    f"{SUBJECT[0]},{SUBJECT[1]}", stdin=stdin)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert f"subject: the person at {SUBJECT[0]},{SUBJECT[1]}" in stderr
    _only_the_subject(_pictures(tmp_path / "alpha"), 4)


@pytest.mark.parametrize("chunk", [1, 4])
def test_every_frame_out_with_a_subject_in_chunks(four, tmp_path, weights_env, chunk):
    """With a subject the runner keeps one chunk between the network and the tail while the
    tracker runs: every frame still comes out, in order (6 frames: chunks of 4 end with a
    shorter one), bystanders zero."""
    out = tmp_path / "alpha"
    done = _cli("run", four, out / "%05d.png", "--type", "alpha", "--codec", "png",
                "--chunk", chunk, "--subject", f"{SUBJECT[0]},{SUBJECT[1]}", "--profile")
    assert done.returncode == 0, done.stderr
    _only_the_subject(_pictures(out), 6)
    # --profile names the wait for the tracker (with its masks applied) as its own stage.
    assert any(line.split()[:1] == ["subject"] and "ms/frame" in line
               for line in done.stderr.splitlines())


def test_a_tracker_failure_fails_the_run_and_leaves_no_output(four, tmp_path, weights_env,
                                                              monkeypatch):
    """The tracker's step raising on its own thread (on the 4th frame) stops the run with that
    error, and the output is not left behind; an existing file at that path is untouched."""
    from nvpipe.engine import subject
    from nvpipe.engine.runner import run
    from nvpipe.job import Job, OutputSpec

    step = subject.SubjectTracker.step

    def failing(self, pha, rgb, cut=False):
        if self.frame >= 2:
            raise RuntimeError("the tracker failed")
        return step(self, pha, rgb, cut)

    monkeypatch.setattr(subject.SubjectTracker, "step", failing)
    target = tmp_path / "out.mp4"
    target.write_bytes(b"an earlier output")
    job = Job(input=str(four), outputs=[OutputSpec(str(target))], device="cpu", overwrite=True,
              subject=SUBJECT)
    with pytest.raises(RuntimeError, match="the tracker failed"):
        run(job)
    assert target.read_bytes() == b"an earlier output"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no partial file beside it
