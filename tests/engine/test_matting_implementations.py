"""The matting implementations: state shapes and ``EagerMatting`` on the CPU
(nvpipe.engine.matting), ``GraphedMatting`` (nvpipe.engine.matting.graphed) on a GPU."""

import copy
import inspect

import pytest
import torch

from conftest import needs_cuda
from nvpipe.engine.matting.graphed import GraphedMatting
from nvpipe.engine.matting import (STATE_CHANNELS, EagerMatting, MattingStage, coefficient_kwargs,
                            halving_chain, recurrent_state_shapes)

rvm = pytest.importorskip("rvm")


@pytest.fixture(scope="module")
def cpu_network():
    torch.manual_seed(0)
    network = rvm.MattingNetwork("mobilenetv3").eval()
    # Random weights with BatchNorm statistics that are not the identity, so that every
    # layer matters.
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return network


def _reference_chain(size):
    return [-(-size // 2**k) for k in range(1, 5)]  # ceil(size / 2^k)


@pytest.mark.parametrize("size", [1, 2, 17, 45, 67, 270, 1081])
def test_halving_chain_is_ceil_of_powers_of_two(size):
    assert halving_chain(size) == _reference_chain(size)


@pytest.mark.parametrize("height,width", [(45, 67), (17, 30), (64, 36)])
def test_state_shapes_match_the_network(cpu_network, height, width):
    with torch.no_grad():
        _, _, *states = cpu_network.coefficients(torch.rand(1, 3, height, width))
    assert [tuple(s.shape) for s in states] == recurrent_state_shapes(height, width)


def test_state_shapes_resnet50_channels():
    shapes = recurrent_state_shapes(30, 40, "resnet50", batch=2)
    assert [s[1] for s in shapes] == [16, 32, 64, 128]
    assert [s[2:] for s in shapes] == list(zip(_reference_chain(30), _reference_chain(40)))
    assert all(s[0] == 2 for s in shapes)
    with pytest.raises(ValueError):
        recurrent_state_shapes(30, 40, "vgg")


def test_coefficient_kwargs_follow_the_signature(cpu_network):
    assert "use_refiner" in inspect.signature(cpu_network.coefficients).parameters
    assert coefficient_kwargs(cpu_network, 0.25) == {"use_refiner": True}
    assert coefficient_kwargs(cpu_network, 1.0) == {"use_refiner": False}
    assert coefficient_kwargs(cpu_network, None) == {}

    class RatioNetwork(torch.nn.Module):
        def coefficients(self, src_sm, r1=None, r2=None, r3=None, r4=None, *, downsample_ratio=1):
            raise NotImplementedError

    assert coefficient_kwargs(RatioNetwork(), 0.5) == {"downsample_ratio": 0.5}


def _direct(network, chunks, use_refiner=True):
    """The network called on each chunk with its states carried by hand."""
    states, outputs = [None] * 4, []
    with torch.no_grad():
        for chunk in chunks:
            coeff_a, coeff_b, *states = network.coefficients(chunk[None], *states,
                                                             use_refiner=use_refiner)
            outputs.append((coeff_a[0], coeff_b[0]))
    return outputs


def test_eager_matches_the_network_with_state_carried(cpu_network):
    chunks = [torch.rand(2, 3, 36, 52) for _ in range(3)]
    # The stage prepares the network in place (channels_last on the CPU too), so the direct
    # calls come after it: the same layout, the same sums, equality to the bit.
    matting = EagerMatting(cpu_network, (2, 3, 36, 52), "cpu", torch.float32, downsample_ratio=0.25)
    expected = _direct(cpu_network, chunks)
    for chunk, (want_a, want_b) in zip(chunks, expected):
        coeff_a, coeff_b = matting(chunk)
        assert coeff_a.shape == (2, 4, 36, 52) and coeff_b.shape == (2, 4, 36, 52)
        torch.testing.assert_close(coeff_a, want_a, rtol=0, atol=0)
        torch.testing.assert_close(coeff_b, want_b, rtol=0, atol=0)
    # The state matters: the same chunk again gives a different answer.
    again_a, _ = matting(chunks[0])
    assert (again_a - expected[0][0]).abs().max() > 1e-4


def test_eager_single_frames_and_ratio_one(cpu_network):
    frames = [torch.rand(3, 20, 28) for _ in range(2)]
    expected = _direct(cpu_network, [f[None] for f in frames], use_refiner=False)
    matting = EagerMatting(cpu_network, None, "cpu", torch.float32, downsample_ratio=1.0)
    for frame, (want_a, want_b) in zip(frames, expected):
        coeff_a, coeff_b = matting(frame)
        assert coeff_a.shape == (4, 20, 28)
        assert torch.count_nonzero(coeff_a) == 0  # no refiner at ratio 1
        torch.testing.assert_close(coeff_b, want_b[0], rtol=0, atol=0)


def test_chunks_equal_frame_by_frame(cpu_network):
    frames = torch.rand(4, 3, 24, 40)
    by_frame = EagerMatting(cpu_network, downsample_ratio=0.5)
    by_chunk = EagerMatting(cpu_network, downsample_ratio=0.5)
    single = [by_frame(frames[i:i + 1])[1][0] for i in range(4)]
    chunked = torch.cat([by_chunk(frames[:2])[1], by_chunk(frames[2:])[1]])
    torch.testing.assert_close(chunked, torch.stack(single), rtol=1e-4, atol=1e-5)


def test_eager_reset_and_load_state(cpu_network):
    chunks = [torch.rand(1, 3, 30, 30) for _ in range(3)]
    first = EagerMatting(cpu_network, downsample_ratio=0.25)
    fresh_answer = first(chunks[0])[1].clone()
    first(chunks[1])
    # load_state: a second instance continues exactly where the first one is.
    second = EagerMatting(cpu_network, downsample_ratio=0.25)
    second.load_state(first.state())
    torch.testing.assert_close(second(chunks[2])[1], first(chunks[2])[1], rtol=0, atol=0)
    # reset: back to a first frame.
    first.reset()
    torch.testing.assert_close(first(chunks[0])[1], fresh_answer, rtol=0, atol=0)


def test_eager_shape_errors(cpu_network):
    matting = EagerMatting(cpu_network, (1, 3, 30, 30), downsample_ratio=0.25)
    with pytest.raises(ValueError, match="src_sm must be"):
        matting(torch.rand(1, 4, 30, 30))
    with pytest.raises(ValueError, match="expected frames of"):
        matting(torch.rand(1, 3, 30, 32))
    flexible = EagerMatting(cpu_network, downsample_ratio=0.25)
    flexible(torch.rand(1, 3, 30, 30))
    with pytest.raises(ValueError, match="without reset"):
        flexible(torch.rand(1, 3, 30, 34))
    flexible.reset()
    assert flexible(torch.rand(1, 3, 30, 34))[0].shape == (1, 4, 30, 34)


def test_the_stage_on_cpu_is_eager_and_graphs_need_cuda(cpu_network):
    stage = MattingStage(cpu_network, ratio=0.5, device="cpu", dtype=torch.float32)
    assert not stage.use_cuda_graphs and stage.stream is None
    stage(torch.rand(1, 3, 16, 16))
    # The CPU engine under the tests' NVPIPE_ENGINE=torch (tests/engine/test_cpu_engines.py
    # has the others): eager PyTorch behind CpuMatting.
    assert stage.engine == "torch" and isinstance(stage._single._impl, EagerMatting)
    assert not stage._graphs
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedMatting(cpu_network, (1, 3, 16, 16), "cpu")


def test_state_channels_are_the_networks():
    """One declaration (rvm.STATE_CHANNELS), read by the stage's state shapes."""
    assert STATE_CHANNELS is rvm.STATE_CHANNELS


def test_coefficient_memory_format_is_the_stages(cpu_network):
    """NCHW on the CPU (the C tail reads planes); channels_last when asked (CUDA's default:
    the Triton tail's vector loads), whatever the network's own layout."""
    frames = torch.rand(2, 3, 24, 40)
    planar = EagerMatting(copy.deepcopy(cpu_network), None, "cpu", torch.float32, 0.5)
    packed = EagerMatting(copy.deepcopy(cpu_network), None, "cpu", torch.float32, 0.5,
                          coefficient_format=torch.channels_last)
    a_planar, b_planar = planar(frames)
    a_packed, b_packed = packed(frames)
    assert a_planar.is_contiguous() and b_planar.is_contiguous()
    assert a_packed.is_contiguous(memory_format=torch.channels_last) and a_packed.stride(1) == 1
    assert b_packed.stride(1) == 1
    torch.testing.assert_close(a_packed, a_planar, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b_packed, b_planar, rtol=1e-5, atol=1e-6)
    one = packed(frames[:1])[0]
    assert one.shape == (1, 4, 24, 40) and one.stride(1) == 1


# --------------------------------------------------------------------------- GPU only


@pytest.fixture
def cuda_networks(pth_weights):
    network = rvm.load(str(pth_weights), device="cuda", dtype=torch.float16)
    return network, copy.deepcopy(network)


def _max_relative(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1)).item()


@needs_cuda
@pytest.mark.parametrize("shape", [(1, 3, 144, 256), (4, 3, 135, 240)])
def test_graph_matches_eager_fp16(cuda_networks, shape):
    graphed = GraphedMatting(cuda_networks[0], shape, "cuda", torch.float16, downsample_ratio=0.25)
    eager = EagerMatting(cuda_networks[1], shape, "cuda", torch.float16, downsample_ratio=0.25)
    torch.manual_seed(1)
    for step in range(6):
        if step == 4:
            graphed.reset()
            eager.reset()
        src_sm = torch.rand(shape, device="cuda")
        got_a, got_b = graphed(src_sm)
        got_a, got_b = got_a.clone(), got_b.clone()
        want_a, want_b = eager(src_sm)
        assert got_a.shape == (shape[0], 4, *shape[-2:])
        assert torch.isfinite(got_a).all() and torch.isfinite(got_b).all()
        # FP16 (10-bit mantissa): the same kernels, possibly other cuDNN algorithms.
        assert _max_relative(got_a, want_a) < 1e-2, step
        assert _max_relative(got_b, want_b) < 1e-2, step


@needs_cuda
def test_graph_outputs_are_overwritten_by_the_next_call(cuda_networks):
    graphed = GraphedMatting(cuda_networks[0], (1, 3, 64, 64), "cuda", torch.float16, 0.25)
    first_a, _ = graphed(torch.rand(1, 3, 64, 64, device="cuda"))
    kept = first_a.clone()
    second_a, _ = graphed(torch.rand(1, 3, 64, 64, device="cuda"))
    assert second_a.data_ptr() == first_a.data_ptr()
    assert (first_a.float() - kept.float()).abs().max() > 0


@needs_cuda
def test_state_carries_across_graph_shapes(cuda_networks):
    """A clip's last, shorter chunk runs in a second graph that starts from the first's state."""
    frames = torch.rand(5, 3, 72, 128, device="cuda")
    two = GraphedMatting(cuda_networks[0], (2, 3, 72, 128), "cuda", torch.float16, 0.25)
    one = GraphedMatting(cuda_networks[0], (1, 3, 72, 128), "cuda", torch.float16, 0.25)
    eager = EagerMatting(cuda_networks[1], None, "cuda", torch.float16, 0.25)
    got = [two(frames[0:2])[1].clone(), two(frames[2:4])[1].clone()]
    one.load_state(two.state())
    got.append(one(frames[4:5])[1].clone())
    want = [eager(frames[0:2])[1], eager(frames[2:4])[1], eager(frames[4:5])[1]]
    for g, w in zip(got, want):
        assert _max_relative(g, w) < 1e-2


@needs_cuda
def test_graph_waits_for_the_callers_stream(cuda_networks):
    """Input produced on the caller's (non-default) stream is complete before the replay."""
    graphed = GraphedMatting(cuda_networks[0], (1, 3, 96, 96), "cuda", torch.float16, 0.25)
    eager = EagerMatting(cuda_networks[1], None, "cuda", torch.float16, 0.25)
    base = torch.rand(1, 3, 96, 96, device="cuda")
    caller = torch.cuda.Stream()
    with torch.cuda.stream(caller):
        torch.cuda._sleep(50_000_000)  # ~tens of ms of GPU time before the input is written
        src_sm = base * 1.0
        got = graphed(src_sm)[1].clone()
    caller.synchronize()
    assert _max_relative(got, eager(base)[1]) < 1e-2
