"""`nvpipe preview`: a contact sheet of a few frames, each after warm-up frames reached by
seeking; its cost does not grow with the clip."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import footage_clip, make_clip
from nvpipe.app.preview import (HEADER, THUMB_WIDTH, WARMUP_FRAMES, make_preview,
                                sample_frames)


def test_sample_frames_spread_after_the_warm_up():
    assert sample_frames(100, 4, 8) == [8, 38, 69, 99]
    assert sample_frames(5, 4, 8) == [4]  # shorter than the warm-up: the last frame
    assert sample_frames(10, 4, 8) == [8, 9]
    assert sample_frames(1, 3, 8) == [0]
    assert sample_frames(0, 3, 8) == []
    assert WARMUP_FRAMES == 8


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return footage_clip(tmp_path_factory, "person_fullbody_360x640.mp4", "long.mp4", frames=48,
                        size=(72, 128), timed=True)


def test_preview_runs_a_few_frames_not_the_clip(long_clip, tmp_path, official_network,
                                                monkeypatch):
    from nvpipe.engine.matting import MattingStage

    calls = []
    original = MattingStage.__call__

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MattingStage, "__call__", counting)
    out = tmp_path / "sheet.png"
    result = make_preview(str(long_clip), str(out), samples=3, warmup=4,
                          network=official_network)
    assert result.frames == [4, 26, 47]
    assert len(calls) == 3 * (4 + 1) < 48  # seeks: each sample and its warm-up only
    sheet = Image.open(out)
    row_height = HEADER + round(128 * THUMB_WIDTH / 72)
    assert sheet.size == (3 * THUMB_WIDTH, HEADER + 3 * row_height)
    pixels = np.asarray(sheet.convert("RGB"))
    # Each row: input | alpha | composite; the alpha panel is grey (r = g = b), and white
    # somewhere (the person).
    top = HEADER + HEADER + 30
    alpha = pixels[top:top + row_height - HEADER - 30, THUMB_WIDTH + 5:2 * THUMB_WIDTH - 5]
    assert (alpha[..., 0] == alpha[..., 1]).all() and alpha.max() > 200
    assert not result.ratio_given and result.warmup == 4


def test_preview_marks_the_subject(tmp_path, official_network, footage):
    clip = make_clip(footage("four_people_1080p.mp4"), tmp_path / "four.mp4", frames=12,
                     size=(320, 180), timed=True)
    out = tmp_path / "sheet.png"
    result = make_preview(str(clip), str(out), samples=2, warmup=3, subject="main",
                          network=official_network)
    assert result.subject.startswith("subject: the largest person")
    assert result.absent == []
    sheet = np.asarray(Image.open(out).convert("RGB"))
    red = (sheet[..., 0] > 200) & (sheet[..., 1] < 80) & (sheet[..., 2] < 80)
    assert red.sum() > 50  # the subject's box


def test_preview_command_line(long_clip, tmp_path, weights_env):
    out = tmp_path / "p.png"
    done = subprocess.run([sys.executable, "-m", "nvpipe.app.cli", "preview", str(long_clip),
                           str(out), "--frames", "2", "--warmup", "2", "--ratio", "0.5"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "each after 2 warm-up frames" in done.stderr and "ratio 0.5 (given)" in done.stderr
    assert Image.open(out).size[0] == 3 * THUMB_WIDTH
    bad = subprocess.run([sys.executable, "-m", "nvpipe.app.cli", "preview", str(long_clip),
                          str(tmp_path / "p.jpg")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "PNG" in bad.stderr and "Traceback" not in bad.stderr
