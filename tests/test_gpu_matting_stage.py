"""MattingStage's per-shape matting instances on CUDA: the recurrent state follows the
frames whatever chunk length comes next.

On CUDA each chunk shape gets its own ``GraphedMatting`` with its own state buffers, and the
stage must hand the state from the instance that ran last to the next one. That hand-over is
plain Python; here ``EagerMatting`` (the same interface, its own state per instance) stands in
for the graph class so it runs on the CPU. The graphs themselves are tested on a GPU in
test_gpu_graphs.py.
"""

import pytest
import torch

import nvpipe.cuda_graphs as cuda_graphs
from nvpipe.matting import MattingStage

rvm = pytest.importorskip("rvm")


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return rvm.fuse(rvm.MattingNetwork("mobilenetv3").eval())


def test_state_follows_the_frames_across_chunk_lengths(network, monkeypatch):
    monkeypatch.setattr(cuda_graphs, "GraphedMatting", cuda_graphs.EagerMatting)
    frames = torch.rand(8, 3, 24, 40)
    lengths = [2, 1, 2, 3]  # back to an earlier shape, then a new one
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                         use_cuda_graphs=True)
    got, start = [], 0
    for length in lengths:
        coeff_a, coeff_b = stage(frames[start:start + length])
        got.append(coeff_b.clone())
        start += length
    assert len(stage._graphs) == 3
    reference = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                             use_cuda_graphs=False)
    want = [reference(frames[i:i + 1])[1] for i in range(8)]
    torch.testing.assert_close(torch.cat(got), torch.cat(want), rtol=1e-4, atol=1e-5)


def test_reset_starts_every_shape_from_zero(network, monkeypatch):
    monkeypatch.setattr(cuda_graphs, "GraphedMatting", cuda_graphs.EagerMatting)
    frames = torch.rand(3, 3, 24, 40)
    stage = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                         use_cuda_graphs=True)
    stage(frames[:2])
    stage(frames[2:3])
    stage.reset()
    after_reset = stage(frames[:2])[1].clone()
    fresh = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                         use_cuda_graphs=False)
    want = torch.cat([fresh(frames[i:i + 1])[1] for i in range(2)])
    torch.testing.assert_close(after_reset, want, rtol=1e-4, atol=1e-5)


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
    reference = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32,
                             use_cuda_graphs=False)
    want = torch.cat([reference(frames[i:i + 1])[1] for i in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    off = MattingStage(network, ratio=0.5, device="cpu", dtype=torch.float32, use_cuda_graphs=False)
    off.prepare((2, 3, 24, 40))
    assert not off._graphs
