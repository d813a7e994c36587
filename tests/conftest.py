"""Shared test setup: the interpreter for Triton on CPU, ../shared paths, GPU markers."""

import os
import signal
from pathlib import Path

import pytest
import torch

# Triton reads this when a kernel is decorated, so it must be set before nvpipe.kernels
# imports. On a machine with a GPU the real compiler runs instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# A suite started in the background without job control (`pytest &` in a script) inherits
# SIGINT ignored, and so would every command it starts; the tests that send Ctrl-C to a
# child need it delivered (a handled signal is reset to the default in the child).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NVPIPE_SHARED", REPO.parent / "shared"))
# The commands the tests start in subprocesses import this checkout, whatever else is
# installed (an editable install of another worktree, say).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# The devices the pipeline's tests run on, one list (as torchcodec's tests do): every
# assertion made on the CPU is made on a GPU too wherever one is present. Tolerances per
# device and precision are tests/tolerances.py's.
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=needs_cuda)]


@pytest.fixture(params=DEVICES)
def pipeline_device(request) -> str:
    """Each of DEVICES in turn ("cpu", "cuda" where there is a GPU)."""
    return request.param

# Where the kernel tests run the Triton kernels: compiled on the GPU where there is one,
# otherwise the interpreter on the CPU.
TRITON_DEVICE = torch.device(
    "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") else "cpu")


def _copy_to(device: torch.device, tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor``'s whole storage on ``device``, viewed with the same shape,
    strides and offset (gaps, pitches and misalignments included)."""
    raw = torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage())
    return raw.to(device, copy=True).view(tensor.dtype).as_strided(
        tensor.shape, tensor.stride(), tensor.storage_offset())


def call_on(device: torch.device, kernel, *args, **kwargs):
    """``kernel(*args, **kwargs)`` with its tensor arguments copied to ``device``.

    Each ``out*=`` buffer's storage is copied back into the caller's tensor afterwards; a
    result that is such a buffer comes back as the caller's own tensor (``got is out``
    holds), a view of one as the same view of it, anything else as a CPU copy.
    """
    def moved(value):
        return _copy_to(device, value) if isinstance(value, torch.Tensor) else value

    device_kwargs = {k: moved(v) for k, v in kwargs.items()}
    outs = [(device_kwargs[k], v) for k, v in kwargs.items() if k.startswith("out") and isinstance(v, torch.Tensor)]
    result = kernel(*[moved(a) for a in args], **device_kwargs)
    for device_out, cpu_out in outs:
        torch.empty(0, dtype=torch.uint8).set_(cpu_out.untyped_storage()).copy_(
            torch.empty(0, dtype=torch.uint8, device=device).set_(device_out.untyped_storage()))

    def back(value):
        if not isinstance(value, torch.Tensor):
            return value
        for device_out, cpu_out in outs:
            if value is device_out:
                return cpu_out
            if value.untyped_storage().data_ptr() == device_out.untyped_storage().data_ptr():
                return cpu_out.as_strided(value.shape, value.stride(), value.storage_offset())
        return value.cpu()

    return tuple(back(v) for v in result) if isinstance(result, tuple) else back(result)


def triton_call(kernel, *args, **kwargs):
    """``kernel(*args, impl="triton", **kwargs)`` on TRITON_DEVICE for CPU tensor arguments:
    a plain call under the interpreter, :func:`call_on` the GPU where there is one."""
    # NVPIPE_TEST_COPY_INPUTS=1: the GPU machine's copying on the CPU, to check this harness.
    if TRITON_DEVICE.type == "cpu" and os.environ.get("NVPIPE_TEST_COPY_INPUTS") != "1":
        return kernel(*args, impl="triton", **kwargs)
    return call_on(TRITON_DEVICE, kernel, *args, impl="triton", **kwargs)


def load_bench_script(name: str):
    """``bench/<name>.py`` as a module (bench/ is a folder of scripts, not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"nvpipe_bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


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


def _isolate(monkeypatch, cache: Path) -> None:
    # No test may write to the user's cache or reach the network for weights by accident.
    monkeypatch.setenv("NVPIPE_CACHE", str(cache))
    monkeypatch.setenv("NVPIPE_OFFLINE", "1")
    # The CLI's default device is auto (the GPU where it can run); tests that want the GPU
    # say --device cuda, so a GPU machine runs the CPU tests as CI does.
    monkeypatch.setenv("NVPIPE_DEVICE", "cpu")
    # The CPU engine is torch unless a test asks (auto would export and time the other
    # engines in every test's fresh cache, and pick by timing: outputs compared across runs
    # would then depend on the machine's load); tests/engine/test_cpu_engines.py tests them.
    monkeypatch.setenv("NVPIPE_ENGINE", "torch")


@pytest.fixture(autouse=True, scope="session")
def _isolated_session(tmp_path_factory):
    """The same environment for module- and session-scoped fixtures, which are set up before
    any test's own (a module's reference batch ran with the user's cache and engine)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, tmp_path_factory.mktemp("session-cache"))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    _isolate(monkeypatch, tmp_path_factory.mktemp("cache"))


CLIP_FRAMES = 8


def make_clip(source: Path, path: Path, *, frames: int, size=None, start: int = 0,
              timed: bool = False) -> Path:
    """``frames`` frames of ``source`` from frame ``start`` on, at ``size`` (W, H; None keeps
    the source's), as H.264 at high quality (crf 8), 24 fps: the tests' short real clips.
    ``timed``: real timestamps, one frame per 1/24 s (otherwise every frame's pts is 0, as
    the tests written before it expect; streams need real ones)."""
    from fractions import Fraction

    import av

    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "8", "preset": "ultrafast"})
        for index, frame in enumerate(inp.decode(video=0)):
            if index >= start + frames:
                break
            if index < start:
                continue
            if index == start:
                width, height = size or (frame.width, frame.height)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            picture = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
            picture.pts = None
            if timed:
                picture.pts, picture.time_base = index - start, Fraction(1, 24)
            out.mux(stream.encode(picture))
        out.mux(stream.encode())
    return path


def footage_clip(tmp_path_factory, footage: str, name: str, *, make=None, **clip) -> Path:
    """``make_clip`` (or ``make(source, path, **clip)``) of ``../shared/footage/<footage>``
    into a fresh folder as ``name``, for module- and session-scoped fixtures (which cannot
    use ``footage``); skips where the footage is absent."""
    source = _shared_path(f"footage/{footage}")
    return (make or make_clip)(source, tmp_path_factory.mktemp(Path(name).stem) / name, **clip)


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory):
    """8 frames of real footage (person_fullbody) at 144x256, H.264 at high quality, 24 fps."""
    return footage_clip(tmp_path_factory, "person_fullbody_360x640.mp4", "person.mp4",
                        frames=CLIP_FRAMES, size=(144, 256))


def count_frames(path) -> int:
    """Decodes every video frame of a file (raises if it is broken) and counts them."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def decoded_frames(path) -> list:
    """Every video frame of a file as ``(time in seconds (Fraction), RGB uint8 [H, W, 3])``."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(frame.pts * stream.time_base, frame.to_ndarray(format="rgb24"))
                for frame in container.decode(stream)]


def zero_packet(source: Path, target: Path, number: int = 20) -> Path:
    """``source`` with the bytes of its video packet ``number`` zeroed (a P-frame of the
    shared clips): that packet fails to decode every time, even with frame threads (a few
    scrambled bytes are sometimes concealed instead)."""
    import av

    data = bytearray(source.read_bytes())
    with av.open(str(source)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    position, size = packets[number]
    data[position:position + size] = bytes(size)
    target.write_bytes(bytes(data))
    return target


@pytest.fixture(scope="session")
def _official_network_once():
    import rvm

    return rvm.load(str(_shared_path("weights/rvm_mobilenetv3_fp32.onnx")))


@pytest.fixture
def official_network(_official_network_once):
    """The official MobileNetV3 network (``rvm.load`` of the shared ONNX weights), loaded
    once per test session; each test gets its own copy (stages move networks in place)."""
    import copy

    return copy.deepcopy(_official_network_once)


# Poison for output buffers, so a kernel that skips a sample is seen: NaN for floats, 0xAB
# for bytes (no kernel writes 171 into the tests' outputs by chance on every sample).
POISON_BYTE = 0xAB


def poisoned(shape, dtype) -> torch.Tensor:
    """A buffer of ``shape``/``dtype`` filled with poison (``POISON_BYTE`` or NaN)."""
    if dtype == torch.uint8:
        return torch.full(shape, POISON_BYTE, dtype=dtype)
    return torch.full(shape, float("nan"), dtype=dtype)


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


def pytest_collection_modifyitems(config, items):
    """``fast`` marks every test that is not ``slow``: ``pytest -m fast`` is the inner loop."""
    for item in items:
        if item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.fast)


def mount_tmpfs(folder: Path, options: str) -> None:
    """A tmpfs at ``folder`` (made here) with mount ``options`` (``size=1m``, ``ro``): a small
    or read-only disk for the failure tests; skips where mounting is not allowed."""
    import subprocess

    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
