"""MattingStage: one stage over its implementations (eager, one CUDA graph per chunk shape).

On CUDA each chunk shape gets its own ``GraphedMatting`` with its own state buffers, and the
stage must hand the state from the instance that ran last to the next one. That hand-over is
plain Python; here a stand-in with the graph's constructor and its own state per instance
(``EagerMatting`` underneath) replaces the graph class so it runs on the CPU. The graphs
themselves are tested on a GPU in test_gpu_graphs.py.
"""

import pytest
import torch

import nvpipe.engine.matting.graphed as cuda_graphs
from conftest import needs_cuda
from nvpipe.engine.matting import EagerMatting, MattingStage

rvm = pytest.importorskip("rvm")


class StandInGraph(EagerMatting):
    """``GraphedMatting``'s constructor over ``EagerMatting``; records what it was given."""

    made: list = []

    def __init__(self, network, src_sm_shape, device, dtype, downsample_ratio=None,
                 stream=None, coefficient_format=None, **kwargs):
        super().__init__(network, src_sm_shape, device, dtype, downsample_ratio=downsample_ratio,
                         coefficient_format=coefficient_format)
        StandInGraph.made.append({"shape": tuple(src_sm_shape), "stream": stream})


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return rvm.fuse(rvm.MattingNetwork("mobilenetv3").eval())


@pytest.fixture
def stand_in(monkeypatch):
    StandInGraph.made = []
    monkeypatch.setattr(cuda_graphs, "GraphedMatting", StandInGraph)
    return StandInGraph


def _reference(network, frames):
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                         use_cuda_graphs=False)
    return torch.cat([stage(frames[i:i + 1])[1] for i in range(len(frames))])


def test_state_follows_the_frames_across_chunk_lengths(network, stand_in):
    frames = torch.rand(8, 3, 24, 40)
    lengths = [2, 1, 2, 3]  # back to an earlier shape, then a new one
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                         use_cuda_graphs=True)
    got, start = [], 0
    for length in lengths:
        coeff_a, coeff_b = stage(frames[start:start + length])
        got.append(coeff_b.clone())
        start += length
    assert [made["shape"] for made in stand_in.made] == [(2, 3, 24, 40), (1, 3, 24, 40),
                                                         (3, 3, 24, 40)]
    torch.testing.assert_close(torch.cat(got), _reference(network, frames), rtol=1e-4, atol=1e-5)


def test_reset_starts_every_shape_from_zero(network, stand_in):
    frames = torch.rand(3, 3, 24, 40)
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                         use_cuda_graphs=True)
    stage(frames[:2])
    stage(frames[2:3])
    stage.reset()
    after_reset = stage(frames[:2])[1].clone()
    torch.testing.assert_close(after_reset, _reference(network, frames[:2]), rtol=1e-4, atol=1e-5)
    stage.reset()  # the other shape's buffers too
    torch.testing.assert_close(stage(frames[:1])[1], _reference(network, frames[:1]),
                               rtol=1e-4, atol=1e-5)


def test_failed_capture_falls_back_to_eager_and_prepare_builds_ahead(network, monkeypatch):
    """A capture that fails (another thread's device-wide sync, an op capture refuses) costs
    the graph, not the run: the stage warns and runs that shape eagerly. prepare() builds
    the expected shape before the pipeline's threads start."""
    def failing_capture(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graphs, "GraphedMatting", failing_capture)
    frames = torch.rand(3, 3, 24, 40)
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                         use_cuda_graphs=True)
    with pytest.warns(RuntimeWarning, match="running the network eagerly"):
        stage.prepare((2, 3, 24, 40))
    assert list(stage._graphs) == [(2, 3, 24, 40)]
    first = stage(frames[:2])[1]
    with pytest.warns(RuntimeWarning):  # a new shape: another capture, failing again
        got = torch.cat([first, stage(frames[2:3])[1]])
    torch.testing.assert_close(got, _reference(network, frames), rtol=1e-4, atol=1e-5)
    off = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32, use_cuda_graphs=False)
    off.prepare((2, 3, 24, 40))
    assert not off._graphs


def test_graphs_are_given_the_stages_stream(network, stand_in):
    marker = object()  # on the CPU there is no CUDA stream; the stage passes what it holds
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                         use_cuda_graphs=True, stream=None)
    stage.stream = marker
    stage._implementation_for((1, 3, 24, 40))
    assert stand_in.made[-1]["stream"] is marker


def test_cpu_stage_has_no_stream_and_planar_coefficients(network):
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32)
    assert stage.stream is None and stage.coefficient_format == torch.contiguous_format
    coeff_a, coeff_b = stage(torch.rand(2, 3, 24, 40))
    assert coeff_a.is_contiguous() and coeff_b.is_contiguous()


# --------------------------------------------------------------------------- GPU only


@needs_cuda
def test_stage_runs_on_its_own_stream_and_orders_the_callers(pth_weights):
    """The network runs on ``stage.stream`` (not the legacy default stream); input written
    late on the caller's stream is seen, and the caller's stream sees the result."""
    import copy

    network = rvm.load(str(pth_weights), device="cuda", dtype=torch.float16)
    stage = MattingStage(copy.deepcopy(network), ratio=0.25, device="cuda", dtype=torch.float16)
    assert stage.stream is not None and stage.stream != torch.cuda.default_stream()
    stage.prepare((1, 3, 72, 128))
    reference = EagerMatting(network, None, "cuda", torch.float16, 0.25)
    base = torch.rand(1, 3, 72, 128, device="cuda")
    caller = torch.cuda.Stream()
    with torch.cuda.stream(caller):
        torch.cuda._sleep(50_000_000)
        src_sm = base * 1.0
        coeff_a, coeff_b = stage(src_sm)
        got = coeff_b.clone()
    caller.synchronize()
    assert coeff_a.stride(1) == 1  # channels_last for the Triton tail
    want = reference(base)[1]
    assert ((got.float() - want.float()).abs().max() / want.float().abs().max()).item() < 1e-2
    with torch.cuda.stream(stage.stream):  # the runner's way: no waits at all
        again = stage(base)[1].clone()
    torch.cuda.synchronize()
    assert torch.isfinite(again).all()
