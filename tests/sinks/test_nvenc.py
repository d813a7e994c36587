"""nvpipe.sinks.nvenc: encoder options and the PyAV muxing of an elementary stream.

The muxer is exercised on the CPU with libx264 producing the same kind of Annex B packets
NVENC gives (no B-frames); NVENC itself only runs on GPUs that have it.
"""

import types
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from conftest import decoded_frames, needs_cuda
from nvpipe.errors import NvpipeError, OutputError
from nvpipe.frames import StreamInfo
from nvpipe.job import OutputSpec
from nvpipe.sinks.nvenc import DEFAULT_QP, NvencSink, PacketMuxer, nvenc_codec, nvenc_options


def test_options_constant_qp_and_presets():
    options = nvenc_options(OutputSpec("a.mp4", crf=30, preset="slow"), Fraction(30000, 1001))
    assert options["rc"] == "constqp" and options["constqp"] == 30
    assert options["preset"] == "P5" and options["codec"] == "h264"
    assert options["bf"] == 0 and options["fps"] == "29.97" and options["gop"] == 60
    assert nvenc_options(OutputSpec("a.mp4"), Fraction(25))["fps"] == "25"
    default = nvenc_options(OutputSpec("a.mkv", codec="hevc_nvenc"), Fraction(25))
    assert default["codec"] == "hevc" and default["constqp"] == DEFAULT_QP
    assert default["preset"] == "P4"
    assert nvenc_options(OutputSpec("a.mp4", preset="p7"), Fraction(24))["preset"] == "P7"


def test_options_bitrate_is_vbr():
    options = nvenc_options(OutputSpec("a.mp4", bitrate=8_000_000), Fraction(24))
    assert options["rc"] == "vbr" and options["bitrate"] == 8_000_000
    assert options["maxbitrate"] == 12_000_000
    assert "constqp" not in options


@pytest.mark.parametrize("spec,message", [
    (OutputSpec("a.webm"), r"\.mp4, \.mkv, \.mov"),
    (OutputSpec("a.mov", kind="rgba"), "alpha"),
    (OutputSpec("a.mp4", codec="prores"), "not 'prores'"),
    (OutputSpec("a.mp4", preset="turbo"), "preset"),
    (OutputSpec("a.mp4", crf=60), "0..51"),
])
def test_options_refuse_what_nvenc_cannot_do(spec, message):
    with pytest.raises(OutputError, match=message):
        nvenc_options(spec, Fraction(30))


def test_codec_names():
    assert nvenc_codec(OutputSpec("a.mp4", codec="nvenc")) == "h264"
    assert nvenc_codec(OutputSpec("a.mp4", codec="h265")) == "hevc"
    assert nvenc_codec(OutputSpec("a.mkv", codec="av1_nvenc")) == "av1"


def _x264_packets(frames, time_base, fps):
    """Annex B H.264 packets for ``frames`` (uint8 [N, H, W, 3]), without B-frames."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = frames.shape[2], frames.shape[1]
    encoder.pix_fmt, encoder.time_base, encoder.framerate = "yuv420p", time_base, fps
    encoder.max_b_frames = 0
    encoder.options = {"preset": "ultrafast"}
    encoder.open()
    packets = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [(bytes(p), p.is_keyframe) for p in encoder.encode(frame)]
    packets += [(bytes(p), p.is_keyframe) for p in encoder.encode(None)]
    assert packets[0][0][:4] == b"\x00\x00\x00\x01"  # Annex B start code, like NVENC's
    return packets


def _frames(n, height=48, width=64):
    # Each frame a distinct flat grey so order is checkable after lossy coding.
    levels = np.random.default_rng().permutation(np.linspace(20, 235, n).astype(np.uint8))
    return np.broadcast_to(levels[:, None, None, None], (n, height, width, 3)).copy(), levels


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_muxer_keeps_every_frame_and_irregular_timing(tmp_path, suffix):
    frames, levels = _frames(12)
    time_base = Fraction(1, 90000)
    steps = np.random.default_rng().integers(1000, 6000, size=len(frames))
    pts = np.concatenate([[0], np.cumsum(steps)[:-1]]) + 4500  # not starting at zero
    packets = _x264_packets(frames, Fraction(1, 25), Fraction(25))
    target = tmp_path / f"out{suffix}"
    staging = tmp_path / f".staging{suffix}"
    muxer = PacketMuxer(str(target), "h264", 64, 48, Fraction(25), time_base,
                        staging=str(staging))
    for (data, key), t in zip(packets, pts):
        muxer.mux(data, int(t), int(t), key)
    muxer.finish()
    assert staging.exists() and not target.exists()  # placing it is nvpipe.sinks.outputs' job
    decoded = decoded_frames(staging)
    assert len(decoded) == len(frames)
    for (time, rgb), level, t in zip(decoded, levels, pts):
        assert abs(float(time) - float(t * time_base)) < 1e-3  # container rounding only
        assert abs(float(rgb.mean()) - float(level)) < 3


def test_muxer_copies_audio(tmp_path, footage):
    source = str(footage("color/nasa_13013.mp4"))
    with av.open(source) as container:
        video = container.streams.video[0]
        info = (video.time_base, video.average_rate, video.width, video.height)
        audio_in = {s.index: 0 for s in container.streams.audio}
        for packet in container.demux(*container.streams.audio):
            if packet.size:
                audio_in[packet.stream.index] += 1
        container.seek(0)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:40])
        container.seek(0)
        pts = [f.pts for f in container.decode(video=0)][:40]
    time_base, fps, width, height = info
    assert audio_in, "the clip has audio"
    target = tmp_path / "with_audio.mp4"
    muxer = PacketMuxer(str(target), "h264", width, height, fps, time_base,
                        staging=str(target), audio_from=source)
    for (data, key), t in zip(_x264_packets(frames, time_base, fps), pts):
        muxer.mux(data, t, t, key)
    muxer.finish()
    with av.open(str(target)) as container:
        assert len(container.streams.audio) == len(audio_in)
        counts = [0] * len(container.streams.audio)
        for packet in container.demux(*container.streams.audio):
            if packet.size:
                counts[packet.stream.index - 1] += 1
        assert sorted(counts) == sorted(audio_in.values())  # every audio packet, untouched
        assert container.streams.video[0].frames == 40


def test_muxer_trims_the_audio_with_the_video(tmp_path, footage):
    """A trimmed input (``--start 0.5``, 16 frames at 25 fps): the audio from 0.5 s of the
    input, shifted to 0, and no further than the video (0.64 s)."""
    source = str(footage("color/nasa_13013.mp4"))
    start, end = 0.5, 16 / 25
    with av.open(source) as container:
        stream = container.streams.audio[0]
        wanted = [float(p.pts * p.time_base) - start for p in container.demux(stream)
                  if p.size and p.pts is not None]
    wanted = [t for t in wanted if 0 <= t < end]
    assert len(wanted) >= 4
    frames, _ = _frames(16)
    target = tmp_path / "trimmed.mp4"
    muxer = PacketMuxer(str(target), "h264", 64, 48, Fraction(25), Fraction(1, 25),
                        staging=str(target), audio_from=source, audio_start=start,
                        audio_end=end)
    for i, (data, key) in enumerate(_x264_packets(frames, Fraction(1, 25), Fraction(25))):
        muxer.mux(data, i, i, key)
    muxer.finish()
    with av.open(str(target)) as container:
        stream = container.streams.audio[0]
        got = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size]
        assert container.streams.video[0].frames == 16
    assert got == pytest.approx(wanted, abs=1e-3)


def test_muxer_finishes_a_playable_file_of_the_frames_so_far(tmp_path):
    frames, levels = _frames(8)
    packets = _x264_packets(frames, Fraction(1, 25), Fraction(25))
    target = tmp_path / "partial.mp4"
    muxer = PacketMuxer(str(target), "h264", 64, 48, Fraction(25), Fraction(1, 25),
                        staging=str(target))
    for i, (data, key) in enumerate(packets[:5]):
        muxer.mux(data, i, i, key)
    muxer.finish()  # what keep_partial does after an interrupt
    decoded = decoded_frames(target)
    assert len(decoded) == 5
    assert all(abs(float(rgb.mean()) - float(level)) < 3 for (_, rgb), level in zip(decoded, levels))


def test_muxer_without_frames_leaves_nothing(tmp_path):
    target = tmp_path / "empty.mp4"

    def muxer():
        return PacketMuxer(str(target), "h264", 64, 48, Fraction(25), Fraction(1, 25),
                           staging=str(tmp_path / ".staging.mp4"))

    with pytest.raises(OutputError, match="no frame"):
        muxer().finish()
    assert list(tmp_path.iterdir()) == []
    discarded = muxer()
    data, key = _x264_packets(_frames(1)[0], Fraction(1, 25), Fraction(25))[0]
    discarded.mux(data, 0, 0, key)
    discarded.discard()
    assert list(tmp_path.iterdir()) == []


def test_nvenc_outputs_get_the_same_refusals(tmp_path):
    """Existing target, missing folder: refused by nvpipe.sinks.outputs before NVENC is touched."""
    from nvpipe import sinks
    from nvpipe.sinks.outputs import Outputs

    existing = tmp_path / "there.mp4"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputError, match="exists"):
        Outputs([OutputSpec(str(existing), codec="h264_nvenc")], _info(), overwrite=False,
                open_sink=sinks.open_sink)
    assert existing.read_bytes() == b"keep"
    with pytest.raises(OutputError, match="folder does not exist"):
        Outputs([OutputSpec(str(tmp_path / "no" / "x.mp4"), codec="nvenc")], _info(),
                overwrite=False, open_sink=sinks.open_sink)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there.mp4"]


def _info(width=64, height=48):
    return StreamInfo(path="in.mp4", width=width, height=height, fps=Fraction(25),
                      time_base=Fraction(1, 25))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_sink_refuses_cleanly_without_gpu(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(NvpipeError):
        NvencSink(OutputSpec(str(target), codec="nvenc"), _info(), staging=str(target))
    assert list(tmp_path.iterdir()) == []


def test_sink_refuses_odd_sizes(tmp_path):
    with pytest.raises(OutputError, match="even"):
        NvencSink(OutputSpec(str(tmp_path / "o.mp4")), _info(63, 48),
                  staging=str(tmp_path / "o.mp4"))


# --------------------------------------------------------------------------- GPU only


@needs_cuda
def test_nvenc_sink_round_trip_or_clear_refusal(tmp_path):
    from nvpipe.platform.gpu import nvenc_status
    from nvpipe.kernels import rgb_to_nv12

    target = tmp_path / "nvenc.mp4"
    available, reason = nvenc_status(0, "h264")
    spec = OutputSpec(str(target), codec="nvenc", crf=18)
    if not available:  # H100 / H200 / A100
        with pytest.raises(OutputError, match="no NVENC"):
            NvencSink(spec, _info(320, 240), staging=str(target))
        assert not target.exists()
        pytest.skip(f"no NVENC here: {reason}")
    sink = NvencSink(spec, _info(320, 240), staging=str(target))
    levels = torch.randperm(200)[:20] + 28
    for i, level in enumerate(levels.tolist()):
        rgb = torch.full((3, 240, 320), level / 255, device="cuda")
        sink.write(rgb_to_nv12(rgb, matrix=sink.color.matrix, full_range=False), i)
    sink.finish()
    decoded = decoded_frames(target)
    assert len(decoded) == len(levels)
    for (time, rgb), level, i in zip(decoded, levels.tolist(), range(len(levels))):
        assert abs(float(time) - i / 25) < 1e-3
        assert abs(float(rgb.mean()) - level) < 4


def _clip_with_alaw_audio(path, frames=10, size=(64, 48)):
    """H.264 video with A-law PCM audio in .mov (MP4 cannot carry it: it must be re-encoded)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        audio = out.add_stream("pcm_alaw", rate=8000, layout="mono")
        for i in range(frames):
            picture = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 9 * i, np.uint8),
                                                 format="rgb24").reformat(format="yuv420p")
            picture.pts = i
            out.mux(video.encode(picture))
            samples = av.AudioFrame.from_ndarray(
                np.full((1, 320), 1000 * (i % 3), np.int16), format="s16", layout="mono")
            samples.sample_rate, samples.pts = 8000, i * 320
            out.mux(audio.encode(samples))
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


def test_both_writers_share_one_audio_rule(tmp_path):
    """A-law audio cannot go into MP4 as it is: the PyAV sink and the NVENC muxer both re-encode
    it to AAC (nvpipe.sinks.audio), where the muxer used to drop it with a note nobody read."""
    from nvpipe.sinks.pyav import PyAVSink

    source = _clip_with_alaw_audio(tmp_path / "alaw.mov")
    frames, _ = _frames(10)
    muxed = tmp_path / "muxed.mp4"
    muxer = PacketMuxer(str(muxed), "h264", 64, 48, Fraction(25), Fraction(1, 25),
                        staging=str(muxed), audio_from=str(source))
    for t, (data, key) in enumerate(_x264_packets(frames, Fraction(1, 25), Fraction(25))):
        muxer.mux(data, t, t, key)
    muxer.finish()
    info = StreamInfo(path=str(source), width=64, height=48, fps=Fraction(25),
                      time_base=Fraction(1, 25), frame_count=10)
    encoded = tmp_path / "encoded.mp4"
    sink = PyAVSink(OutputSpec(str(encoded), kind="composite"), info, staging=str(encoded),
                    audio_from=str(source))
    for t, rgb in enumerate(frames):
        sink.write(rgb if sink.pixel_format == "rgb24" else
                   av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="nv12").to_ndarray(), t)
    sink.finish()
    for path, notes in ((muxed, muxer.notes), (encoded, sink.notes)):
        with av.open(str(path)) as container:
            assert [s.codec_context.name for s in container.streams.audio] == ["aac"], path
        assert notes == [], path


def test_audio_that_cannot_be_read_is_a_note_not_a_failure(tmp_path):
    target = tmp_path / "out.mp4"
    muxer = PacketMuxer(str(target), "h264", 64, 48, Fraction(25), Fraction(1, 25),
                        staging=str(target), audio_from=str(tmp_path / "gone.mp4"))
    for t, (data, key) in enumerate(_x264_packets(_frames(3)[0], Fraction(1, 25), Fraction(25))):
        muxer.mux(data, t, t, key)
    muxer.finish()
    assert len(muxer.notes) == 1 and muxer.notes[0].startswith("audio not copied: cannot read")
    with av.open(str(target)) as container:
        assert not container.streams.audio and container.streams.video[0].frames == 3


# --------------------------------------------------------------------------- opening NVENC (issue 17)


@pytest.fixture
def nvenc_that_cannot_start(monkeypatch):
    """A GPU whose NVML says "encoder" but whose NVENC fails to open (an H200's driver
    answering a capacity): nvenc_status says yes, ``CreateEncoder`` raises. Stand-ins for
    the CUDA stream and device let NvencSink get that far on this CPU."""
    import contextlib
    import sys
    import types

    from nvpipe.platform import gpu

    module = types.ModuleType("PyNvVideoCodec")
    module.NV_ENC_PIC_PARAMS = object
    module.created = []

    def create_encoder(*args, **kwargs):
        module.created.append(kwargs.get("codec"))
        raise RuntimeError("NvEncodeAPI: nvEncOpenEncodeSessionEx: unsupported device (2)\nmore")

    module.CreateEncoder = create_encoder
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", module)
    monkeypatch.setattr(gpu, "nvenc_status", lambda gpu_id=0, codec="h264": (True, "NVML capacity 100%"))
    monkeypatch.setattr(gpu, "has_nvenc", lambda gpu_id=0, codec="h264": True)
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: types.SimpleNamespace(cuda_stream=0))
    monkeypatch.setattr(torch.cuda, "device", lambda *a, **k: contextlib.nullcontext())
    return module


def test_nvenc_sink_opens_its_encoder_before_the_first_frame(tmp_path, nvenc_that_cannot_start):
    """The encoder is created in NvencSink's constructor: a failure is an open failure (which
    --encoder auto can answer with the CPU encoder), not a failure at frame 1; no file is left."""
    target = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="NVENC could not start") as caught:
        NvencSink(OutputSpec(str(target), codec="h264_nvenc"), _info(), staging=str(target))
    assert nvenc_that_cannot_start.created == ["h264"]
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_encoder_auto_falls_back_to_the_cpu_when_nvenc_cannot_start(tmp_path, nvenc_that_cannot_start):
    """A CUDA job's .mp4 routed to NVENC by --encoder auto: NVENC fails to open, the output
    opens with libx264 instead, a one-line note says why, and the file is complete."""
    import numpy as np

    from conftest import count_frames
    from nvpipe.engine.runner import _open_outputs
    from nvpipe.job import Job

    target = tmp_path / "out.mp4"
    job = Job(input=str(tmp_path / "in.mp4"), outputs=[OutputSpec(str(target))], device="cuda")
    source = types.SimpleNamespace(info=_info(64, 48))
    notes = []
    _, outputs = _open_outputs(job, source, torch.device("cpu"), notes)
    sink = outputs.sinks[str(target)]
    assert nvenc_that_cannot_start.created == ["h264"]  # NVENC was tried first
    assert sink.encoder_name.endswith("(CPU)") and not sink.accepts_cuda
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "NVENC could not start" in notes[0] and "unsupported device" in notes[0]
    for index in range(5):
        sink.write(np.full((72, 64), 16 + 30 * index, np.uint8), index)
    outputs.commit()
    assert count_frames(target) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no partial, no lock


def test_nvenc_asked_for_by_name_does_not_fall_back(tmp_path, nvenc_that_cannot_start):
    from nvpipe.engine.runner import _open_outputs
    from nvpipe.job import Job

    target = tmp_path / "out.mp4"
    for encoder, spec in (("nvenc", OutputSpec(str(target))), ("auto", OutputSpec(str(target), codec="nvenc"))):
        job = Job(input="in.mp4", outputs=[spec], device="cuda", encoder=encoder)
        with pytest.raises(OutputError, match="NVENC could not start"):
            _open_outputs(job, types.SimpleNamespace(info=_info(64, 48)), torch.device("cpu"), [])
        assert list(tmp_path.iterdir()) == []
