"""Shared test setup: the interpreter for Triton on CPU, ../shared paths, GPU markers."""

import os
from pathlib import Path

import pytest
import torch

# Triton reads this when a kernel is decorated, so it must be set before nvpipe.kernels
# imports. On a machine with a GPU the real compiler runs instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NVPIPE_SHARED", REPO.parent / "shared"))

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _shared_path(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared holds the weights and footage)")
    return path


@pytest.fixture
def shared_path():
    """Returns a function: relative path under ../shared -> Path, skipping when absent."""
    return _shared_path


@pytest.fixture
def onnx_weights() -> Path:
    return _shared_path("weights/rvm_mobilenetv3_fp32.onnx")


@pytest.fixture
def pth_weights() -> Path:
    return _shared_path("weights/rvm_mobilenetv3_bnidentity.pth")


@pytest.fixture
def footage():
    """Returns a function: clip name under ../shared/footage -> Path, skipping when absent."""
    return lambda name: _shared_path(f"footage/{name}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # No test may write to the user's cache or reach the network for weights by accident.
    monkeypatch.setenv("NVPIPE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("NVPIPE_OFFLINE", "1")


CLIP_FRAMES = 8


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory):
    """8 frames of real footage (person_fullbody) at 144x256, H.264 at high quality, 24 fps."""
    import av

    source = SHARED / "footage" / "person_fullbody_360x640.mp4"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    path = tmp_path_factory.mktemp("clips") / "person.mp4"
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "8", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 144, 256, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == CLIP_FRAMES:
                break
            small = frame.reformat(width=144, height=256, format="yuv420p")
            small.pts = None
            out.mux(stream.encode(small))
        out.mux(stream.encode())
    return path


@pytest.fixture
def weights_env(onnx_weights, monkeypatch):
    """The official ONNX weights as the default weights (NVPIPE_WEIGHTS)."""
    monkeypatch.setenv("NVPIPE_WEIGHTS", str(onnx_weights))
    return onnx_weights


@pytest.fixture
def one_thread():
    """torch on one thread for the test: on 2 shared cores, OpenMP workers spin-waiting on a
    busy core slow small ops down many times over, and one thread is as fast for them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
