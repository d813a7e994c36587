"""The CPU engines of the low-resolution network (nvpipe.engine.matting.engines, .ort,
.openvino).

- ONNX Runtime and OpenVINO on nvpipe's own export of ``coefficients`` against the PyTorch
  network on real frames, states carried: the parity tests' bar (tests/rvm/test_rvm_parity.py:
  fgr and pha within 1e-4 max abs after the tail, the unclamped states within 1e-3).
- Chunks, reset and load_state behave as EagerMatting's.
- auto: timed once, recorded in the cache, read back by the next stage; bad names refused.
- bfloat16 (opt-in): float32 coefficients back, near FP32.
- The CLI: --engine onnxruntime --profile writes every frame and prints the profile.
"""

import re

import av
import pytest
import torch
from conftest import count_frames

import rvm
from nvpipe.engine.matting import MattingStage
from nvpipe.engine.matting import engines
from nvpipe.engine.matting.engines import BF16_ENGINE, CpuMatting, read_choices, requested_engine
from nvpipe.errors import NvpipeError

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 1e-4  # tests/rvm/test_rvm_parity.py's FP32 bar (max abs, fgr and pha)
RATIO = 0.25


def _frames(path, count=6):
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float() / 255
            frames.append(rgb)
            if len(frames) == count:
                return frames
    return frames


def _small(src):
    return torch.nn.functional.interpolate(src[None], scale_factor=RATIO, mode="bilinear",
                                           align_corners=False, recompute_scale_factor=False)[0]


@pytest.fixture
def real_frames(footage):
    return _frames(footage("person_fullbody_360x640.mp4"))


def _file_engine(name):
    return pytest.param(name, marks=pytest.mark.skipif(
        not engines.available(name), reason=f"{name} is not installed"))


FILE_ENGINES = [_file_engine(name) for name in engines.FILE_ENGINES]


@pytest.mark.parametrize("engine", FILE_ENGINES)
def test_file_engine_matches_torch_on_real_frames(official_network, real_frames, engine):
    import copy

    torch_stage = MattingStage(copy.deepcopy(official_network), ratio=RATIO, device="cpu",
                               dtype=torch.float32, engine="torch")
    ort_stage = MattingStage(official_network, ratio=RATIO, device="cpu", dtype=torch.float32,
                             engine=engine)
    assert (torch_stage.engine, ort_stage.engine) == ("torch", engine)
    worst = {"fgr": 0.0, "pha": 0.0}
    for src in real_frames:
        small = _small(src)
        want = rvm.refine(*[c[None] for c in torch_stage(small)], src[None])
        got_a, got_b = ort_stage(small)
        assert got_a.dtype == torch.float32 and got_a.shape == (4, *small.shape[-2:])
        got = rvm.refine(got_a[None], got_b[None], src[None])
        for name, w, g in zip(("fgr", "pha"), want, got):
            worst[name] = max(worst[name], (w - g).abs().max().item())
    assert worst["fgr"] <= TOLERANCE and worst["pha"] <= TOLERANCE, worst
    states = zip(torch_stage._single.state(), ort_stage._single.state())
    assert max((a - b).abs().max().item() for a, b in states) <= 10 * TOLERANCE


@pytest.mark.parametrize("name", FILE_ENGINES)
def test_file_engine_chunks_reset_and_state(official_network, real_frames, name):
    from nvpipe.engine.matting.openvino import OpenVinoMatting
    from nvpipe.engine.matting.ort import OrtMatting

    OrtMatting = {"onnxruntime": OrtMatting, "openvino": OpenVinoMatting}[name]
    small = torch.stack([_small(src) for src in real_frames[:3]])
    engine = OrtMatting(official_network, RATIO)
    singles = [engine(frame)[1] for frame in small]
    engine.reset()
    chunked = engine(small)[1]
    torch.testing.assert_close(chunked, torch.stack(singles), rtol=0, atol=1e-6)
    engine.reset()
    torch.testing.assert_close(engine(small[0])[1], singles[0], rtol=0, atol=0)
    # load_state: a second engine continues from the first one's state.
    other = OrtMatting(official_network, RATIO)
    other.load_state(engine.state())
    engine_next = engine(small[1])[1]
    torch.testing.assert_close(other(small[1])[1], engine_next, rtol=0, atol=0)
    assert (engine_next - singles[0]).abs().max() > 1e-4  # the state matters
    with pytest.raises(ValueError, match="without reset"):
        engine(torch.rand(3, 32, 48))
    if name == "openvino":  # the compiled blob is kept for the next run
        import os
        from pathlib import Path

        assert any((Path(os.environ["NVPIPE_CACHE"]) / "openvino").iterdir())


@pytest.mark.skipif(not engines.available("openvino"), reason="openvino is not installed")
def test_openvino_compiles_from_its_sized_ir_and_survives_a_damaged_one(official_network,
                                                                       real_frames, tmp_path,
                                                                       monkeypatch):
    """The reshaped IR is written once per input size and compiled by path (its blob found
    without reading the ONNX file); a damaged IR falls back to the ONNX file, same output."""
    from nvpipe.engine.matting import openvino as ov_engine
    from nvpipe.engine.matting.ort import coefficients_model

    monkeypatch.setenv("NVPIPE_CACHE", str(tmp_path / "cache"))
    small = _small(real_frames[0])
    first = ov_engine.OpenVinoMatting(official_network, RATIO)(small)[1]
    written = list((tmp_path / "cache" / "openvino" / "ir").glob("*.xml"))
    height, width = small.shape[-2:]
    assert [p.name.endswith(f"-{height}x{width}.xml") for p in written] == [True]
    assert written[0].with_suffix(".bin").stat().st_size > 1_000_000  # float32 weights
    source = coefficients_model(official_network, True)
    assert ov_engine.sized_ir(str(tmp_path / "cache" / "openvino"), source, height, width,
                              "mobilenetv3") == written[0]
    torch.testing.assert_close(ov_engine.OpenVinoMatting(official_network, RATIO)(small)[1],
                               first, rtol=0, atol=0)
    written[0].write_text("<net broken")
    torch.testing.assert_close(ov_engine.OpenVinoMatting(official_network, RATIO)(small)[1],
                               first, rtol=0, atol=1e-6)
    assert not written[0].exists()  # removed, so that the next run writes it again
    ov_engine.OpenVinoMatting(official_network, RATIO)(small)
    assert written[0].read_text().startswith("<?xml")


def test_auto_times_once_and_caches_the_choice(official_network, monkeypatch):
    monkeypatch.delenv("NVPIPE_ENGINE", raising=False)
    import copy

    monkeypatch.setattr(engines, "_load_average", lambda: 100.0)  # a busy machine
    busy = CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO)
    busy(torch.rand(3, 36, 64))
    assert busy.name and busy.timings and read_choices() == {}  # used, not kept
    monkeypatch.setattr(engines, "_load_average", lambda: 0.5)

    first = CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO)
    assert first.name is None  # chosen on the first call, at its input size
    small = torch.rand(3, 36, 64)
    coeff_a, _ = first(small)
    names = {name for name in engines.ENGINES[1:] if engines.available(name)}
    names |= {BF16_ENGINE} if first.bf16_candidate else set()
    assert first.name in names and set(first.timings) == names
    assert coeff_a.shape == (4, 36, 64)
    (key, entry), = read_choices().items()
    assert "36x64" in key and entry["engine"] == first.name
    assert set(entry["ms_per_frame"]) == names
    # The first call's answer is the first frame's (the timing left no state behind).
    fresh = CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO, engine=first.name)
    torch.testing.assert_close(fresh(small)[0], coeff_a, rtol=0, atol=1e-6)
    second = CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO)
    second(small)
    assert second.name == first.name and second.timings == {}  # from the cache


def test_engine_names_checked(monkeypatch):
    from nvpipe.job import Job

    assert requested_engine("onnxruntime") == "onnxruntime"
    monkeypatch.setenv("NVPIPE_ENGINE", "tensorrt")
    with pytest.raises(NvpipeError, match="NVPIPE_ENGINE"):
        requested_engine()
    with pytest.raises(ValueError, match="engine"):
        Job(input="a.mp4", engine="tensorrt")
    with pytest.raises(ValueError, match="bfloat16"):
        Job(input="a.mp4", device="cuda", dtype="bfloat16")


def test_bfloat16_is_torch_and_returns_float32(official_network, real_frames, monkeypatch):
    import copy

    monkeypatch.delenv("NVPIPE_ENGINE", raising=False)
    fp32 = CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO, engine="torch")
    bf16 = CpuMatting(official_network, downsample_ratio=RATIO, dtype=torch.bfloat16)
    assert bf16.name == "torch"  # auto never picks ORT for bfloat16
    with pytest.raises(NvpipeError, match="float32"):
        CpuMatting(official_network, downsample_ratio=RATIO, engine="onnxruntime",
                   dtype=torch.bfloat16)
    src = real_frames[0]
    want = rvm.refine(*[c[None] for c in fp32(_small(src))], src[None])[1]
    coeff_a, coeff_b = bf16(_small(src))
    assert coeff_a.dtype == coeff_b.dtype == torch.float32
    got = rvm.refine(coeff_a[None], coeff_b[None], src[None])[1]
    assert 0 < (got - want).abs().mean().item() < 0.05  # close, not equal (8-bit mantissa)


def test_cli_onnxruntime_engine_with_profile(small_clip, weights_env, tmp_path, capsys):
    from nvpipe.app.cli import main

    out = tmp_path / "o.mp4"
    assert main(["run", str(small_clip), str(out), "--device", "cpu", "--engine", "onnxruntime",
                 "--ratio", "0.25", "--profile", "-q"]) == 0
    assert count_frames(out) == 8
    err = capsys.readouterr().err
    assert "profile: 8 frames" in err and re.search(r"network: onnxruntime at \d+x\d+", err)
    for stage in ("decode", "convert", "network", "tail", "encode"):
        assert f"  {stage} " in err
    assert "GFLOP/s" in err and "cores busy" in err


def test_auto_times_bfloat16_only_where_it_meets_the_bar(official_network, monkeypatch):
    import copy

    monkeypatch.delenv("NVPIPE_ENGINE", raising=False)
    monkeypatch.setattr(engines, "BF16_MEETS_BAR", True)
    monkeypatch.setattr(engines, "_load_average", lambda: 0.5)
    monkeypatch.setattr(engines, "native_bf16", lambda: True)
    default = CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO, dtype=None)
    asked = CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO)  # float32
    assert default.bf16_candidate and not asked.bf16_candidate
    coeff_a, _ = default(torch.rand(3, 36, 64))
    assert coeff_a.dtype == torch.float32
    installed = {name for name in engines.ENGINES[1:] if engines.available(name)}
    assert set(default.timings) == installed | {BF16_ENGINE}
    assert any(key.endswith("|bf16") for key in read_choices())
    monkeypatch.setattr(engines, "native_bf16", lambda: False)  # a CPU without BF16
    assert not CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO,
                          dtype=None).bf16_candidate


def test_engine_not_installed_is_one_line_and_auto_skips_it(official_network, monkeypatch):
    import copy

    monkeypatch.delenv("NVPIPE_ENGINE", raising=False)
    installed = engines.available
    monkeypatch.setattr(engines, "available", lambda name: name != "openvino" and installed(name))
    with pytest.raises(NvpipeError, match="--engine openvino needs OpenVINO: pip install openvino"):
        CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO, engine="openvino")
    auto = CpuMatting(copy.deepcopy(official_network), downsample_ratio=RATIO)
    assert "openvino" not in auto.candidates and "torch" in auto.candidates
