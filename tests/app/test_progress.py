"""The progress bar (tqdm, nvpipe.app.progress): the time left from recent frames, fed a fake
clock as the runner feeds it; batch labels."""

import io
import shutil

import av
import pytest

from nvpipe.app.cli import main
from nvpipe.app.progress import RATE_WINDOW_S, ProgressBar


def _feed(bar, frames, total, *, first_s=5.0, each_s=0.1):
    """The runner's calls: the first frame after ``first_s`` (weights, first network call),
    then one every ``each_s``."""
    for done in range(1, frames + 1):
        bar(done, total, first_s + (done - 1) * each_s)


def test_time_left_is_not_inflated_by_the_warm_up():
    bar = ProgressBar("clip.mp4", stream=io.StringIO())
    _feed(bar, 20, 120)
    left = bar.seconds_left()
    whole_run_average = 100 / (20 / (5.0 + 19 * 0.1))  # 34.5 s: what done/elapsed gave
    assert 10.0 / 2 <= left <= 10.0 * 2, left  # 100 frames at 0.1 s
    assert left == pytest.approx(10.0, rel=0.01)
    assert whole_run_average > 3 * left
    text = bar.render()
    assert "20/120" in text and "00:10" in text, text  # tqdm shows our estimate
    bar.finish()


def test_time_left_unknown_until_a_second_frame():
    bar = ProgressBar("clip.mp4", stream=io.StringIO())
    bar(1, 50, 5.0)
    assert bar.seconds_left() is None
    assert "?" in bar.render()
    bar(2, 50, 5.2)
    assert bar.seconds_left() == pytest.approx(48 * 0.2)


def test_time_left_follows_a_change_of_speed():
    bar = ProgressBar("clip.mp4", stream=io.StringIO())
    _feed(bar, 50, 1000)  # 0.1 s a frame
    elapsed = 5.0 + 49 * 0.1
    done = 50
    for _ in range(int(RATE_WINDOW_S / 0.5) + 2):  # then 0.5 s a frame for a whole window
        done += 1
        elapsed += 0.5
        bar(done, 1000, elapsed)
    assert bar.seconds_left() == pytest.approx((1000 - done) * 0.5, rel=0.05)


def test_unknown_total_shows_frames_and_rate():
    stream = io.StringIO()
    bar = ProgressBar("live", stream=stream)
    _feed(bar, 12, None)
    assert bar.seconds_left() is None
    assert "12" in bar.render() and "frames/s" in bar.render()
    bar.finish()
    assert stream.getvalue().endswith("\n")


def test_batch_shows_clip_k_of_n(small_clip, weights_env, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(small_clip, clips / name)
    assert main(["run", str(clips), str(tmp_path / "out"), "--ratio", "0.5",
                 "--frames", "3"]) == 0
    err = capsys.readouterr().err
    assert "[1/2] a.mp4" in err and "[2/2] b.mp4" in err, err
    assert "3/3" in err, err  # --frames reaches each clip of the batch
    assert "2 converted" in err
    for name in ("a.mp4", "b.mp4"):
        with av.open(str(tmp_path / "out" / name)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 3
