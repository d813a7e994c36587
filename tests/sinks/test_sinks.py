"""Sinks: what lands in each file, read back through PyAV the way ffprobe would see it."""

import os
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from nvpipe.errors import OutputError
from nvpipe.frames import StreamInfo
from nvpipe.job import OutputSpec
from nvpipe import sinks
from nvpipe.sinks.outputs import Outputs
from nvpipe.sources import open_source

FRAMES = 6


class open_sink:
    """One output opened through ``nvpipe.sinks.outputs`` as the runner drives it: ``close()``
    commits (the run completed), ``abort()`` keeps the frames done (an interrupted run)."""

    def __init__(self, spec, info, *, overwrite=False, audio_from=None):
        self.outputs = Outputs([spec], info, overwrite=overwrite, open_sink=sinks.open_sink,
                               audio_from=audio_from)
        self.sink = self.outputs.sinks[str(spec.path)]

    def __getattr__(self, name):
        return getattr(self.sink, name)

    def close(self):
        return self.outputs.commit()

    def abort(self):
        return self.outputs.keep_partial()


def _input_frames(path, count=FRAMES):
    with open_source(path) as source:
        frames = [f for _, f in zip(range(count), source)]
        return source.info, frames


def _smooth_alpha(rng, height, width):
    """A matte-like alpha: low-frequency random field, saturated at 0 and 255 in places."""
    coarse = torch.from_numpy(rng.normal(0, 1.5, (1, 1, 5, 7)).astype(np.float32))
    field = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic",
                                            align_corners=False)[0, 0]
    return (torch.sigmoid(field * 2) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def _array_for(sink, frame, alpha):
    """A frame in the sink's pixel format built from a decoded input frame."""
    h, w = frame.height, frame.width
    nv12 = frame.data.numpy()
    luma = nv12[:h, :w]
    if sink.pixel_format == "nv12":
        return np.ascontiguousarray(nv12[:, :w])
    if sink.pixel_format == "gray":
        return alpha
    rgb = np.stack([luma, np.roll(luma, 7, axis=1), 255 - luma], axis=2)
    if sink.pixel_format == "rgb24":
        return rgb
    return np.dstack([rgb, alpha])


def _decode_all(path, decoder=None):
    """(stream facts, decoded frames) of the first video stream; ``decoder`` names a decoder
    to use instead of FFmpeg's default (libvpx-vp9 reads VP9's alpha)."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    facts = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
             "time_base": stream.time_base, "colorspace": stream.codec_context.colorspace,
             "color_range": stream.codec_context.color_range, "metadata": dict(stream.metadata),
             "audio": [s.codec_context.name for s in container.streams.audio],
             "size": (stream.codec_context.width, stream.codec_context.height)}
    if decoder:
        context = av.CodecContext.create(decoder, "r")
        frames = [f for packet in container.demux(stream) for f in context.decode(packet)]
    else:
        frames = list(container.decode(stream))
    container.close()
    return facts, frames


def _write(spec, info, frames, alphas, **kwargs):
    sink = open_sink(spec, info, **kwargs)
    written = []
    for frame, alpha in zip(frames, alphas):
        array = _array_for(sink, frame, alpha)
        sink.write(array, frame.pts)
        written.append(array)
    sink.close()
    return sink, written


# extension, kind, codec, expected decoder name, expected pix_fmt prefix, audio codec
FORMATS = [
    (".mp4", "composite", None, "h264", "yuv420p", "aac"),
    (".mkv", "composite", None, "h264", "yuv420p", "aac"),
    (".mp4", "foreground", "hevc", "hevc", "yuv420p", "aac"),
    (".mp4", "composite", "av1", "libdav1d", "yuv420p", "aac"),
    (".mov", "rgba", None, "prores", "yuva444p", "aac"),
    (".webm", "rgba", None, "vp9", "yuv420p", "opus"),  # alpha rides beside: see alpha test
    (".mp4", "alpha", None, "h264", "yuvj420p", "aac"),
]


@pytest.mark.parametrize("extension,kind,codec,decoder,pix_fmt,audio", FORMATS)
def test_container_codec_timing_and_audio(tmp_path, footage, extension, kind, codec, decoder,
                                          pix_fmt, audio):
    source = footage("color/nasa_13013.mp4")
    info, frames = _input_frames(source)
    rng = np.random.default_rng()
    alphas = [_smooth_alpha(rng, info.height, info.width) for _ in frames]
    target = tmp_path / f"out{extension}"
    _write(OutputSpec(str(target), kind=kind, codec=codec), info, frames, alphas,
           audio_from=str(source))
    facts, decoded = _decode_all(target)
    assert facts["codec"] == decoder and facts["pix_fmt"].startswith(pix_fmt)
    assert facts["size"] == (info.width, info.height)
    assert len(decoded) == FRAMES
    # Matroska/WebM store milliseconds; MP4/MOV keep the input's ticks exactly.
    tolerance = Fraction(1, 2000) if extension in (".mkv", ".webm") else 0
    for out, frame in zip(decoded, frames):
        assert abs(out.pts * out.time_base - frame.pts * info.time_base) <= tolerance
    assert facts["audio"] == [audio, audio]  # both of the input's audio streams
    assert not [n for n in os.listdir(tmp_path) if "partial" in n]
    if kind in ("composite", "foreground") and extension == ".mp4":
        assert facts["colorspace"] == 6 and facts["color_range"] == 1  # BT.601 (180 lines)
    if kind == "alpha":
        assert facts["color_range"] == 2  # alpha = luma, full range
    if extension == ".webm":
        assert facts["metadata"].get("alpha_mode") == "1"


def test_audio_stops_where_the_video_ends(tmp_path, footage):
    source = footage("color/nasa_13013.mp4")
    info, frames = _input_frames(source, 20)
    target = tmp_path / "short.mp4"
    _write(OutputSpec(str(target)), info, frames, [None] * len(frames), audio_from=str(source))
    video_end = float((frames[-1].pts * info.time_base) + 1 / info.fps)
    with av.open(str(target)) as container:
        for stream in container.streams.audio:
            starts = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size]
            container.seek(0)
            assert starts and max(starts) < video_end
            assert max(starts) > video_end - 0.3  # audio runs up to the end, not cut early


def test_nv12_round_trip_keeps_the_picture(tmp_path, footage):
    info, frames = _input_frames(footage("person_fullbody_360x640.mp4"), 4)
    target = tmp_path / "same.mp4"
    sink, written = _write(OutputSpec(str(target)), info, frames, [None] * 4)
    assert sink.pixel_format == "nv12"
    _, decoded = _decode_all(target)
    for out, array in zip(decoded, written):
        got = out.reformat(format="nv12").to_ndarray().astype(np.int32)
        error = np.abs(got - array)
        assert error.mean() < 2.0  # x264 crf 18 on camera footage
        assert error[: info.height].mean() < 2.0


def test_rgb_round_trip_through_prores(tmp_path, footage):
    info, frames = _input_frames(footage("color/nasa_13013.mp4"), 3)
    target = tmp_path / "rgb.mov"
    sink, written = _write(OutputSpec(str(target), kind="foreground"), info, frames, [None] * 3)
    assert sink.pixel_format == "rgb24"
    _, decoded = _decode_all(target)
    for out, array in zip(decoded, written):
        error = np.abs(out.to_ndarray(format="rgb24").astype(np.int32) - array)
        # 10-bit 4:4:4 YUV and back: rounding only, apart from ProRes' quantiser
        assert error.mean() < 1.5 and np.percentile(error, 99) <= 6


@pytest.mark.parametrize("target,decoder,mean_tol,max_tol", [
    # ProRes 4444 codes alpha losslessly; the 8 -> 10 (swscale) -> 12 (decoder) -> 8 bit
    # rescaling rounds by at most one code value.
    ("alpha.mov", None, 1.0, 1),
    ("alpha.webm", "libvpx-vp9", 1.5, 20),  # VP9 alpha is lossy (crf 24): mean 0.9, max 8-10
    ("alpha_png", None, 0.0, 0),  # PNG: exact
])
def test_alpha_reads_back(tmp_path, footage, target, decoder, mean_tol, max_tol):
    info, frames = _input_frames(footage("color/nasa_13013.mp4"), 4)
    rng = np.random.default_rng()
    alphas = [_smooth_alpha(rng, info.height, info.width) for _ in frames]
    path = tmp_path / target
    sink, written = _write(OutputSpec(str(path), kind="rgba"), info, frames, alphas)
    if target.endswith("png"):
        assert sorted(os.listdir(path)) == [f"{i:05d}.png" for i in range(4)]
        read = [_decode_all(path / f"{i:05d}.png")[1][0] for i in range(4)]
        for out in read:
            assert out.format.name == "rgba"
    else:
        _, read = _decode_all(path, decoder)
        assert read[0].format.name.startswith("yuva")
    assert len(read) == len(alphas)
    for out, alpha, array in zip(read, alphas, written):
        rgba = out.to_ndarray(format="rgba").astype(np.int32)
        error = np.abs(rgba[..., 3] - alpha)
        assert error.max() <= max_tol and error.mean() <= mean_tol


def test_grey_alpha_outputs(tmp_path, footage):
    info, frames = _input_frames(footage("color/nasa_13013.mp4"), 3)
    rng = np.random.default_rng()
    alphas = [_smooth_alpha(rng, info.height, info.width) for _ in frames]
    video = tmp_path / "matte.mp4"
    sink, _ = _write(OutputSpec(str(video), kind="alpha"), info, frames, alphas)
    assert sink.pixel_format == "gray"
    _, decoded = _decode_all(video)
    for out, alpha in zip(decoded, alphas):
        luma = np.frombuffer(out.planes[0], np.uint8).reshape(-1, out.planes[0].line_size)
        error = np.abs(luma[: info.height, : info.width].astype(np.int32) - alpha)
        # x264 at the alpha default crf 12, full-range luma: measured mean 0.6, max 7-11
        assert error.mean() < 0.9 and error.max() <= 20
    pngs = tmp_path / "matte_%03d.png"
    _write(OutputSpec(str(pngs), kind="alpha"), info, frames, alphas)
    for i, alpha in enumerate(alphas):
        _, (picture,) = _decode_all(tmp_path / f"matte_{i:03d}.png")
        assert picture.format.name == "gray"
        np.testing.assert_array_equal(picture.to_ndarray(), alpha)


def _tiny_info(tmp_path, width=64, height=48, **changes):
    info = StreamInfo(path=str(tmp_path / "input.mp4"), width=width, height=height,
                      fps=Fraction(30), time_base=Fraction(1, 90))
    return replace(info, **changes)


def test_variable_frame_rate_and_torch_input(tmp_path):
    info = _tiny_info(tmp_path, time_base=Fraction(1, 90), fps=Fraction(20))
    pts = [0, 2, 3, 7, 8, 20]
    rng = np.random.default_rng()
    target = tmp_path / "vfr.mp4"
    sink = open_sink(OutputSpec(str(target), kind="foreground"), info)
    assert sink.pixel_format == "nv12"
    for p in pts:
        sink.write(torch.from_numpy(rng.integers(0, 256, (72, 64), dtype=np.uint8)), p)
    sink.close()
    _, decoded = _decode_all(target)
    assert [f.pts * f.time_base for f in decoded] == [Fraction(p, 90) for p in pts]


def test_odd_sizes(tmp_path):
    info = _tiny_info(tmp_path, width=63, height=47)
    rng = np.random.default_rng()
    ramps = np.add.outer(np.linspace(0, 1, 47), np.linspace(0, 1, 63))  # 4:2:0 keeps it
    picture = np.stack([ramps * 60 + 20, 180 - ramps * 60, np.full_like(ramps, 128)], axis=2)
    checker = (np.add.outer(np.arange(47) // 6, np.arange(63) // 6) % 2)[..., None]
    picture = (picture + 50 * checker + rng.uniform(-10, 10, 3)).round().astype(np.uint8)
    for name, size in (("odd.mp4", (64, 48)), ("odd.webm", (63, 47)), ("odd.mov", (63, 47))):
        sink = open_sink(OutputSpec(str(tmp_path / name)), info)
        assert sink.pixel_format == "rgb24"  # NV12 needs even sizes
        sink.write(picture, 0)
        sink.close()
        facts, decoded = _decode_all(tmp_path / name)
        assert facts["size"] == size and len(decoded) == 1
        rgb = decoded[0].to_ndarray(format="rgb24")[:47, :63].astype(np.int32)
        assert rgb.shape == picture.shape
        # measured <= 2.4 (x264), 0.8 (VP9), 0.2 (ProRes); one pixel off gives ~9
        assert np.abs(rgb - picture).mean() < 4


def test_rotation_gives_display_size(tmp_path):
    info = _tiny_info(tmp_path, width=64, height=48, rotation=90)
    sink = open_sink(OutputSpec(str(tmp_path / "turned.mp4")), info)
    with pytest.raises(ValueError):
        sink.write(np.zeros((72, 64), np.uint8), 0)
    sink.write(np.zeros((96, 48), np.uint8), 0)
    sink.close()
    facts, _ = _decode_all(tmp_path / "turned.mp4")
    assert facts["size"] == (48, 64)


def test_abort_keeps_a_playable_file_or_nothing(tmp_path):
    info = _tiny_info(tmp_path)
    rng = np.random.default_rng()
    for extension in (".mp4", ".mov", ".webm"):
        target = tmp_path / f"partial{extension}"
        sink = open_sink(OutputSpec(str(target), kind="composite"), info)
        for i in range(3):
            shape = (72, 64) if sink.pixel_format == "nv12" else (48, 64, 3)
            sink.write(rng.integers(0, 256, shape, dtype=np.uint8), i * 3)
        assert not target.exists()  # written under a temporary name until finished
        sink.abort()
        _, decoded = _decode_all(target)
        assert len(decoded) == 3
        empty = tmp_path / f"empty{extension}"
        open_sink(OutputSpec(str(empty)), info).abort()
        assert not empty.exists()
    folder = tmp_path / "never"
    open_sink(OutputSpec(str(folder), kind="rgba"), info).abort()
    assert not folder.exists()
    assert sorted(os.listdir(tmp_path)) == ["partial.mov", "partial.mp4", "partial.webm"]


def test_close_without_frames_is_an_error(tmp_path):
    info = _tiny_info(tmp_path)
    with pytest.raises(OutputError, match="no frames"):
        open_sink(OutputSpec(str(tmp_path / "none.mp4")), info).close()
    assert os.listdir(tmp_path) == []


def test_refusals_before_writing(tmp_path):
    info = _tiny_info(tmp_path)
    existing = tmp_path / "taken.mp4"
    existing.write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists"):
        open_sink(OutputSpec(str(existing)), info)
    assert existing.read_bytes() == b"precious"
    sink = open_sink(OutputSpec(str(existing)), info, overwrite=True)
    assert existing.read_bytes() == b"precious"  # replaced only on close
    sink.write(np.zeros((72, 64), np.uint8), 0)
    sink.close()
    assert len(_decode_all(existing)[1]) == 1

    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "00000.png").write_bytes(b"old frame")
    with pytest.raises(OutputError, match="exists"):
        open_sink(OutputSpec(str(folder), kind="rgba"), info)
    assert (folder / "00000.png").read_bytes() == b"old frame"

    with pytest.raises(OutputError, match="folder does not exist"):
        open_sink(OutputSpec(str(tmp_path / "missing" / "out.mp4")), info)
    with pytest.raises(OutputError, match="is the input"):
        open_sink(OutputSpec(info.path), info)
    with pytest.raises(OutputError, match=r"\.mov.*\.webm"):
        open_sink(OutputSpec(str(tmp_path / "alpha.mp4"), kind="rgba"), info)
    with pytest.raises(OutputError, match="unsupported output"):
        open_sink(OutputSpec(str(tmp_path / "out.avi")), info)
    with pytest.raises(OutputError, match="unknown codec"):
        open_sink(OutputSpec(str(tmp_path / "out.mp4"), codec="mpeg2"), info)
    with pytest.raises(OutputError, match="cannot hold"):
        open_sink(OutputSpec(str(tmp_path / "out.webm"), codec="h264"), info)
    assert sorted(os.listdir(tmp_path)) == ["frames", "taken.mp4"]


def test_bitrate_and_preset_are_applied(tmp_path):
    info = _tiny_info(tmp_path, width=128, height=96)
    rng = np.random.default_rng()
    noise = [rng.integers(0, 256, (144, 128), dtype=np.uint8) for _ in range(10)]
    sizes = {}
    for name, spec in (("low.mp4", dict(bitrate=50_000)), ("high.mp4", dict(bitrate=2_000_000))):
        sink = open_sink(OutputSpec(str(tmp_path / name), preset="ultrafast", **spec), info)
        for i, array in enumerate(noise):
            sink.write(array, i * 3)
        sink.close()
        sizes[name] = (tmp_path / name).stat().st_size
    assert sizes["low.mp4"] * 4 < sizes["high.mp4"]
    with pytest.raises(OutputError, match="preset"):
        open_sink(OutputSpec(str(tmp_path / "x.mp4"), preset="warp"), info)


@pytest.mark.parametrize("extension", [".mp4", ".mov"])
def test_hevc_in_mp4_and_mov_is_tagged_hvc1(tmp_path, extension):
    """QuickTime and Safari play HEVC tagged hvc1, not FFmpeg's default hev1."""
    info = _tiny_info(tmp_path)
    target = tmp_path / f"hevc{extension}"
    sink = open_sink(OutputSpec(str(target), codec="hevc"), info)
    for pts in range(3):
        sink.write(np.full((72, 64), 100 + pts, np.uint8), pts * 3)
    sink.close()
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.codec_tag == "hvc1"
        assert sum(1 for _ in container.decode(stream)) == 3
    assert b"hvc1" in target.read_bytes() and b"hev1" not in target.read_bytes()
