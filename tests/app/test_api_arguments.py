"""Issue 22: the Python API refuses bad arguments in one line (ValueError or TypeError)
naming the argument and what it accepts, before anything fails deep inside torch."""

import numpy as np
import pytest
import torch

from nvpipe import Job, MattingSession, convert_video


@pytest.mark.parametrize("argument, value, error, words", [
    ("downsample_ratio", "abc", TypeError, "downsample_ratio must be a number in (0, 1]"),
    ("downsample_ratio", 0, ValueError, "downsample_ratio must be in (0, 1]"),
    ("seq_chunk", "4", TypeError, "seq_chunk must be a whole number >= 1"),
    ("input_resize", "640x360", TypeError, "input_resize must be (width, height)"),
    ("input_resize", (99999, 99999), ValueError, "each side at most 8192 pixels"),
    ("output_video_mbps", -1, ValueError, "output_video_mbps must be above 0"),
])
def test_convert_video_names_the_bad_argument(small_clip, tmp_path, argument, value, error, words):
    out = tmp_path / "out.mp4"
    with pytest.raises(error) as raised:
        convert_video(input_source=str(small_clip), output_composition=str(out),
                      progress=False, **{argument: value})
    assert words in str(raised.value) and "\n" not in str(raised.value)
    assert not out.exists()


@pytest.mark.parametrize("field, value, words", [
    ("resize", (1, 20000), "each side at most 8192 pixels"),
    ("fps", 1e9, "fps must be in (0, 1000]"),
    ("ratio", "0.5", "ratio must be a number"),
    ("chunk", 2.5, "chunk must be a whole number"),
])
def test_job_checks_the_same_limits(field, value, words):
    with pytest.raises((ValueError, TypeError), match=None) as raised:
        Job("in.mp4", **{field: value})
    assert words in str(raised.value)


@pytest.mark.parametrize("ratio", [0, -1, float("nan"), "0.5"])
def test_session_refuses_a_ratio_outside_0_1(ratio, official_network):
    with pytest.raises((ValueError, TypeError), match="ratio must be"):
        MattingSession(ratio=ratio, network=official_network)


@pytest.fixture
def session(official_network):
    return MattingSession(network=official_network)


@pytest.mark.parametrize("frame, error, words", [
    (np.zeros((0, 0, 3), np.uint8), ValueError, "frame: empty"),
    (torch.zeros(3, 0, 5), ValueError, "frame: empty"),
    (torch.full((3, 8, 8), 200.0), ValueError, "float values must be in [0, 1]"),
    (torch.zeros((3, 8, 8), dtype=torch.int64), TypeError, "uint8 (0..255) or float (0..1)"),
    (torch.full((3, 8, 8), float("nan")), ValueError, "float values must be in [0, 1]"),
    (torch.zeros(3, 1, 20000), ValueError, "each side at most 8192 pixels"),
])
def test_session_refuses_frames_it_cannot_matte(session, frame, error, words):
    with pytest.raises(error) as raised:
        session.process(frame)
    assert words in str(raised.value)
    assert session.frames == 0


def test_session_given_a_ratio_that_leaves_no_pixels_says_so(official_network):
    session = MattingSession(ratio=0.25, network=official_network)
    with pytest.raises(ValueError, match="leaves no pixels of a 2048x2 frame.*ratio=1"):
        session.process(torch.zeros(3, 2, 2048))
    assert MattingSession(network=official_network).process(
        torch.zeros(3, 2, 2048)).alpha.shape == (1, 2, 2048)  # the automatic ratio: 0.5
