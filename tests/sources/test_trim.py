"""Trimming (``--start``, ``--duration``, ``--frames``) and ``--fps`` for picture sequences:
the source wrapper against the untrimmed frames, and the CLI's outputs decoded (frames,
timestamps, audio)."""

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from conftest import decoded_frames, footage_clip
from nvpipe.app.cli import main
from nvpipe.errors import InputError
from nvpipe.sources import open_source
from nvpipe.sources.pyav import PyAVSource
from nvpipe.sources.trim import TrimmedSource, parse_time

RATE = 24
TONE_SWITCH = 0.75  # seconds: the test clip's tone goes from LOW_HZ to HIGH_HZ here
LOW_HZ, HIGH_HZ = 300.0, 1200.0


@pytest.mark.parametrize("text,seconds", [("12.5", 12.5), ("90", 90.0), ("0", 0.0),
                                          ("01:30", 90.0), ("1:02:03.25", 3723.25),
                                          ("00:00:00.500", 0.5)])
def test_parse_time_takes_seconds_and_clock_times(text, seconds):
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "00:61", "1:00:75", "nan", "inf"])
def test_parse_time_refuses_what_is_no_time(text):
    with pytest.raises(ValueError):
        parse_time(text)


class _NoSeek:
    """A source without ``seek``: TrimmedSource decodes and drops the frames before start."""

    def __init__(self, source):
        self.source, self.info, self.damage = source, source.info, None

    def __iter__(self):
        yield from self.source
        self.damage = self.source.damage

    def close(self):
        self.source.close()


def _frames(source):
    with source:
        return [(frame.pts, frame.index, frame.data.clone()) for frame in source]


@pytest.mark.parametrize("seek", [True, False], ids=["seek", "decode-forward"])
@pytest.mark.parametrize("start,duration,frames", [(0.5, None, None), (0.6, 0.5, None),
                                                   (1.0, None, 5), (0.0, 0.25, None),
                                                   (0.0, None, 3), (1.99, None, None)])
def test_trimmed_frames_are_the_inputs_from_start(footage, seek, start, duration, frames):
    # The shared clip: 50 frames at 24 fps, a keyframe every 12 (so seeking lands before
    # the start and decodes forward).
    path = str(footage("person_fullbody_360x640.mp4"))
    everything = _frames(PyAVSource(path))
    time_base = PyAVSource(path).info.time_base
    first = next(i for i, (pts, _, _) in enumerate(everything)
                 if pts * time_base >= start - 1e-6)
    last = len(everything)
    if duration is not None:
        last = next((i for i, (pts, _, _) in enumerate(everything)
                     if pts * time_base >= start + duration - 1e-6), last)
    if frames is not None:
        last = min(last, first + frames)
    expected = everything[first:last]
    inner = PyAVSource(path) if seek else _NoSeek(PyAVSource(path))
    trimmed = TrimmedSource(inner, start=start, duration=duration, frames=frames)
    assert trimmed.info.frame_count == len(expected)
    got = _frames(trimmed)
    assert len(got) == len(expected) > 0
    shift = expected[0][0] if start > 0 else 0
    assert trimmed.info.start_offset == pytest.approx(float(shift * time_base))
    for index, ((pts, number, data), (want_pts, _, want)) in enumerate(zip(got, expected)):
        assert number == index
        assert pts == want_pts - shift  # the output's clock starts at the first frame kept
        assert bool((data == want).all()), f"frame {index} differs from input frame {first + index}"
    if start > 0:
        assert got[0][0] == 0


def test_start_past_the_end_is_one_clear_error(footage):
    path = str(footage("person_fullbody_360x640.mp4"))
    for inner in (PyAVSource(path), _NoSeek(PyAVSource(path))):
        with pytest.raises(InputError, match="past the end"):
            TrimmedSource(inner, start=2.5)


def test_trim_of_a_picture_sequence_uses_its_rate(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(folder / f"{i:03d}.png")
    source = TrimmedSource(open_source(str(folder), fps=5), start=0.4, duration=0.8)
    assert source.info.frame_count == 4
    levels = [int(frame.data[0, 0, 0]) for frame in source]
    assert levels == [40, 60, 80, 100]  # pictures 2..5: 0.4 s to 1.2 s at 5 fps


# -- end to end ---------------------------------------------------------------------------
def _clip_with_tone(source, path, *, frames: int = 48, size=(144, 256)):
    """``frames`` frames of ``source`` at 24 fps (a keyframe every 6, no B-frames) and mono AAC audio
    as long, LOW_HZ before TONE_SWITCH and HIGH_HZ after (so the audio says where it is)."""
    seconds = frames / RATE
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=RATE, options={"crf": "8", "preset": "ultrafast",
                                                              "g": "6", "bf": "0"})
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for index, frame in enumerate(inp.decode(video=0)):
            if index == frames:
                break
            picture = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            picture.pts, picture.time_base = index, Fraction(1, RATE)
            out.mux(video.encode(picture))
        out.mux(video.encode())
        t = np.arange(int(seconds * 48000)) / 48000
        tone = np.where(t < TONE_SWITCH, np.sin(2 * np.pi * LOW_HZ * t),
                        np.sin(2 * np.pi * HIGH_HZ * t)).astype(np.float32) * 0.5
        for begin in range(0, len(tone), 1024):
            block = av.AudioFrame.from_ndarray(tone[None, begin:begin + 1024], format="fltp",
                                               layout="mono")
            block.sample_rate, block.pts = 48000, begin
            block.time_base = Fraction(1, 48000)
            out.mux(audio.encode(block))
        out.mux(audio.encode())
    return path


def _cut_at(clip, path, frame: int):
    """The video of ``clip`` from ``frame`` (a keyframe) on, packets copied, timestamps from 0."""
    with av.open(str(clip)) as inp, av.open(str(path), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        shift = None
        for packet in inp.demux(stream):
            if packet.pts is None or packet.pts < frame * Fraction(1, RATE) / stream.time_base:
                continue
            if shift is None:
                assert packet.is_keyframe
                shift = packet.pts
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = copy
            out.mux(packet)
    return path


def _video(path):
    decoded = decoded_frames(path)
    return [t for t, _ in decoded], [picture for _, picture in decoded]


def _audio(path):
    """(first sample's time, samples) of the first audio stream, decoded."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        blocks, first = [], None
        for frame in container.decode(stream):
            if first is None:
                first = float(frame.pts * frame.time_base)
            blocks.append(frame.to_ndarray()[0])
        return first, np.concatenate(blocks), stream.rate


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


@pytest.fixture(scope="module")
def tone_clip(tmp_path_factory):
    return footage_clip(tmp_path_factory, "person_fullbody_360x640.mp4", "talk.mp4",
                        make=_clip_with_tone)


@pytest.mark.slow
def test_start_and_duration_trim_video_and_audio(tone_clip, weights_env, tmp_path):
    whole, trimmed = tmp_path / "whole.mp4", tmp_path / "trimmed.mp4"
    assert main(["run", str(tone_clip), str(whole), "-q", "--ratio", "0.5"]) == 0
    assert main(["run", str(tone_clip), str(trimmed), "-q", "--ratio", "0.5",
                 "--start", "00:00:01", "--duration", "0.5"]) == 0
    times, pictures = _video(trimmed)
    whole_times, whole_pictures = _video(whole)
    assert len(whole_pictures) == 48
    assert len(pictures) == 12  # 0.5 s at 24 fps
    assert times == [Fraction(i, RATE) for i in range(12)]  # begins at 0
    # The frames are the input's from 1 s: the same as converting the clip cut there (at a
    # keyframe, packets copied, so the same pixels decode), exactly.
    cut, cut_out = _cut_at(tone_clip, tmp_path / "cut.mp4", 24), tmp_path / "cut_out.mp4"
    assert main(["run", str(cut), str(cut_out), "-q", "--ratio", "0.5", "--frames", "12"]) == 0
    cut_times, cut_pictures = _video(cut_out)
    assert cut_times == times
    for index, (a, b) in enumerate(zip(pictures, cut_pictures)):
        assert np.array_equal(a, b), f"frame {index}"
    assert not np.array_equal(pictures[0], whole_pictures[0])
    # Audio: from 1 s of the input (the high tone), shifted to 0, as long as the video.
    first, samples, rate = _audio(trimmed)
    assert abs(first) < 0.03
    assert len(samples) / rate == pytest.approx(0.5, abs=0.05)
    assert _dominant_hz(samples[: rate // 5], rate) == pytest.approx(HIGH_HZ, abs=20)


def test_start_before_the_tone_switch_keeps_what_follows(tone_clip, weights_env, tmp_path):
    out = tmp_path / "out.mkv"
    assert main(["run", str(tone_clip), str(out), "-q", "--ratio", "0.5", "--start", "0.25"]) == 0
    times, pictures = _video(out)
    assert len(pictures) == 42 and times[0] == 0
    first, samples, rate = _audio(out)
    assert len(samples) / rate == pytest.approx(1.75, abs=0.05)
    switch = int((TONE_SWITCH - 0.25) * rate)  # the switch moved 0.25 s earlier
    assert _dominant_hz(samples[switch - rate // 5: switch - rate // 50], rate) == pytest.approx(LOW_HZ, abs=20)
    assert _dominant_hz(samples[switch + rate // 50: switch + rate // 5], rate) == pytest.approx(HIGH_HZ, abs=20)


def test_frames_gives_n_frames_and_audio_as_long(tone_clip, weights_env, tmp_path):
    out = tmp_path / "out.mp4"
    assert main(["run", str(tone_clip), str(out), "-q", "--ratio", "0.5", "--frames", "6"]) == 0
    times, pictures = _video(out)
    assert len(pictures) == 6
    _, samples, rate = _audio(out)
    assert len(samples) / rate == pytest.approx(6 / RATE, abs=0.05)
    assert _dominant_hz(samples, rate) == pytest.approx(LOW_HZ, abs=30)


def test_fps_and_start_on_a_picture_sequence(small_clip, weights_env, tmp_path):
    """A sequence at --fps 4 trimmed at 0.5 s is the conversion of the sequence without its
    first 2 pictures, exactly (same pixels, the matte's memory starts at the same picture)."""
    with av.open(str(small_clip)) as container:
        pictures = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    whole, tail = tmp_path / "whole", tmp_path / "tail"
    for folder, first in ((whole, 0), (tail, 2)):
        folder.mkdir()
        for i, picture in enumerate(pictures[first:]):
            Image.fromarray(picture).save(folder / f"{i:05d}.png")
    trimmed, reference = tmp_path / "trimmed.mkv", tmp_path / "reference.mkv"
    assert main(["run", str(whole), str(trimmed), "-q", "--ratio", "0.5", "--fps", "4",
                 "--start", "0.5", "--codec", "h264", "--crf", "0"]) == 0
    assert main(["run", str(tail), str(reference), "-q", "--ratio", "0.5", "--fps", "4",
                 "--codec", "h264", "--crf", "0"]) == 0
    times, got = _video(trimmed)
    reference_times, want = _video(reference)
    assert len(got) == len(pictures) - 2
    assert [round(float(t), 3) for t in times] == [i / 4 for i in range(len(got))]  # 4 fps
    assert times == reference_times
    for a, b in zip(got, want):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("args,message", [
    (["--start", "9"], "past the end"),
    (["--start", "-1"], "start must be 0 or more seconds"),
    (["--duration", "0"], "duration must be more than 0"),
    (["--start", "1:75"], "not a time"),
    (["--frames", "0"], "frames must be at least 1"),
    (["--fps", "25"], "--fps is for picture-sequence inputs"),
    (["--fps", "-3"], "fps must be positive"),
])
def test_bad_trims_are_one_line(args, message, small_clip, weights_env, tmp_path, capsys):
    try:
        code = main(["run", str(small_clip), str(tmp_path / "out.mp4"), *args])
    except SystemExit as usage_error:  # argparse's: a bad value
        code = usage_error.code
    assert code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out.mp4").exists()
