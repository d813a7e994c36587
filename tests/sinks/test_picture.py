"""A single picture in gives a single picture out: nvpipe run photo.jpg cut.png."""

import subprocess
import sys

import numpy as np
import pytest


def _nvpipe(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nvpipe", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def photo(small_clip, tmp_path):
    import av

    with av.open(str(small_clip)) as container:
        picture = next(container.decode(video=0)).to_image()
    path = tmp_path / "photo.jpg"
    picture.save(path, quality=95)
    return path


def test_photo_to_rgba_png(photo, weights_env, tmp_path):
    from PIL import Image

    done = _nvpipe("run", photo, tmp_path / "cut.png", "--ratio", "0.5", "-q")
    assert done.returncode == 0, done.stderr
    cut = Image.open(tmp_path / "cut.png")
    assert cut.format == "PNG" and cut.mode == "RGBA" and cut.size == (144, 256)
    alpha = np.asarray(cut)[..., 3]
    assert (alpha < 10).mean() > 0.3 and (alpha > 245).mean() > 0.05  # a cut-out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.png", "photo.jpg"]


def test_picture_kinds_and_formats(photo, weights_env, tmp_path):
    from PIL import Image

    done = _nvpipe("run", photo, tmp_path / "over.jpg", "--background", "rebeccapurple",
                   "--alpha", tmp_path / "matte.png", "--ratio", "0.5", "-q")
    assert done.returncode == 0, done.stderr
    over, matte = Image.open(tmp_path / "over.jpg"), Image.open(tmp_path / "matte.png")
    assert (over.format, over.mode, matte.mode) == ("JPEG", "RGB", "L")
    clear = np.asarray(matte) < 5
    colour = np.asarray(over).astype(int)[clear].mean(0)
    assert np.abs(colour - (102, 51, 153)).max() < 8
    refused = _nvpipe("run", photo, tmp_path / "cut.jpg", "--type", "rgba")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and len(lines) == 1 and "no alpha" in lines[0]


def test_a_video_gives_a_picture_with_frames_1_only(small_clip, weights_env, tmp_path):
    one = _nvpipe("run", small_clip, tmp_path / "first.png", "--frames", "1", "--ratio", "0.5", "-q")
    assert one.returncode == 0, one.stderr
    many = _nvpipe("run", small_clip, tmp_path / "all.png", "--ratio", "0.5", "-q")
    lines = [line for line in many.stderr.splitlines() if line.strip()]
    assert many.returncode == 1 and len(lines) == 1 and "--frames 1" in lines[0], many.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png"]
