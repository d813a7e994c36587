"""``nvpipe export`` and TorchScript: parity with the official ONNX and with eager PyTorch.

- Our ONNX in ONNX Runtime against the official ``rvm_mobilenetv3_fp32.onnx`` in ONNX
  Runtime, on the same real frames (rgb24 / 255), 8 recurrent frames, ratios 0.25, 0.5,
  0.999: max abs 1e-4 on fgr and pha (states 1e-3: unclamped).
- The interface (names, element types, dynamic dims) is the official file's.
- FP16 ONNX in ONNX Runtime's CPU provider (it runs: ORT casts around the ops it has no
  FP16 kernel for) against the official FP32: the project's FP16 criterion, alpha MAE
  below 1e-3 on every frame, plus a max abs bound.
- ``torch.jit.script`` / ``torch.jit.freeze`` against eager: 1e-5 on random inputs and
  weights, several recurrent frames, chunks, ratio 1; and on the exported file.
"""

from functools import lru_cache
from itertools import islice

import numpy as np
import pytest
import torch

import rvm
from nvpipe.app.cli import main

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
av = pytest.importorskip("av")

from tolerances import ALPHA_MAD as FP16_ALPHA_MAE
from tolerances import EXPORT_FP32 as TOLERANCE
from tolerances import FP16_ONNX_MAX as FP16_MAX_ABS
from tolerances import SCRIPT as SCRIPT_TOLERANCE

FRAMES = 8

pytestmark = pytest.mark.usefixtures("one_thread")


@lru_cache(maxsize=None)
def _frames(path: str, count: int) -> tuple[np.ndarray, ...]:
    with av.open(path) as container:
        return tuple(
            (f.to_ndarray(format="rgb24").transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)
            for f in islice(container.decode(video=0), count)
        )


def _session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, frames, ratio, dtype=np.float32):
    """Every frame's outputs, states carried from the official first-frame zeros."""
    states = [np.zeros((1, 1, 1, 1), dtype)] * 4
    for src in frames:
        feeds = {"src": src.astype(dtype), "downsample_ratio": np.array([ratio], np.float32)}
        feeds.update({f"r{i + 1}i": s for i, s in enumerate(states)})
        outputs = session.run(None, feeds)
        states = outputs[2:]
        yield [o.astype(np.float32) for o in outputs]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Our FP32 and FP16 ONNX exports and TorchScript file, through the CLI."""
    from conftest import SHARED

    weights = SHARED / "weights" / "rvm_mobilenetv3_fp32.onnx"
    if not weights.exists():
        pytest.skip(f"{weights} is absent")
    directory = tmp_path_factory.mktemp("exports")
    paths = {"fp32": directory / "ours_fp32.onnx", "fp16": directory / "ours_fp16.onnx",
             "torchscript": directory / "ours.torchscript"}
    assert main(["export", str(paths["fp32"]), "--weights", str(weights)]) == 0
    assert main(["export", "--format", "onnx", str(paths["fp16"]), "--dtype", "float16",
                 "--weights", str(weights)]) == 0
    assert main(["export", "--format", "torchscript", str(paths["torchscript"]),
                 "--weights", str(weights)]) == 0
    return paths


def _signature(path):
    model = onnx.load(str(path))

    def describe(values):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    return describe(model.graph.input), describe(model.graph.output)


def test_onnx_interface_is_the_official_one(exports, onnx_weights):
    # Our own graph (traced from rvm.MattingNetwork), not a copy of the official file.
    ours = {n.op_type for n in onnx.load(str(exports["fp32"])).graph.node}
    assert "HardSwish" in ours and "HardSwish" not in {n.op_type for n in onnx.load(str(onnx_weights)).graph.node}
    assert _signature(exports["fp32"]) == _signature(onnx_weights)
    inputs, outputs = _signature(exports["fp16"])
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert [t for _, t, _ in inputs] == [half] * 5 + [single]  # the ratio stays float32
    assert [t for _, t, _ in outputs] == [half] * 6


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.999])
def test_onnx_matches_the_official_onnx_on_real_frames(exports, onnx_weights, footage, ratio):
    frames = _frames(str(footage("person_fullbody_360x640.mp4")), FRAMES)
    worst = dict(fgr=0.0, pha=0.0, states=0.0)
    count = 0
    for ours, official in zip(_run(_session(exports["fp32"]), frames, ratio),
                              _run(_session(onnx_weights), frames, ratio)):
        count += 1
        assert [o.shape for o in ours] == [o.shape for o in official]
        worst["fgr"] = max(worst["fgr"], float(np.abs(ours[0] - official[0]).max()))
        worst["pha"] = max(worst["pha"], float(np.abs(ours[1] - official[1]).max()))
        worst["states"] = max(worst["states"], *(float(np.abs(a - b).max())
                                                 for a, b in zip(ours[2:], official[2:])))
        assert 0.05 < official[1].mean() < 0.6  # a person: the comparison is not of zeros
    print(f"ratio {ratio}: max abs over {count} frames {worst}")
    assert count == FRAMES
    assert worst["fgr"] <= TOLERANCE and worst["pha"] <= TOLERANCE
    assert worst["states"] <= 10 * TOLERANCE


def test_onnx_sizes_batch_and_ratio_are_dynamic(exports, onnx_weights):
    """Another size (odd, so every halving rounds up), a batch of 2, a ratio not traced."""
    generator = np.random.default_rng(0)
    frames = [generator.random((2, 3, 101, 173), dtype=np.float32) for _ in range(3)]
    for ours, official in zip(_run(_session(exports["fp32"]), frames, 0.7),
                              _run(_session(onnx_weights), frames, 0.7)):
        assert ours[0].shape == (2, 3, 101, 173) and ours[2].shape == official[2].shape
        assert max(float(np.abs(a - b).max()) for a, b in zip(ours, official)) <= TOLERANCE


def test_fp16_onnx_within_fp16_tolerance(exports, onnx_weights, footage):
    frames = _frames(str(footage("person_fullbody_360x640.mp4")), FRAMES)
    maes, worst = [], 0.0
    for ours, official in zip(_run(_session(exports["fp16"]), frames, 0.25, np.float16),
                              _run(_session(onnx_weights), frames, 0.25)):
        maes.append(float(np.abs(ours[1] - official[1]).mean()))
        worst = max(worst, float(np.abs(ours[1] - official[1]).max()),
                    float(np.abs(ours[0] - official[0]).max()))
    print(f"FP16 ONNX vs official FP32, ratio 0.25: alpha MAE per frame {maes}, max abs {worst}")
    assert len(maes) == FRAMES
    assert max(maes) < FP16_ALPHA_MAE and worst < FP16_MAX_ABS


@pytest.mark.slow
def test_exported_torchscript_frozen_matches_eager_on_real_frames(exports, onnx_weights, footage, official_network):
    frames = [torch.from_numpy(f) for f in _frames(str(footage("person_fullbody_360x640.mp4")), FRAMES)]
    eager = official_network
    frozen = torch.jit.freeze(torch.jit.load(str(exports["torchscript"])))
    for ratio in (0.25, 0.999):
        eager_states, frozen_states = [None] * 4, [None] * 4
        with torch.no_grad():
            for src in frames:
                expected = eager(src, *eager_states, downsample_ratio=ratio)
                actual = frozen(src, *frozen_states, ratio)
                eager_states, frozen_states = expected[2:], actual[2:]
                for a, b in zip(actual, expected):
                    torch.testing.assert_close(a, b, rtol=0, atol=SCRIPT_TOLERANCE)


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
def test_script_and_freeze_match_eager_on_random_inputs(variant):
    torch.manual_seed(0)
    network = rvm.MattingNetwork(variant, folded=True).eval()
    scripted = torch.jit.script(network)
    frozen = torch.jit.freeze(torch.jit.script(network))
    generator = torch.Generator().manual_seed(1)
    for ratio, shape in ((0.5, (1, 3, 96, 160)), (1.0, (1, 3, 64, 96)), (0.4, (1, 2, 3, 80, 120))):
        states = {name: [None] * 4 for name in ("eager", "scripted", "frozen")}
        for _ in range(4):  # recurrent frames
            src = torch.rand(shape, generator=generator)
            with torch.no_grad():
                expected = network(src, *states["eager"], downsample_ratio=ratio)
                for name, module in (("scripted", scripted), ("frozen", frozen)):
                    actual = module(src, *states[name], ratio)
                    states[name] = actual[2:]
                    assert len(actual) == 6
                    for a, b in zip(actual, expected):
                        torch.testing.assert_close(a, b, rtol=0, atol=SCRIPT_TOLERANCE)
                states["eager"] = expected[2:]


def test_fp16_torchscript_export_runs_within_tolerance(tmp_path, onnx_weights, footage, official_network):
    """FP16 on the CPU (PyTorch has FP16 CPU kernels for every op used) against FP32 eager."""
    path = tmp_path / "half.torchscript"
    assert main(["export", str(path), "--dtype", "float16", "--weights", str(onnx_weights)]) == 0
    half = torch.jit.freeze(torch.jit.load(str(path)))
    eager = official_network
    frames = [torch.from_numpy(f) for f in _frames(str(footage("person_fullbody_360x640.mp4")), 3)]
    states, half_states = [None] * 4, [None] * 4
    with torch.no_grad():
        for src in frames:
            fgr, pha, *states = eager(src, *states, downsample_ratio=0.25)
            fgr16, pha16, *half_states = half(src.half(), *half_states, 0.25)
            assert pha16.dtype == torch.float16
            assert (pha16.float() - pha).abs().mean() < FP16_ALPHA_MAE
            assert (pha16.float() - pha).abs().max() < FP16_MAX_ABS


def test_segmentation_pass(onnx_weights, pth_weights):
    net = rvm.MattingNetwork("mobilenetv3").eval()  # random init: a (random) head exists
    src = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        seg, *states = net(src, downsample_ratio=0.5, segmentation_pass=True)
        assert seg.shape == (1, 1, 32, 48) and len(states) == 4
        chunk_seg, *_ = net(src[None].expand(1, 2, 3, 64, 96), downsample_ratio=0.5,
                            segmentation_pass=True)
        assert chunk_seg.shape == (1, 2, 1, 32, 48)
        torch.testing.assert_close(torch.jit.script(net)(src, None, None, None, None, 0.5, True)[0],
                                   seg, rtol=0, atol=SCRIPT_TOLERANCE)
    for weights in (onnx_weights, pth_weights):  # the released ONNX, the head-less .pth
        headless = rvm.load(weights)
        assert not headless.has_segmentation_head
        with pytest.raises(rvm.WeightsError, match="no project_seg") as error:
            headless(src, segmentation_pass=True)
        assert "\n" not in str(error.value)
        with pytest.raises(torch.jit.Error, match="segmentation head"):
            torch.jit.script(headless)(src, None, None, None, None, 1.0, True)


def test_export_errors_are_one_line(tmp_path, onnx_weights, capsys):
    existing = tmp_path / "there.onnx"
    existing.write_bytes(b"x")
    cases = [
        ["export", str(existing), "--weights", str(onnx_weights)],  # exists, no -y
        ["export", str(tmp_path / "m.bin")],  # format unknown
        ["export", str(tmp_path / "m.onnx"), "--opset", "9"],
        ["export", str(tmp_path / "m.pt"), "--opset", "17"],  # opset for TorchScript
        ["export", str(tmp_path / "no" / "m.onnx"), "--weights", str(onnx_weights)],
        ["export", str(tmp_path / "r.onnx"), "--variant", "resnet50"],  # no weights
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("nvpipe: error: ") and err.count("\n") == 1, (argv, err)
    assert existing.read_bytes() == b"x"


def test_export_opset_12_like_the_official_file(tmp_path, onnx_weights):
    path = tmp_path / "opset12.onnx"
    assert main(["export", str(path), "--opset", "12", "--weights", str(onnx_weights)]) == 0
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == 12
    frames = [np.random.default_rng(2).random((1, 3, 64, 64), dtype=np.float32)] * 2
    for ours, official in zip(_run(_session(path), frames, 0.5), _run(_session(onnx_weights), frames, 0.5)):
        assert max(float(np.abs(a - b).max()) for a, b in zip(ours, official)) <= TOLERANCE


def test_resnet50_export_matches_eager(tmp_path):
    """ResNet50 (no official ONNX to compare with): our ONNX in ORT against eager PyTorch,
    random weights in the official .pth layout, 3 recurrent frames."""
    torch.manual_seed(0)
    unfolded = rvm.MattingNetwork("resnet50")
    weights = tmp_path / "rvm_resnet50_random.pth"
    torch.save(unfolded.state_dict(), weights)
    path = tmp_path / "resnet50.onnx"
    assert main(["export", str(path), "--variant", "resnet50", "--weights", str(weights)]) == 0
    assert [d.dim_value for d in onnx.load(str(path)).graph.output[5].type.tensor_type.shape.dim][1] == 128
    eager = rvm.load(weights, variant="resnet50")
    generator = np.random.default_rng(4)
    frames = [generator.random((1, 3, 96, 128), dtype=np.float32) for _ in range(3)]
    states = [None] * 4
    for src, ours in zip(frames, _run(_session(path), frames, 0.5)):
        with torch.no_grad():
            expected = eager(torch.from_numpy(src), *states, downsample_ratio=0.5)
        states = expected[2:]
        for a, b in zip(ours, expected):
            assert float(np.abs(a - b.numpy()).max()) <= TOLERANCE
