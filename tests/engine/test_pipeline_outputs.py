"""Issue 5's deliverables through the whole CPU pipeline: alpha formats, backgrounds,
audio, rotation, image sequences, 10-bit input. Outputs are read back through PyAV."""

import os

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLIP_FRAMES
from nvpipe.app.cli import main

RATIO = 0.5


def _decode(path, decoder=None):
    """Frames (av.VideoFrame) of a video, or of a PNG directory; ``decoder`` forces one."""
    if os.path.isdir(path):
        return [next(av.open(os.path.join(path, name)).decode(video=0))
                for name in sorted(os.listdir(path))]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if decoder:
            context = av.CodecContext.create(decoder, "r")
            return [f for packet in container.demux(stream) for f in context.decode(packet)]
        return list(container.decode(stream))


def _network_outputs_from_rgb(frames, weights, ratio=RATIO):
    """[(fgr [3,H,W], pha [1,H,W])] of the FP32 network over uint8 (H, W, 3) frames."""
    import rvm

    network = rvm.load(str(weights))
    results, state = [], [None] * 4
    with torch.inference_mode():
        for frame in frames:
            src = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
            fgr, pha, *state = network(src, *state, downsample_ratio=ratio)
            results.append((fgr[0], pha[0]))
    return results


def _network_outputs(clip, weights, ratio=RATIO):
    """(rgb frames uint8 HWC, [(fgr [3,H,W], pha [1,H,W])]) per frame from the FP32 network,
    fed the RGB the pipeline sees: its decoder's planes through the reference conversion."""
    import rvm
    from nvpipe import kernels
    from nvpipe.sources import open_source

    network = rvm.load(str(weights))
    frames, results, state = [], [], [None] * 4
    with torch.inference_mode(), open_source(str(clip)) as source:
        for decoded in source:
            rgb = kernels.nv12_to_rgb_reference(
                decoded.data, matrix=decoded.color.matrix, full_range=decoded.color.full_range,
                out_dtype=torch.float32, height=decoded.height, width=decoded.width)
            frames.append((rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
            fgr, pha, *state = network(rgb[None], *state, downsample_ratio=ratio)
            results.append((fgr[0], pha[0]))
    return frames, results


@pytest.fixture(scope="module")
def network_reference(small_clip, tmp_path_factory):
    from conftest import SHARED

    weights = SHARED / "weights" / "rvm_mobilenetv3_fp32.onnx"
    if not weights.exists():
        pytest.skip(f"{weights} is absent")
    return _network_outputs(small_clip, weights)


# (output name, decoder to read alpha with, max error, mean error) in levels of 255.
# ProRes 4444 carries alpha losslessly (10-bit: 8 -> 10 -> 8 rounds by one level); VP9's
# alpha plane is lossy (crf 24); PNG is exact up to the tail's own rounding.
ALPHA_FORMATS = [("out.mov", None, 2, 0.6), ("out.webm", "libvpx-vp9", 40, 2.5),
                 ("frames/", None, 1, 0.1)]


@pytest.mark.parametrize("name,decoder,max_error,mean_error", ALPHA_FORMATS)
def test_alpha_deliverables_carry_the_networks_alpha(name, decoder, max_error, mean_error,
                                                     small_clip, weights_env, network_reference,
                                                     tmp_path):
    out = os.path.join(tmp_path, name)  # pathlib would drop the folder's trailing slash
    assert main(["run", str(small_clip), out, "--ratio", str(RATIO), "--quiet"]) == 0
    frames = _decode(out, decoder)
    assert len(frames) == CLIP_FRAMES
    assert frames[0].format.name.startswith(("yuva", "rgba"))
    for frame, (_, pha) in zip(frames, network_reference[1]):
        alpha = frame.to_ndarray(format="rgba")[..., 3].astype(np.float32)
        error = np.abs(alpha - pha[0].numpy() * 255)
        assert error.max() <= max_error and error.mean() <= mean_error, (error.max(), error.mean())


@pytest.mark.slow
def test_composite_over_image_and_looping_video_backgrounds(small_clip, weights_env,
                                                            network_reference, tmp_path):
    height, width = network_reference[0][0].shape[:2]
    rng = np.random.default_rng()
    picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "beach.png")
    # A 3-frame lossless background video, shorter than the 8-frame input: it loops.
    colours = rng.integers(0, 256, (3, 3), dtype=np.uint8)
    with av.open(str(tmp_path / "bg.mkv"), "w") as container:
        stream = container.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for colour in colours:
            frame = av.VideoFrame.from_ndarray(np.broadcast_to(colour, (height, width, 3)).copy(),
                                               format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    for background, expected_bg in (("beach.png", lambda i: picture),
                                     ("bg.mkv", lambda i: np.broadcast_to(colours[i % 3],
                                                                          (height, width, 3)))):
        out = tmp_path / f"composite_{background}"  # a PNG sequence: lossless
        code = main(["run", str(small_clip), str(out) + "/", "--background",
                     str(tmp_path / background), "--ratio", str(RATIO), "--quiet"])
        assert code == 0
        written = _decode(str(out))
        assert len(written) == CLIP_FRAMES
        for i, (frame, (fgr, pha)) in enumerate(zip(written, network_reference[1])):
            bg = torch.from_numpy(expected_bg(i).astype(np.float32) / 255).permute(2, 0, 1)
            expected = (fgr * pha + bg * (1 - pha)).permute(1, 2, 0).numpy() * 255
            error = np.abs(frame.to_ndarray(format="rgb24").astype(np.float32) - expected)
            assert error.max() <= 1.0, (background, i, error.max())


def _clip_with_audio(source, path, seconds: float):
    """The first ``seconds`` of ``source``, video and audio packets copied (no re-encode)."""
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        video_in = inp.streams.video[0]
        audio_in = inp.streams.audio[0]
        video_out = out.add_stream_from_template(video_in)
        audio_out = out.add_stream_from_template(audio_in)
        for packet in inp.demux(video_in, audio_in):
            if packet.pts is None or packet.pts * packet.time_base >= seconds:
                continue
            packet.stream = video_out if packet.stream.type == "video" else audio_out
            out.mux(packet)


@pytest.mark.parametrize("name", ["out.mp4", "out.mkv", "out.mov"])
def test_audio_is_copied_and_timing_kept(name, footage, weights_env, tmp_path):
    clip = tmp_path / "talk.mp4"
    _clip_with_audio(footage("color/nasa_13013.mp4"), clip, seconds=0.5)
    out = tmp_path / name
    assert main(["run", str(clip), str(out), "--ratio", "0.5", "--quiet",
                 "--background", "#00ff00"]) == 0
    with av.open(str(clip)) as source, av.open(str(out)) as result:
        assert [s.codec_context.name for s in result.streams.audio] == ["aac"]
        source_video, result_video = source.streams.video[0], result.streams.video[0]
        source_times = [f.pts * source_video.time_base for f in source.decode(source_video)]
        result_times = [f.pts * result_video.time_base for f in result.decode(result_video)]
    assert len(result_times) == len(source_times) > 0
    # MP4/MOV keep the input's timestamps exactly; Matroska stores milliseconds.
    tolerance = 0.001 if name.endswith(".mkv") else 0
    assert all(abs(a - b) <= tolerance for a, b in zip(result_times, source_times))


def test_rotation_metadata_gives_upright_output(footage, weights_env, tmp_path):
    clip = footage("color/nasa_13013_rotated.mp4")
    out = tmp_path / "out.mp4"
    assert main(["run", str(clip), str(out), "--ratio", "0.5", "--quiet"]) == 0
    with av.open(str(clip)) as source:
        coded = (source.streams.video[0].width, source.streams.video[0].height)
        count = sum(1 for _ in source.decode(video=0))
    frames = _decode(out)
    assert len(frames) == count
    assert (frames[0].width, frames[0].height) == (coded[1], coded[0])  # 90 degrees either way


def test_image_sequence_in_and_several_outputs_from_one_pass(small_clip, weights_env,
                                                             network_reference, tmp_path):
    # The network is sensitive at soft edges even to +-0.5/255 on its input (alpha moved by
    # up to 10 levels when fed unrounded RGB), so the reference reads the same PNG pixels.
    pictures = tmp_path / "in"
    pictures.mkdir()
    for i, frame in enumerate(network_reference[0]):
        Image.fromarray(frame).save(pictures / f"{i:05d}.png")
    out, alpha, fgr = tmp_path / "out.mp4", tmp_path / "alpha", tmp_path / "fgr.mp4"
    assert main(["run", str(pictures), str(out), "--alpha", str(alpha) + "/", "--foreground",
                 str(fgr), "--ratio", str(RATIO), "--quiet"]) == 0
    assert len(_decode(out)) == len(_decode(fgr)) == CLIP_FRAMES
    alphas = _decode(str(alpha))
    assert len(alphas) == CLIP_FRAMES
    reference = _network_outputs_from_rgb(network_reference[0], weights_env)
    for frame, (_, pha) in zip(alphas, reference):
        grey = frame.to_ndarray(format="gray").astype(np.float32)
        assert np.abs(grey - pha[0].numpy() * 255).max() <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["color/h265_10bits.mp4", "color/bt709_full_range.mp4"])
def test_ten_bit_and_full_range_inputs(clip, footage, weights_env, tmp_path):
    source = footage(clip)
    out = tmp_path / "out.mp4"
    assert main(["run", str(source), str(out), "--quiet", "--ratio", "0.5"]) == 0
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        size, count = (stream.width, stream.height), sum(1 for _ in container.decode(stream))
    frames = _decode(out)
    assert len(frames) == count and (frames[0].width, frames[0].height) == size
