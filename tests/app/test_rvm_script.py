"""A script written for RVM's converter runs end to end with only its import lines changed.

The scripts are RVM's README usage, as files, run by a fresh interpreter on a short real
clip (person_fullbody_360x640.mp4, trimmed to a few frames with PyAV): the eager model with
an official-layout .pth, RVM's TorchScript usage (a frozen module, device and dtype given),
and TorchHub (``torch.hub.load(<checkout>, ..., source="local")``). Each writes the alpha
as a PNG sequence (lossless), so the three can be compared code for code.
"""

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED, footage_clip

av = pytest.importorskip("av")
Image = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[2]
FRAMES = 4
RATIO = 0.25  # 90x160 inside the network: the test's CPU time is the pipeline's, not the net's

# RVM's README, word for word but for the import lines (marked) and the paths.
RVM_EAGER_SCRIPT = """
import torch
from model import MattingNetwork          # RVM
from inference import convert_video       # RVM

model = MattingNetwork('mobilenetv3').eval()
model.load_state_dict(torch.load({weights!r}))

convert_video(
    model,
    input_source={clip!r},
    output_type='video',
    output_composition={out!r} + '/com.mp4',
    output_alpha={out!r} + '/pha.mp4',
    output_foreground={out!r} + '/fgr.mp4',
    output_video_mbps=4,
    downsample_ratio={ratio!r},
    seq_chunk=12,
)
convert_video(model, input_source={clip!r}, output_type='png_sequence',
              output_alpha={out!r} + '/pha', downsample_ratio={ratio!r})
"""

RVM_TORCHSCRIPT_SCRIPT = """
import torch
from inference import convert_video       # RVM

model = torch.jit.load({torchscript!r})
model = torch.jit.freeze(model)
convert_video(model, input_source={clip!r}, output_type='png_sequence',
              output_alpha={out!r} + '/pha', downsample_ratio={ratio!r},
              device='cpu', dtype=torch.float32)
"""

RVM_HUB_SCRIPT = """
import torch
model = torch.hub.load("PeterL1n/RobustVideoMatting", "mobilenetv3")
convert_video = torch.hub.load("PeterL1n/RobustVideoMatting", "converter")
convert_video(model, input_source={clip!r}, output_type='png_sequence',
              output_alpha={out!r} + '/pha', downsample_ratio={ratio!r})
"""

# The only edits a user makes.
IMPORT_CHANGES = {
    "from model import MattingNetwork          # RVM": "from rvm import MattingNetwork",
    "from inference import convert_video       # RVM": "from nvpipe import convert_video",
    '"PeterL1n/RobustVideoMatting", "mobilenetv3")': f'{str(REPO)!r}, "mobilenetv3", source="local")',
    '"PeterL1n/RobustVideoMatting", "converter")': f'{str(REPO)!r}, "converter", source="local")',
}


def _changed(script: str, lines: int = 2) -> str:
    changed = script
    for old, new in IMPORT_CHANGES.items():
        changed = changed.replace(old, new)
    differing = [a for a, b in zip(script.splitlines(), changed.splitlines()) if a != b]
    assert len(differing) == lines, differing  # the import lines changed, nothing else
    return changed


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The first FRAMES frames of person_fullbody_360x640.mp4, at its size (H.264, crf 8)."""
    return footage_clip(tmp_path_factory, "person_fullbody_360x640.mp4", "person.mp4",
                        frames=FRAMES)


def _run_script(text: str, directory: Path, env_extra: dict) -> None:
    directory.mkdir()
    script = directory / "user_script.py"
    script.write_text(text)
    env = {**os.environ, **env_extra, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _alphas(directory: Path) -> list[np.ndarray]:
    files = sorted(directory.glob("*.png"))
    assert len(files) == FRAMES
    return [np.asarray(Image.open(f)).astype(np.int16) for f in files]


def _video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def eager_run(clip, tmp_path_factory):
    pth = SHARED / "weights" / "rvm_mobilenetv3_bnidentity.pth"
    if not pth.exists():
        pytest.skip(f"{pth} is absent")
    out = tmp_path_factory.mktemp("runs") / "eager"
    _run_script(_changed(RVM_EAGER_SCRIPT.format(weights=str(pth), clip=str(clip), out=str(out),
                                                 ratio=RATIO)), out, {})
    return out


def test_rvm_eager_script_with_import_lines_changed(eager_run, clip):
    for name in ("com.mp4", "pha.mp4", "fgr.mp4"):
        assert _video_frames(eager_run / name) == FRAMES, name
    alphas = _alphas(eager_run / "pha")
    # A person in the frame: a real matte, neither empty nor full (measured ~0.2 coverage).
    coverage = np.mean([a.mean() / 255 for a in alphas])
    assert 0.05 < coverage < 0.6
    assert all(a.shape == (640, 360) for a in alphas)


def test_rvm_torchscript_script_frozen_module(eager_run, clip, tmp_path, onnx_weights):
    from nvpipe.app.cli import main

    torchscript = tmp_path / "rvm_mobilenetv3.torchscript"
    # The .pth of the eager run and the ONNX hold the same weights (~3e-5 apart, SOURCE.md).
    assert main(["export", "--format", "torchscript", str(torchscript),
                 "--weights", str(onnx_weights)]) == 0
    out = tmp_path / "run"
    _run_script(_changed(RVM_TORCHSCRIPT_SCRIPT.format(torchscript=str(torchscript), clip=str(clip),
                                                       out=str(out), ratio=RATIO), lines=1), out, {})
    for ours, reference in zip(_alphas(out / "pha"), _alphas(eager_run / "pha")):
        assert np.abs(ours - reference).max() <= 1  # 8-bit codes: rounding of ~3e-5 apart


def test_rvm_hub_script(eager_run, clip, tmp_path, onnx_weights):
    out = tmp_path / "run"
    _run_script(_changed(RVM_HUB_SCRIPT.format(clip=str(clip), out=str(out), ratio=RATIO)), out,
                {"NVPIPE_WEIGHTS": str(onnx_weights), "NVPIPE_OFFLINE": "1"})
    for ours, reference in zip(_alphas(out / "pha"), _alphas(eager_run / "pha")):
        assert np.abs(ours - reference).max() <= 1


def test_frozen_module_without_device_and_dtype_is_one_line_error(onnx_weights, tmp_path, clip, official_network):
    import rvm
    from nvpipe import NvpipeError, convert_video

    frozen = torch.jit.freeze(torch.jit.script(official_network))
    with pytest.raises(NvpipeError, match="pass device= and dtype="):
        convert_video(frozen, input_source=str(clip), output_alpha=str(tmp_path / "a.mp4"),
                      progress=False)


@pytest.mark.usefixtures("one_thread")
def test_every_kind_of_module_gives_the_same_matte(onnx_weights, clip, tmp_path, official_network):
    """In-process: the eager network, an unfrozen TorchScript module (its state_dict), a
    frozen one that kept ``coefficients``, and a frozen forward-only one (RVM's forward on
    the full-size frames) write the same alpha."""
    import rvm
    from nvpipe import convert_video
    from nvpipe.model.adapters import ForwardMatting, ScriptedCoefficients, as_network

    scripted = torch.jit.script(official_network)
    models = {
        "eager": copy.deepcopy(official_network),
        "scripted": scripted,
        "frozen_coefficients": torch.jit.freeze(scripted, preserved_attrs=["coefficients"]),
        "frozen_forward": torch.jit.freeze(scripted),
    }
    assert isinstance(as_network(models["scripted"], "cpu", torch.float32), rvm.MattingNetwork)
    assert isinstance(as_network(models["frozen_coefficients"], "cpu", torch.float32),
                      ScriptedCoefficients)
    assert isinstance(as_network(models["frozen_forward"], "cpu", torch.float32), ForwardMatting)
    alphas = {}
    for name, model in models.items():
        convert_video(model, input_source=str(clip), output_type="png_sequence",
                      output_alpha=str(tmp_path / name), downsample_ratio=RATIO, seq_chunk=2,
                      progress=False, device="cpu", dtype=torch.float32)
        alphas[name] = _alphas(tmp_path / name)
    for name in models:
        for ours, reference in zip(alphas[name], alphas["eager"]):
            assert np.abs(ours - reference).max() <= 1, name


def test_forward_adapter_coefficients_reproduce_forward(onnx_weights, official_network):
    """ForwardMatting's full-size coefficients through the tail give the module's output."""
    import rvm
    from nvpipe.model.adapters import ForwardMatting

    network = official_network
    adapter = ForwardMatting(torch.jit.freeze(torch.jit.script(copy.deepcopy(official_network))))
    generator = torch.Generator().manual_seed(0)
    src = torch.rand(1, 2, 3, 72, 128, generator=generator)
    states, adapter_states = [None] * 4, [None] * 4
    with torch.no_grad():
        for _ in range(3):
            fgr, pha, *states = network(src, *states, downsample_ratio=0.5)
            coeff_a, coeff_b, *adapter_states = adapter.coefficients(
                rvm.downsample(src, 0.5), *adapter_states, downsample_ratio=0.5, src=src)
            tail_fgr, tail_pha = rvm.refine(coeff_a, coeff_b, src)
            torch.testing.assert_close(tail_fgr, fgr, rtol=0, atol=1e-5)
            torch.testing.assert_close(tail_pha, pha, rtol=0, atol=1e-5)


def test_any_module_holding_rvms_state_dict(pth_weights):
    """RVM's own ``model.MattingNetwork`` is another class with the same state_dict: stood in
    for here by a plain module that holds the layers under the same names."""
    import rvm
    from nvpipe import NvpipeError
    from nvpipe.model.adapters import as_network

    official = rvm.MattingNetwork("mobilenetv3")
    official.load_state_dict(torch.load(pth_weights, weights_only=True))

    class RvmStyle(torch.nn.Module):  # not an rvm.MattingNetwork
        def __init__(self):
            super().__init__()
            for name, child in official.named_children():
                self.add_module(name, child)

    network = as_network(RvmStyle().eval(), "cpu", torch.float32)
    assert isinstance(network, rvm.MattingNetwork) and network.folded
    src = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = official.eval()(src, downsample_ratio=0.5)
        for a, b in zip(network(src, downsample_ratio=0.5), expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # BatchNorm folded
    with pytest.raises(NvpipeError, match="not RVM's") as error:
        as_network(torch.nn.Linear(2, 2), "cpu", torch.float32)
    assert "\n" not in str(error.value)
    with pytest.raises(NvpipeError, match="got int"):
        as_network(3, "cpu", torch.float32)


def test_session_runs_a_forward_only_module(onnx_weights, official_network):
    """MattingSession hands the full-size frame to a needs_source network too."""
    import rvm
    from nvpipe import MattingSession
    from nvpipe.model.adapters import ForwardMatting

    frozen = ForwardMatting(torch.jit.freeze(torch.jit.script(official_network)))
    sessions = [MattingSession(ratio=0.5, network=frozen),
                MattingSession(ratio=0.5, network=copy.deepcopy(official_network))]
    generator = np.random.default_rng(5)
    for _ in range(3):
        frame = generator.integers(0, 256, (72, 128, 3), dtype=np.uint8)
        ours, reference = (session.process(frame) for session in sessions)
        torch.testing.assert_close(ours.alpha, reference.alpha, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.foreground, reference.foreground, rtol=0, atol=1e-5)
