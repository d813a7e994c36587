"""The glue between stages: buffer rings, conversion, the matting stage, composing, and the
runner's error handling."""

import numpy as np
import pytest
import torch
from conftest import CLIP_FRAMES

from nvpipe import kernels
from nvpipe.engine.buffers import BufferRing
from nvpipe.engine.compose import ComposeTarget, Composer
from nvpipe.engine.convert import Converter, downsample
from nvpipe.frames import ColorSpec, DecodedFrame, StreamInfo
from nvpipe.engine.matting import MattingStage


def test_ring_reuses_a_buffer_only_after_size_takes():
    ring = BufferRing(3)
    taken = [ring.take((4, 5), torch.float32) for _ in range(7)]
    pointers = [t.data_ptr() for t in taken]
    assert len(set(pointers[:3])) == 3
    assert pointers[3:6] == pointers[:3] and pointers[6] == pointers[0]
    assert ring.take((2, 2), torch.uint8).data_ptr() not in pointers  # shapes have own rings


def test_composer_gives_each_target_its_own_buffers():
    # Two outputs of one format and size (composite and foreground, both NV12) are queued to
    # two encoders: no buffer may serve both, nor come back before ring_size frames.
    ring_size, height, width = 5, 6, 8
    targets = [ComposeTarget("a", "composite", "nv12"), ComposeTarget("b", "foreground", "nv12")]
    composer = Composer(targets, background=None, ring_size=ring_size)
    composer.background = type("Solid", (), {"color": (0.0, 1.0, 0.0)})()
    coeff = torch.zeros(4, 3, 4)
    src = torch.rand(3, height, width)
    seen = []
    for index in range(12):
        outputs = composer(coeff, coeff, src, index)
        seen.append({name: out.data_ptr() for name, out in outputs.items()})
    for index, pointers in enumerate(seen):
        assert pointers["a"] != pointers["b"]
        recent = seen[max(0, index - ring_size + 1):index]
        assert all(pointers["a"] not in p.values() and pointers["b"] not in p.values()
                   for p in recent)


def _frame(height, width, generator):
    rows, pitch = height + (height + 1) // 2, 2 * ((width + 1) // 2)
    data = torch.randint(0, 256, (rows, pitch), generator=generator, dtype=torch.uint8)
    return DecodedFrame(data, "nv12", width, height, ColorSpec("bt601", False), 0, 1, 0)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_converter_matches_reference_and_rotates_clockwise(rotation):
    generator = torch.Generator().manual_seed(rotation)
    height, width, ratio = 30, 44, 0.25
    frame = _frame(height, width, generator)
    info = StreamInfo("x", width, height, 24, 1, rotation=rotation)
    src, src_sm = Converter(info, ratio=ratio, device="cpu", dtype=torch.float32)(frame)
    upright = kernels.nv12_to_rgb_reference(frame.data, matrix="bt601", out_dtype=torch.float32,
                                            height=height, width=width)
    # Clockwise by `rotation`: the top-left pixel of the upright picture ends at the corner
    # a clockwise turn carries it to.
    expected = torch.rot90(upright, k=-(rotation // 90), dims=(1, 2))
    torch.testing.assert_close(src, expected, atol=2e-6, rtol=0)
    torch.testing.assert_close(src_sm, downsample(expected, ratio), atol=2e-6, rtol=0)
    if rotation == 90:
        assert torch.allclose(src[:, 0, -1], upright[:, 0, 0], atol=1e-6)


def test_converter_reuses_cpu_buffers_within_its_ring():
    generator = torch.Generator().manual_seed(1)
    info = StreamInfo("x", 16, 12, 24, 1)
    converter = Converter(info, ratio=0.5, device="cpu", dtype=torch.float32, ring_size=3)
    pointers = [converter(_frame(12, 16, generator))[0].data_ptr() for _ in range(4)]
    assert len(set(pointers[:3])) == 3 and pointers[3] == pointers[0]


def test_matting_stage_carries_state_like_the_network():
    import rvm

    torch.manual_seed(0)
    network = rvm.MattingNetwork("mobilenetv3").eval()
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32)
    frames = torch.rand(3, 3, 32, 48)
    state = [None] * 4
    with torch.inference_mode():
        for frame in frames:
            small = downsample(frame, 0.5)
            coeff_a, coeff_b = stage(small[None])
            a, b, *state = network.coefficients(small[None, None], *state, use_refiner=True)
            torch.testing.assert_close(coeff_a, a[0], atol=0, rtol=0)
            torch.testing.assert_close(coeff_b, b[0], atol=0, rtol=0)
        stage.reset()
        first, _ = stage(downsample(frames[0], 0.5)[None])
        fresh, *_ = network.coefficients(downsample(frames[0], 0.5)[None, None],
                                         use_refiner=True)
        torch.testing.assert_close(first, fresh[0], atol=0, rtol=0)


def test_runner_reports_an_encoder_failure_once_and_leaves_no_output(small_clip, weights_env,
                                                                      tmp_path, monkeypatch):
    """Two outputs; the alpha's encoder fails at its third frame after really encoding two
    (and the composite all it got): both are discarded, nothing is left, not even hidden."""
    import av
    from nvpipe import Job, NvpipeError, OutputSpec, run
    from nvpipe.sinks.pyav import PyAVSink

    calls = []
    real_write = PyAVSink.write

    def failing_write(self, array, pts):
        if self.spec.kind == "alpha":
            calls.append(pts)
            if len(calls) == 3:
                raise NvpipeError("disk full (simulated)")
        real_write(self, array, pts)

    monkeypatch.setattr(PyAVSink, "write", failing_write)
    out, alpha = tmp_path / "out.mp4", tmp_path / "alpha.mp4"
    previous = tmp_path / "previous.mp4"
    previous.write_bytes(small_clip.read_bytes())
    with pytest.raises(NvpipeError, match="disk full") as failure:
        run(Job(input=str(small_clip), outputs=[OutputSpec(str(out)),
                                                OutputSpec(str(alpha), kind="alpha")],
                ratio=0.5))
    assert "no output written" in str(failure.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous.mp4"]
    assert len(calls) == 3  # the encoder stopped at the failure
    # With --overwrite over an existing file the same failure leaves that file as it was.
    calls.clear()
    with pytest.raises(NvpipeError, match="left unchanged"):
        run(Job(input=str(small_clip), outputs=[OutputSpec(str(previous)),
                                                OutputSpec(str(alpha), kind="alpha")],
                ratio=0.5, overwrite=True))
    assert previous.read_bytes() == small_clip.read_bytes()
    with av.open(str(previous)) as container:
        assert sum(1 for _ in container.decode(video=0)) == CLIP_FRAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous.mp4"]


@pytest.mark.slow
def test_runner_output_matches_stages_run_by_hand(small_clip, weights_env, tmp_path, official_network):
    """The threaded runner computes what the stages compute one after another."""
    import av
    import rvm
    from nvpipe import Job, OutputSpec, run
    from nvpipe.sources import open_source

    out = tmp_path / "frames"
    run(Job(input=str(small_clip), outputs=[OutputSpec(str(out) + "/", kind="rgba")],
            ratio=0.5))
    network = official_network
    with open_source(str(small_clip)) as source:
        info = source.info
        converter = Converter(info, ratio=0.5, device="cpu", dtype=torch.float32)
        stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32)
        for index, frame in enumerate(source):
            src, small = converter(frame)
            coeff_a, coeff_b = stage(small[None])
            expected = kernels.matting_tail_reference(coeff_a[0], coeff_b[0], src, output="rgba",
                                                      out_dtype=torch.uint8)
            written = next(av.open(str(out / f"{index:05d}.png")).decode(video=0))
            difference = np.abs(written.to_ndarray(format="rgba").astype(int)
                                - expected.permute(1, 2, 0).numpy().astype(int))
            assert difference.max() <= 1


@pytest.mark.parametrize("has_nvenc", [True, False])
def test_encoder_choice_on_cuda(has_nvenc, monkeypatch):
    from nvpipe import Job, NvpipeError, OutputSpec
    from nvpipe.platform import gpu
    from nvpipe.engine.runner import choose_encoder

    monkeypatch.setattr(gpu, "has_nvenc", lambda gpu_id=0, codec="h264": has_nvenc)
    job = Job(input="in.mp4", device="cuda")
    h264 = choose_encoder(OutputSpec("out.mp4"), job)
    assert h264.codec == ("h264_nvenc" if has_nvenc else None)
    assert choose_encoder(OutputSpec("out.mkv", codec="hevc"), job).codec == \
        ("hevc_nvenc" if has_nvenc else "hevc")
    # Alpha and codecs NVENC lacks stay on the CPU; so does everything with encoder="cpu".
    assert choose_encoder(OutputSpec("out.mov", kind="rgba"), job).codec is None
    assert choose_encoder(OutputSpec("out.webm"), job).codec is None
    assert choose_encoder(OutputSpec("out.mp4"), Job(input="in.mp4", device="cuda",
                                                     encoder="cpu")).codec is None
    assert choose_encoder(OutputSpec("out.mp4"), Job(input="in.mp4")).codec is None  # cpu
    forced = Job(input="in.mp4", device="cuda", encoder="nvenc")
    assert choose_encoder(OutputSpec("out.mp4"), forced).codec == "h264_nvenc"
    with pytest.raises(NvpipeError):
        choose_encoder(OutputSpec("out.webm"), forced)


def test_encoder_bound_note_and_encoder_threads():
    from nvpipe.engine.runner import encoder_bound
    from nvpipe.sinks.pyav import encoder_threads

    encoders = {"/o/a.mp4": "libx264 (CPU)", "/o/b.mp4": "nvenc h264 (P4, constqp)"}
    note = encoder_bound({"/o/a.mp4": 9.5, "/o/b.mp4": 9.9}, encoders, 10.0, "cuda")
    assert note is not None and note.startswith("encoder-bound: libx264 (CPU) writing a.mp4")
    assert "95%" in note
    assert encoder_bound({"/o/a.mp4": 8.0}, encoders, 10.0, "cuda") is None  # 80% < 90%
    assert encoder_bound({"/o/b.mp4": 9.9}, encoders, 10.0, "cuda") is None  # NVENC
    assert encoder_bound({"/o/a.mp4": 9.9}, encoders, 10.0, "cpu") is None   # cores shared
    assert encoder_threads(True, cores=2) == 1 and encoder_threads(True, cores=16) == 0
    assert encoder_threads(False, cores=2) == 0  # the GPU path: every core


def test_x264_preset_by_size_and_cores_on_the_gpu_path():
    from nvpipe.sinks.pyav import x264_preset_for

    assert x264_preset_for(3840, 2160, cores=16) == "veryfast"   # ~75 fps expected
    assert x264_preset_for(3840, 2160, cores=8) == "superfast"   # veryfast ~37, superfast ~68
    assert x264_preset_for(3840, 2160, cores=4) == "ultrafast"
    assert x264_preset_for(1920, 1080, cores=4) == "veryfast"    # ~75 fps
    assert x264_preset_for(7680, 4320, cores=16) == "ultrafast"


def test_x264_preset_and_threads_on_the_cpu_path():
    """The encoder's cost fits CPU_PATH_ENCODE_MS beside the network at every size (issue
    19): the preset is chosen from the measured one-thread ms per 1080p frame."""
    from nvpipe.platform.threads import budget
    from nvpipe.sinks.pyav import CPU_PATH_ENCODE_MS, X264_MS_PER_1080P, cpu_path_x264_preset

    sizes = [(640, 360), (1280, 720), (1920, 1080), (3840, 2160)]
    assert [cpu_path_x264_preset(w, h, cores=2) for w, h in sizes] == \
        ["veryfast", "veryfast", "superfast", "ultrafast"]
    for w, h in sizes[:3]:
        preset = cpu_path_x264_preset(w, h, cores=2)
        assert X264_MS_PER_1080P[preset] * w * h / (1920 * 1080) <= CPU_PATH_ENCODE_MS
    assert cpu_path_x264_preset(3840, 2160, cores=16) == "veryfast"  # 16 threads share it
    two, many = budget(2), budget(16)
    assert (two.network, two.encoder, two.tail) == (2, 1, 2)
    assert (many.network, many.encoder) == (16, 0)
