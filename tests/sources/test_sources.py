"""Sources: the NV12/P016 layout, colour, rotation, timing, image sequences, bad input."""

import hashlib
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from nvpipe.errors import InputError
from nvpipe.frames import ColorSpec
from nvpipe.sources import open_source
from nvpipe.sources.images import ImageSequenceSource
from nvpipe.sources.pyav import PyAVSource


def _write_planar_clip(path, planes_per_frame, pix_fmt, pts_list, time_base, codec="ffv1"):
    """Encodes known YUV planes losslessly (FFV1 takes odd sizes and 10 bits)."""
    height, width = planes_per_frame[0][0].shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        for planes, pts in zip(planes_per_frame, pts_list):
            frame = av.VideoFrame(width, height, pix_fmt)
            for plane, values in zip(frame.planes, planes):
                itemsize = values.dtype.itemsize
                rows = np.zeros((plane.height, plane.line_size // itemsize), values.dtype)
                rows[: values.shape[0], : values.shape[1]] = values
                plane.update(rows.tobytes())
            frame.pts, frame.time_base = pts, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _random_planes(rng, width, height, high=256, dtype=np.uint8, chroma_w=None, chroma_h=None):
    cw = chroma_w or math.ceil(width / 2)
    ch = chroma_h or math.ceil(height / 2)
    return (rng.integers(0, high, (height, width)).astype(dtype),
            rng.integers(0, high, (ch, cw)).astype(dtype),
            rng.integers(0, high, (ch, cw)).astype(dtype))


@pytest.mark.parametrize("width,height", [(63, 47), (64, 48)])
def test_nv12_layout_holds_the_decoded_planes(tmp_path, width, height):
    rng = np.random.default_rng()
    planes = [_random_planes(rng, width, height) for _ in range(3)]
    path = tmp_path / "planes.mkv"
    _write_planar_clip(path, planes, "yuv420p", [0, 1, 2], Fraction(1, 30))
    with open_source(path) as source:
        frames = list(source)
    assert len(frames) == 3
    cw, ch = math.ceil(width / 2), math.ceil(height / 2)
    for frame, (y, u, v) in zip(frames, planes):
        data = frame.data.numpy()
        assert frame.pix_fmt == "nv12" and data.dtype == np.uint8
        assert data.shape == (height + ch, 2 * cw)
        np.testing.assert_array_equal(data[:height, :width], y)
        np.testing.assert_array_equal(data[height:, 0::2], u)
        np.testing.assert_array_equal(data[height:, 1::2], v)
        if 2 * cw > width:  # the padding column repeats the last one
            np.testing.assert_array_equal(data[:height, width], y[:, -1])


def test_p016_is_msb_aligned_10_bit(tmp_path):
    rng = np.random.default_rng()
    width, height = 33, 21
    planes = [_random_planes(rng, width, height, high=1024, dtype=np.uint16) for _ in range(2)]
    path = tmp_path / "ten_bit.mkv"
    _write_planar_clip(path, planes, "yuv420p10le", [0, 1], Fraction(1, 30))
    with open_source(path) as source:
        assert source.info.bit_depth == 10
        frames = list(source)
    for frame, (y, u, v) in zip(frames, planes):
        data = frame.data
        assert frame.pix_fmt == "p016" and data.dtype == torch.uint16
        data = data.to(torch.int32).numpy()
        np.testing.assert_array_equal(data[:height, :width], y.astype(np.int32) << 6)
        np.testing.assert_array_equal(data[height:, 0::2], u.astype(np.int32) << 6)
        np.testing.assert_array_equal(data[height:, 1::2], v.astype(np.int32) << 6)


def test_422_is_resampled_to_420_with_luma_untouched(tmp_path):
    rng = np.random.default_rng()
    width, height = 48, 32
    smooth = lambda h, w: np.clip(  # noqa: E731 - low-frequency chroma, any filter agrees
        128 + 60 * np.sin(np.add.outer(np.arange(h) / 7.0, np.arange(w) / 5.0) + rng.uniform(0, 6)),
        0, 255).astype(np.uint8)
    planes = [(rng.integers(16, 236, (height, width)).astype(np.uint8),
               smooth(height, width // 2), smooth(height, width // 2))]
    path = tmp_path / "four_two_two.mkv"
    _write_planar_clip(path, planes, "yuv422p", [0], Fraction(1, 30))
    with open_source(path) as source:
        frame = next(iter(source))
    data = frame.data.numpy().astype(np.int32)
    y, u, v = planes[0]
    assert frame.pix_fmt == "nv12" and data.shape == (height + height // 2, width)
    np.testing.assert_array_equal(data[:height], y)
    for got, plane in ((data[height:, 0::2], u), (data[height:, 1::2], v)):
        pair_mean = (plane[0::2].astype(np.int32) + plane[1::2]) / 2
        assert np.abs(got - pair_mean).max() <= 6  # swscale's filter vs a plain pair mean


def test_matches_swscale_nv12_on_real_footage(footage):
    path = footage("person_fullbody_360x640.mp4")
    with av.open(str(path)) as container:
        expected = [f.reformat(format="nv12").to_ndarray() for _, f in zip(range(4), container.decode(video=0))]
    with open_source(path) as source:
        got = [f.data.numpy() for _, f in zip(range(4), source)]
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("name,matrix,full,bits,pix_fmt", [
    ("bt601_limited_range.mp4", "bt601", False, 8, "nv12"),
    ("bt601_full_range.mp4", "bt601", True, 8, "nv12"),
    ("bt709_full_range.mp4", "bt709", True, 8, "nv12"),
    ("bt2020_10bit.mp4", "bt2020", False, 10, "p016"),
])
def test_colour_metadata(footage, name, matrix, full, bits, pix_fmt):
    with open_source(footage(f"color/{name}")) as source:
        assert source.info.color == ColorSpec(matrix, full)
        assert source.info.bit_depth == bits
        frame = next(iter(source))
        assert frame.pix_fmt == pix_fmt and frame.color == ColorSpec(matrix, full)


def test_untagged_colour_follows_the_height_convention(tmp_path):
    rng = np.random.default_rng()
    for height, matrix in ((120, "bt601"), (720, "bt709")):
        path = tmp_path / f"untagged_{height}.mkv"
        _write_planar_clip(path, [_random_planes(rng, 16, height)], "yuv420p", [0], Fraction(1, 30))
        with open_source(path) as source:
            assert source.info.color == ColorSpec(matrix, False)


def test_rotation_from_the_display_matrix(footage):
    path = footage("color/nasa_13013_rotated.mp4")
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        # PyAV 18.1.1's side data iterates its types (keys), 18.1.0's the entries themselves
        side = frame.side_data
        entries = [entry if hasattr(entry, "type") else side[entry] for entry in side]
        matrix = next(np.frombuffer(bytes(sd), np.int32) for sd in entries
                      if "DISPLAYMATRIX" in str(sd.type)) / 65536.0
    # FFmpeg's matrix maps (x, y) -> (a x + c y, b x + d y) with y pointing down; the angle
    # the picture turns on screen (clockwise positive) is atan2(b, a).
    clockwise = round(math.degrees(math.atan2(matrix[1], matrix[0]))) % 360
    with open_source(path) as source:
        assert source.info.rotation == clockwise
        assert source.info.rotation in (90, 270)
        assert source.info.display_size == (source.info.height, source.info.width)
    with open_source(footage("color/bt601_limited_range.mp4")) as source:
        assert source.info.rotation == 0


def test_timing_matches_the_container_and_variable_rate_is_kept(tmp_path, footage):
    path = footage("color/nasa_13013.mp4")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        expected = [f.pts for f in container.decode(stream)]
        time_base, rate = stream.time_base, stream.average_rate
    with open_source(path) as source:
        info = source.info
        pts = [f.pts for f in source]
    assert pts == expected and info.time_base == time_base and info.fps == rate
    assert info.frame_count == len(expected) and info.has_audio
    rng = np.random.default_rng()
    vfr = [0, 1, 3, 4, 9, 10, 17]  # irregular gaps, time base 1/90
    clip = tmp_path / "vfr.mkv"
    _write_planar_clip(clip, [_random_planes(rng, 32, 16) for _ in vfr], "yuv420p", vfr,
                       Fraction(1, 90))
    with open_source(clip) as source:
        times = [f.pts * f.time_base for f in source]
    assert len(times) == len(vfr)  # Matroska stores milliseconds: within half of one
    assert max(abs(t - Fraction(p, 90)) for t, p in zip(times, vfr)) <= Fraction(1, 2000)


def test_missing_text_and_audio_only_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_source(tmp_path / "absent.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(InputError, match="not a readable video"):
        open_source(text)
    audio = tmp_path / "tone.m4a"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        t = np.arange(8000) / 8000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        open_source(audio)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_truncated_header_at_the_end(tmp_path, footage):
    # This clip keeps its index ('moov') after the data: half the file has no index.
    data = footage("color/bt601_limited_range.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    before = _digest(cut)
    with pytest.raises(InputError, match="not a readable video"):
        open_source(cut)
    assert _digest(cut) == before


def test_truncated_data_yields_what_decodes_then_says_what_was_lost(tmp_path, footage):
    # Index first, data after: half the file opens but holds half the declared frames.
    data = footage("person_fullbody_360x640.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    before = _digest(cut)
    with open_source(cut) as source:
        assert source.info.frame_count == 50 and source.damage is None
        decoded = sum(1 for _ in source)
        assert 0 < decoded < 50
        assert source.damage.startswith(
            f"{50 - decoded} of 50 frames could not be decoded (truncated: it holds 25 of the "
            f"50 frames its header declares")
    assert _digest(cut) == before


def test_a_damaged_packet_is_skipped_and_the_rest_decodes(tmp_path, footage):
    from conftest import zero_packet

    damaged = zero_packet(footage("person_fullbody_360x640.mp4"), tmp_path / "damaged.mp4")
    with open_source(damaged) as source:
        assert sum(1 for _ in source) == 49  # it stopped at the first bad packet before
        assert source.damage == "1 of 50 frames could not be decoded (1 damaged packet skipped)"


def _write_png(path, array):
    fmt = {3: "rgb24", 4: "rgba"}[array.shape[2]]
    frame = av.VideoFrame.from_ndarray(array, format=fmt)
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = frame.width, frame.height, fmt, 1
    path.write_bytes(b"".join(bytes(p) for p in encoder.encode(frame)))


def test_image_directory_and_pattern(tmp_path):
    rng = np.random.default_rng()
    folder = tmp_path / "frames"
    folder.mkdir()
    pictures = [rng.integers(0, 256, (21, 35, 3), dtype=np.uint8) for _ in range(11)]
    for i, picture in enumerate(pictures):  # 2 before 10: natural order, not text order
        _write_png(folder / f"f{i}.png", picture)
    (folder / "readme.txt").write_text("ignored")
    with open_source(folder, fps=25) as source:
        assert source.info.frame_count == 11 and source.info.time_base == Fraction(1, 25)
        frames = list(source)
    for i, (frame, picture) in enumerate(zip(frames, pictures)):
        assert frame.pix_fmt == "rgb24" and frame.pts == i and frame.index == i
        np.testing.assert_array_equal(frame.data.numpy(), picture)

    numbered = tmp_path / "numbered"
    numbered.mkdir()
    rgba = [rng.integers(0, 256, (8, 6, 4), dtype=np.uint8) for _ in range(3)]
    for i, picture in enumerate(rgba):
        _write_png(numbered / f"shot_{i + 7:04d}.png", picture)
    _write_png(numbered / "other_0001.png", rgba[0])
    with open_source(str(numbered / "shot_%04d.png")) as source:
        assert source.info.fps == 30
        frames = list(source)
    assert len(frames) == 3
    for frame, picture in zip(frames, rgba):
        assert frame.pix_fmt == "rgba"
        np.testing.assert_array_equal(frame.data.numpy(), picture)


def test_image_sequence_errors(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _write_png(folder / "0.png", np.zeros((8, 8, 3), np.uint8))
    _write_png(folder / "1.png", np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(InputError, match="size differs"):
        list(ImageSequenceSource(str(folder)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no pictures"):
        open_source(empty)
    with pytest.raises(InputError):
        open_source(str(tmp_path / "nowhere" / "%05d.png"))


def test_source_is_iterated_once_and_closes(footage):
    source = PyAVSource(footage("color/h265_video.mp4"))
    frames = list(source)
    assert len(frames) == source.info.frame_count
    with pytest.raises(RuntimeError):
        list(source)
    source.close()
