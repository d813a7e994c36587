"""nvpipe.sources.nvdec: the frame layout helper (CPU) and NVDEC against PyAV (GPU)."""

import itertools
import math

import pytest
import torch

from conftest import needs_cuda
from nvpipe.errors import DeviceError, InputError
from nvpipe.sources.nvdec import planar420_view
from tolerances import DECODE_LEVELS, RGB_LEVELS


def _random_frame(rows, cols, dtype=torch.uint8):
    high = 256 if dtype == torch.uint8 else 65536
    return torch.randint(0, high, (rows, cols), dtype=torch.int32).to(dtype)


@pytest.mark.parametrize("width,height", [(64, 48), (1920, 1080), (10, 2)])
def test_even_frames_are_views(width, height):
    data = _random_frame(height * 3 // 2, width)
    frame, copied = planar420_view(data, width, height, high_bit_depth=False)
    assert not copied and frame.data_ptr() == data.data_ptr()
    assert frame.shape == (height + math.ceil(height / 2), width)


def test_pitched_frames_keep_their_pitch():
    data = _random_frame(48 * 3 // 2 + 6, 128)  # pitch 128 for a 100-wide picture, spare rows
    frame, copied = planar420_view(data, 100, 48, high_bit_depth=False)
    assert not copied and frame.shape == (72, 128)
    assert torch.equal(frame, data[:72])


def test_odd_height_missing_chroma_row_repeats_the_last():
    width, height = 8, 5  # needs 5 + 3 rows; a floor(1.5 * H) export gives 7
    data = _random_frame(7, width)
    frame, copied = planar420_view(data, width, height, high_bit_depth=False)
    assert copied and frame.shape == (8, 8)
    assert torch.equal(frame[:7], data)
    assert torch.equal(frame[7], data[6])


def test_odd_width_missing_column_repeats_the_same_component():
    width, height = 7, 4  # chroma needs 2 * ceil(7/2) = 8 columns
    data = _random_frame(6, 7)
    frame, copied = planar420_view(data, width, height, high_bit_depth=False)
    assert copied and frame.shape == (6, 8)
    assert torch.equal(frame[:, :7], data)
    assert torch.equal(frame[:, 7], data[:, 5])  # V of the previous pair


def test_high_bit_depth_exported_as_bytes_is_reinterpreted():
    words = _random_frame(6, 4, torch.uint16)
    as_bytes = words.view(torch.uint8)  # (6, 8)
    frame, copied = planar420_view(as_bytes, 4, 4, high_bit_depth=True)
    assert not copied and frame.dtype == torch.uint16
    assert torch.equal(frame, words)
    frame, _ = planar420_view(words, 4, 4, high_bit_depth=True)
    assert torch.equal(frame, words)


def test_p016_exported_with_a_column_stride_of_two_is_repaired():
    # PyNvVideoCodec 2.0 exports packed P016 (rows, W) uint16 with element strides (W, 2).
    words = _random_frame(6, 4, torch.uint16)
    storage = torch.zeros(6 * 4 + 4, dtype=torch.uint16)
    storage[:24] = words.flatten()
    exported = storage.as_strided((6, 4), (4, 2))
    frame, copied = planar420_view(exported, 4, 4, high_bit_depth=True)
    assert not copied and frame.stride() == (4, 1)
    assert torch.equal(frame, words)


@pytest.mark.parametrize("shape,width,height,high", [
    ((4, 8), 8, 4, False),   # no chroma row at all
    ((6, 6), 8, 4, False),   # narrower than the picture
    ((6, 8), 8, 4, True),    # 8-bit data for a 10-bit stream, odd byte count per word
])
def test_impossible_layouts_raise(shape, width, height, high):
    data = _random_frame(*shape)
    if high:
        data = data[:, :7]
    with pytest.raises(InputError):
        planar420_view(data, width, height, high_bit_depth=high)


# --------------------------------------------------------------------------- NVDEC's size limits


@pytest.mark.parametrize("caps,size,refused", [
    ({"width_min": 144, "height_min": 144, "width_max": 8192, "height_max": 8192}, (128, 128), "below"),
    ({"width_min": 144, "height_min": 144, "width_max": 8192, "height_max": 8192}, (200, 128), "below"),
    ({"width_min": 144, "height_min": 144, "width_max": 4096, "height_max": 2304}, (8192, 4320), "exceeds"),
    ({"width_min": 144, "height_min": 144, "width_max": 8192, "height_max": 8192}, (144, 144), None),
    ({"width_max": 8192, "height_max": 8192}, (16, 16), None),  # no minimum given: not checked
])
def test_size_outside_the_decoders_caps_is_refused(caps, size, refused):
    from nvpipe.sources.nvdec import NvdecUnsupported, check_size

    if refused is None:
        check_size(caps, *size, "hevc", "clip.mp4")
        return
    with pytest.raises(NvdecUnsupported, match=refused) as caught:
        check_size(caps, *size, "hevc", "clip.mp4")
    assert "\n" not in str(caught.value) and f"{size[0]}x{size[1]}" in str(caught.value)


class _FakeStream:
    cuda_stream = 0

    def __init__(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass


@pytest.fixture
def nvdec_on_the_cpu(monkeypatch):
    """NvdecSource up to its caps check on this CPU: a PyNvVideoCodec whose demuxer says
    4:2:0, a stand-in CUDA stream, and the GPU's decoder caps as ``set_caps`` gives them."""
    import sys
    import types

    from nvpipe.sources import nvdec

    module = types.ModuleType("PyNvVideoCodec")
    module.decoders = []
    module.CreateDemuxer = lambda filename: types.SimpleNamespace(ChromaFormat=lambda: "cudaVideoChromaFormat_420")

    def create_decoder(**kwargs):
        module.decoders.append(kwargs)
        raise AssertionError("the caps check must refuse before a decoder is made")

    module.CreateDecoder = create_decoder
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", module)
    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    caps = {}
    monkeypatch.setattr(nvdec, "decoder_caps", lambda codec, depth, gpu_id: dict(caps))
    return caps.update


def test_below_the_minimum_decodes_on_the_cpu_with_one_line(footage, nvdec_on_the_cpu):
    """Finding 4: the 128x128 HEVC clip is below NVDEC's HEVC minimum (144x144): open_source
    decodes it with PyAV and says why in one line, instead of NVDEC failing at frame 0."""
    from nvpipe.sources import open_source
    from nvpipe.sources.pyav import PyAVSource

    nvdec_on_the_cpu({"supported": 1, "num_decoder_engines": 7, "width_min": 144,
                      "height_min": 144, "width_max": 8192, "height_max": 8192})
    path = footage("color/h265_video.mp4")
    with pytest.warns(UserWarning) as caught:
        source = open_source(str(path), device="cuda")
    with source:
        assert isinstance(source, PyAVSource)
        assert (source.info.width, source.info.height) == (128, 128)
        assert sum(1 for _ in source) == source.info.frame_count > 0
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "below NVDEC's minimum 144x144 for hevc" in messages[0] and "decoding on the CPU" in messages[0]


# --------------------------------------------------------------------------- GPU only

CLIPS = ["four_people_1080p.mp4", "person_fullbody_360x640.mp4", "color/bt601_full_range.mp4",
         "color/bt601_limited_range.mp4", "color/bt709_full_range.mp4", "color/h264_10bits.mp4",
         "color/h265_10bits.mp4", "color/h265_video.mp4", "color/bt2020_10bit.mp4",
         "color/av1_video.mkv", "color/nasa_13013_rotated.mp4"]


def _nvdec_or_skip(path):
    from nvpipe.sources.nvdec import NvdecSource, NvdecUnsupported

    try:
        return NvdecSource(str(path))
    except DeviceError as error:
        pytest.skip(f"NVDEC unavailable: {error}")
    except NvdecUnsupported as error:
        pytest.skip(f"this GPU does not decode it: {error}")


def _planes(frame):
    h, w = frame.height, frame.width
    ch, cw = math.ceil(h / 2), 2 * math.ceil(w / 2)
    data = frame.data.to("cpu").to(torch.int32)
    return data[:h, :w], data[h:h + ch, :cw]


def _rgb(frame):
    from nvpipe import kernels

    convert = kernels.nv12_to_rgb if frame.pix_fmt == "nv12" else kernels.p016_to_rgb
    return convert(frame.data, matrix=frame.color.matrix, full_range=frame.color.full_range,
                   out_dtype=torch.float32, height=frame.height, width=frame.width).cpu()


@needs_cuda
@pytest.mark.parametrize("clip", CLIPS)
def test_nvdec_matches_pyav(footage, clip):
    from nvpipe.sources.pyav import PyAVSource

    path = footage(clip)
    gpu_source = _nvdec_or_skip(path)
    cpu_source = PyAVSource(str(path))
    g, c = gpu_source.info, cpu_source.info
    assert (g.width, g.height, g.fps, g.time_base, g.color, g.bit_depth, g.rotation,
            g.frame_count) == (c.width, c.height, c.fps, c.time_base, c.color, c.bit_depth,
                               c.rotation, c.frame_count)
    count = 0
    with gpu_source, cpu_source:
        for ours, theirs in itertools.zip_longest(gpu_source, cpu_source):
            assert ours is not None and theirs is not None, f"frame counts differ at {count}"
            assert ours.data.is_cuda and ours.release is not None
            assert (ours.pix_fmt, ours.pts, ours.index) == (theirs.pix_fmt, theirs.pts, count)
            # "2 levels" in the stream's own bit depth (p016 holds v << 6).
            level = 1 if ours.pix_fmt == "nv12" else 64
            for mine, reference in zip(_planes(ours), _planes(theirs)):
                assert (mine - reference).abs().max().item() <= DECODE_LEVELS * level, count
            rgb_gpu = _rgb(ours)
            ours.release()
            rgb_cpu = _rgb(theirs)
            assert (rgb_gpu - rgb_cpu).abs().max().item() * 255 <= RGB_LEVELS, count
            count += 1
    assert count >= 1


@needs_cuda
def test_borrowed_frames_survive_a_slow_consumer(footage):
    """The decoder must not reuse a buffer that queued GPU work still reads."""
    from nvpipe.sources.pyav import PyAVSource

    path = footage("four_people_1080p.mp4")
    source = _nvdec_or_skip(path)
    consumer = torch.cuda.Stream()
    copies = []
    with source, torch.cuda.stream(consumer):
        for frame in itertools.islice(source, 40):
            torch.cuda._sleep(20_000_000)  # the consumer's stream is busy for a while
            copies.append(frame.data.clone())
            frame.release()
    consumer.synchronize()
    with PyAVSource(str(path)) as cpu_source:
        for copy, theirs in zip(copies, itertools.islice(cpu_source, 40)):
            assert (copy.cpu().to(torch.int32) - theirs.data.to(torch.int32)).abs().max() <= DECODE_LEVELS


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_source_refuses_cleanly_without_gpu(footage, tmp_path):
    from nvpipe.sources import open_source
    from nvpipe.sources.nvdec import NvdecSource

    with pytest.raises(InputError, match="not found"):
        NvdecSource(str(tmp_path / "missing.mp4"))
    path = str(footage("color/h265_video.mp4"))
    with pytest.raises(DeviceError, match="PyNvVideoCodec"):
        NvdecSource(path)
    # --device auto/cuda promise CPU decoding where NVDEC cannot run (a one-line warning).
    with pytest.warns(UserWarning, match="decoding on the CPU"):
        source = open_source(path, device="cuda")
    with source:
        assert type(source).__name__ == "PyAVSource"
