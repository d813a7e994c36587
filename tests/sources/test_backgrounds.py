"""Backgrounds: colour parsing, cover resizing, looping videos, bad specs."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from nvpipe.sources.backgrounds import (COLOR_NAMES, ImageBackground, SolidBackground, VideoBackground,
                                open_background, parse_color)
from nvpipe.errors import NvpipeError


def test_parse_color_forms_agree():
    rng = np.random.default_rng()
    for _ in range(20):
        r, g, b = (int(v) for v in rng.integers(0, 256, 3))
        expected = (r / 255, g / 255, b / 255)
        assert parse_color(f"#{r:02x}{g:02x}{b:02X}") == pytest.approx(expected, abs=1e-12)
        assert parse_color(f"{r},{g}, {b}") == pytest.approx(expected, abs=1e-12)
        assert parse_color(f"{r / 255:.6f},{g / 255:.6f},{b / 255:.6f}") == pytest.approx(expected, abs=1e-6)
    assert parse_color("#0f0") == parse_color("#00ff00") == parse_color("green") == (0.0, 1.0, 0.0)
    assert parse_color(" White ") == (1.0, 1.0, 1.0)
    for name, hex_value in COLOR_NAMES.items():
        assert parse_color(name) == parse_color(hex_value)


@pytest.mark.parametrize("text", ["#12345", "#ggg", "chartreuse-ish", "0,256,0", "1,2", "0.5,1.5,0", ""])
def test_parse_color_rejects_with_the_value(text):
    with pytest.raises(NvpipeError) as error:
        parse_color(text)
    assert repr(text) in str(error.value)


def test_solid_background():
    background = open_background("#ff8000", 7, 5)
    assert isinstance(background, SolidBackground)
    assert background.color == pytest.approx((1.0, 128 / 255, 0.0))
    frame = background.frame(3)
    assert frame.dtype == torch.uint8 and frame.shape == (3, 5, 7)
    assert frame[:, 2, 4].tolist() == [255, 128, 0]


def _write_png(path, rgb):
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = frame.width, frame.height, "rgb24", 1
    path.write_bytes(b"".join(bytes(p) for p in encoder.encode(frame)))


RED, GREEN, BLUE = (230, 20, 30), (20, 200, 40), (30, 40, 220)


def test_image_cover_crops_the_centre(tmp_path):
    # 40x20 picture, columns 0-11 red, 12-29 green, 30-39 blue. Covering 30x30 scales by
    # 1.5 to 60x30 (red 0-17, green 18-44, blue 45-59) and keeps columns 15-44:
    # output columns 0-2 red, 3-29 green.
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :12], wide[:, 12:30], wide[:, 30:] = RED, GREEN, BLUE
    _write_png(tmp_path / "wide.png", wide)
    background = open_background(str(tmp_path / "wide.png"), 30, 30)
    assert isinstance(background, ImageBackground) and background.color is None
    out = background.frame(0).numpy().astype(np.int32)
    assert out.shape == (3, 30, 30)
    expected = np.zeros((3, 30, 30), np.int32)
    expected[:, :, :3] = np.array(RED)[:, None, None]
    expected[:, :, 3:] = np.array(GREEN)[:, None, None]
    # Bicubic rings (16 levels here) and reaches ~3 output pixels either side of an edge.
    assert np.abs(out[:, :, 6:26] - expected[:, :, 6:26]).max() <= 3
    assert np.abs(out[:, :, 0] - expected[:, :, 0]).max() <= 20
    assert background.frame(9) is background.frame(0)
    # Tall picture, 20x40 rows 0-9 blue, 10-39 green, into 30x15: scale 1.5 -> 30x60,
    # rows 22-36 kept: all green.
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:10], tall[10:] = BLUE, GREEN
    _write_png(tmp_path / "tall.png", tall)
    out = open_background(str(tmp_path / "tall.png"), 30, 15).frame(0).numpy().astype(np.int32)
    assert out.shape == (3, 15, 30)
    assert np.abs(out - np.array(GREEN)[:, None, None]).max() <= 3


def _write_solid_clip(path, colors, width=32, height=16):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for i, color in enumerate(colors):
            picture = np.empty((height, width, 3), np.uint8)
            picture[:] = color
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_background_loops_and_covers(tmp_path):
    rng = np.random.default_rng()
    colors = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(3)]
    clip = tmp_path / "loop.mkv"
    _write_solid_clip(clip, colors)
    background = open_background(str(clip), 20, 20)
    assert isinstance(background, VideoBackground) and background.color is None
    for index in list(range(8)) + [4, 4, 1, 11]:  # forward past the end, then backwards
        frame = background.frame(index)
        assert frame.shape == (3, 20, 20) and frame.dtype == torch.uint8
        expected = torch.tensor(colors[index % 3], dtype=torch.int32)[:, None, None]
        assert (frame.to(torch.int32) - expected).abs().max() <= 2
    first = background.frame(12)
    background.frame(13)
    assert (first.to(torch.int32) - torch.tensor(colors[0])[:, None, None]).abs().max() <= 2
    background.close()


def test_bad_backgrounds(tmp_path):
    with pytest.raises(NvpipeError, match="not found"):
        open_background(str(tmp_path / "absent.png"), 8, 8)
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(NvpipeError, match="not a readable video"):
        open_background(str(tmp_path / "notes.mp4"), 8, 8)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(NvpipeError, match="not a readable image"):
        open_background(str(tmp_path / "broken.png"), 8, 8)


def test_every_css_and_x11_name_through_pil():
    """Colour names come from PIL.ImageColor (148 CSS/X11 names), not a hand-kept list;
    green keeps its keying meaning, #00ff00."""
    from PIL import ImageColor

    assert parse_color("rebeccapurple") == pytest.approx((102 / 255, 51 / 255, 153 / 255))
    assert parse_color("LightGoldenRodYellow") == pytest.approx(
        tuple(c / 255 for c in ImageColor.getrgb("lightgoldenrodyellow")))
    assert parse_color("green") == (0.0, 1.0, 0.0) == parse_color("lime")
    assert parse_color("rgb(10, 20, 30)") == pytest.approx((10 / 255, 20 / 255, 30 / 255))
    assert len(COLOR_NAMES) >= 140 and "rebeccapurple" in COLOR_NAMES
    background = open_background("rebeccapurple", 4, 4)
    assert background.frame(0)[:, 0, 0].tolist() == [102, 51, 153]


def test_blur_background_spec():
    from nvpipe.sources.backgrounds import BlurBackground, default_blur_radius, parse_blur

    assert parse_blur("blur") is None and parse_blur("blur:12.5") == 12.5
    assert parse_blur("green") is False and parse_blur("blurry.png") is False
    background = open_background("blur:8", 64, 32)
    assert isinstance(background, BlurBackground) and background.radius == 8
    assert background.color is None and background.from_source
    assert open_background("BLUR", 640, 360).radius == default_blur_radius(640, 360) == 12.8
    for bad in ("blur:", "blur:0", "blur:-3", "blur:wide"):
        with pytest.raises(NvpipeError, match="blur radius"):
            open_background(bad, 8, 8)
