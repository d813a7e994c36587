"""The pipeline end to end on every device (conftest.DEVICES: the CPU, and CUDA where
there is a GPU), with tests/tolerances.py's policy (issue 4, "Correctness on a GPU"; issue 17).

- The pipeline's alpha (the device's source -> Converter -> MattingStage -> the fused tail,
  FP16 under CUDA graphs on the GPU, FP32 on the CPU) against RVM's own FP32 network on the
  CPU, every frame of real clips, without growth along the clip.
- An input gives an output of its size with every frame, in order, with the input's timing
  (through ``nvpipe.engine.runner.run``): 4K on the GPU, a small size on the CPU.

NVDEC against PyAV's decode is in tests/sources/test_nvdec.py, graph against eager in
tests/engine/test_matting_implementations.py.
"""

import itertools
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from conftest import DEVICES
from nvpipe.errors import DeviceError
from tolerances import assert_close_alphas

# The GPU compares whole real clips; the CPU (2 shared cores in CI) the small clip.
CUDA_CLIPS = ["person_fullbody_360x640.mp4", "four_people_1080p.mp4",
              "color/nasa_13013_rotated.mp4"]
CASES = [pytest.param(device.values[0], clip, marks=device.marks,
                      id=f"{device.id}-{clip or 'small_clip'}")
         for device in DEVICES for clip in (CUDA_CLIPS if device.values[0] == "cuda" else [None])]


def _source(path, device):
    from nvpipe.sources.pyav import PyAVSource

    if device != "cuda":
        return PyAVSource(path)
    from nvpipe.sources.nvdec import NvdecSource

    try:
        return NvdecSource(path)
    except DeviceError as error:
        pytest.skip(f"NVDEC unavailable: {error}")


def _pipeline_alphas(source, device, dtype, network):
    """Per-frame alpha ``[1, H, W]`` float32 on the CPU: source -> Converter -> MattingStage
    (graphs on CUDA) -> the fused tail, the stages the runner chains."""
    from nvpipe import kernels
    from nvpipe.engine.convert import Converter
    from nvpipe.engine.matting import MattingStage
    from nvpipe.job import auto_ratio

    ratio = auto_ratio(*source.info.display_size)
    converter = Converter(source.info, ratio=ratio, device=torch.device(device), dtype=dtype)
    stage = MattingStage(network, ratio=ratio, device=device, dtype=dtype)
    for frame in source:
        src, src_sm = converter(frame)
        if frame.release is not None:
            frame.release()
        coeff_a, coeff_b = stage(src_sm[None], [src])
        yield kernels.matting_tail(coeff_a[0], coeff_b[0], src, output="alpha",
                                   out_dtype=torch.float32).cpu()


@torch.inference_mode()
def _rvm_alphas(path, network):
    """RVM's own network, FP32 on the CPU, on PyAV's frames: the reference alpha per frame."""
    from nvpipe.engine.convert import Converter
    from nvpipe.job import auto_ratio
    from nvpipe.sources.pyav import PyAVSource

    with PyAVSource(path) as source:
        ratio = auto_ratio(*source.info.display_size)
        converter = Converter(source.info, ratio=ratio, device=torch.device("cpu"),
                              dtype=torch.float32)
        state = [None] * 4
        for frame in source:
            src, _ = converter(frame)
            _, pha, *state = network(src[None], *state, downsample_ratio=ratio)
            yield pha[0]


@pytest.mark.parametrize("device,clip", CASES)
def test_pipeline_alpha_matches_rvm_fp32_on_every_frame(device, clip, footage, small_clip,
                                                        pth_weights):
    import rvm
    from nvpipe.engine.runner import default_dtype

    path = str(footage(clip) if clip else small_clip)
    dtype = default_dtype(device)
    reference = rvm.load(str(pth_weights), device="cpu", dtype=torch.float32)
    network = rvm.load(str(pth_weights), device=device, dtype=dtype)
    source = _source(path, device)
    errors = []
    with source:
        for ours, theirs in itertools.zip_longest(_pipeline_alphas(source, device, dtype, network),
                                                  _rvm_alphas(path, reference)):
            assert ours is not None and theirs is not None, f"frame counts differ at {len(errors)}"
            assert ours.shape == theirs.shape
            errors.append((ours - theirs).abs().mean().item())
    expected = source.info.frame_count
    assert len(errors) == expected if expected else len(errors) > 0
    assert_close_alphas(errors, dtype)


def _write_clip(path, width, height, frames, time_base, pts):
    """An H.264 clip of distinct flat greys with the given timestamps (PyAV, libx264)."""
    levels = np.random.default_rng().permutation(np.linspace(30, 220, frames).astype(np.uint8))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.options = {"preset": "ultrafast"}
        for level, t in zip(levels, pts):
            frame = av.VideoFrame.from_ndarray(
                np.full((height, width, 3), level, np.uint8), format="rgb24")
            frame.pts = int(t)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return levels


def _timestamps(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * stream.time_base) for f in container.decode(stream)]
        return stream.width, stream.height, times


# (width, height, frames, ratio) per device: 4K on the GPU, a small size on the CPU.
SIZES = {"cuda": (3840, 2160, 30, 0.125), "cpu": (320, 180, 10, 0.5)}


def test_output_has_the_input_size_every_frame_in_order_and_timing(pipeline_device, tmp_path,
                                                                    pth_weights):
    from nvpipe.engine.runner import run
    from nvpipe.job import Job, OutputSpec

    width, height, frames, ratio = SIZES[pipeline_device]
    time_base = Fraction(1, 12288)
    steps = np.random.default_rng().integers(400, 700, size=frames)  # irregular frame spacing
    pts = np.concatenate([[0], np.cumsum(steps)[:-1]])
    source = tmp_path / "in.mp4"
    _write_clip(source, width, height, len(pts), time_base, pts)
    target = tmp_path / "out.mp4"
    job = Job(input=str(source), outputs=[OutputSpec(str(target), kind="composite")],
              device=pipeline_device, weights=str(pth_weights), ratio=ratio)
    result = run(job)
    assert result.frames == len(pts)
    out_width, out_height, times = _timestamps(target)
    assert (out_width, out_height) == (width, height)
    _, _, input_times = _timestamps(source)
    assert len(times) == len(input_times) == len(pts)
    assert np.all(np.diff(times) > 0)
    assert np.abs(np.array(times) - np.array(input_times)).max() < 1e-3
