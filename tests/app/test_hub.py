"""TorchHub entry points, ``nvpipe weights``, ``nvpipe --version``, the download line.

Weights come from ../shared through ``NVPIPE_WEIGHTS`` or a cache directory set up here;
``NVPIPE_OFFLINE=1`` (conftest) forbids downloads, and the one "download" is a file:// URL.
"""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

import nvpipe
import rvm
from nvpipe.app.cli import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = rvm.DEFAULT_WEIGHTS["mobilenetv3"]


def _hub(name, **kwargs):
    return torch.hub.load(str(REPO), name, source="local", trust_repo=True, **kwargs)


def _same_outputs(a, b):
    src = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return all(torch.equal(x, y) for x, y in zip(a(src, downsample_ratio=0.5),
                                                      b(src, downsample_ratio=0.5)))


def test_hub_mobilenetv3_through_nvpipe_weights(weights_env):
    model = _hub("mobilenetv3")
    assert isinstance(model, rvm.MattingNetwork) and not model.training
    assert _same_outputs(model, rvm.load(weights_env))
    fgr, pha, *rec = model(torch.rand(1, 3, 64, 64), *[None] * 4, 0.5)  # RVM's call
    assert pha.shape == (1, 1, 64, 64) and len(rec) == 4


def test_hub_takes_the_cache_and_an_explicit_file(onnx_weights, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(onnx_weights, cache / DEFAULT.filename)
    monkeypatch.setenv("NVPIPE_CACHE", str(cache))
    monkeypatch.delenv("NVPIPE_WEIGHTS", raising=False)
    from_cache = _hub("mobilenetv3")
    assert _same_outputs(from_cache, rvm.load(onnx_weights))
    assert _same_outputs(_hub("mobilenetv3", weights=str(onnx_weights)), from_cache)


def test_hub_without_weights_offline_is_a_weights_error(monkeypatch):
    monkeypatch.delenv("NVPIPE_WEIGHTS", raising=False)
    with pytest.raises(rvm.WeightsError, match="NVPIPE_OFFLINE=1 forbids downloading"):
        _hub("mobilenetv3")
    assert isinstance(_hub("mobilenetv3", pretrained=False), rvm.MattingNetwork)


def test_hub_resnet50_needs_a_file(monkeypatch):
    monkeypatch.delenv("NVPIPE_WEIGHTS", raising=False)
    with pytest.raises(rvm.WeightsError, match="resnet50 has no downloadable default") as error:
        _hub("resnet50")
    assert "\n" not in str(error.value)
    assert _hub("resnet50", pretrained=False).variant == "resnet50"


def test_hub_converter_is_convert_video():
    assert _hub("converter") is nvpipe.convert_video


def test_weights_command_reports_a_present_file(weights_env, capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"mobilenetv3: {weights_env} (from NVPIPE_WEIGHTS)"


def test_weights_command_offline_and_absent_fails_with_the_reason(monkeypatch, capsys):
    monkeypatch.delenv("NVPIPE_WEIGHTS", raising=False)
    assert main(["weights"]) == 1
    assert "NVPIPE_OFFLINE=1 forbids downloading" in capsys.readouterr().out
    assert main(["weights", "--variant", "resnet50"]) == 1
    assert "no default weights for resnet50" in capsys.readouterr().out


def test_weights_command_fetches_says_so_then_reports_the_cache(onnx_weights, monkeypatch,
                                                               tmp_path, capsys):
    monkeypatch.delenv("NVPIPE_WEIGHTS", raising=False)
    monkeypatch.setenv("NVPIPE_OFFLINE", "0")
    cache = tmp_path / "cache"
    monkeypatch.setenv("NVPIPE_CACHE", str(cache))
    # The release URL replaced by the shared file: a real fetch, nothing leaves the machine.
    monkeypatch.setitem(rvm.weights.DEFAULT_WEIGHTS, "mobilenetv3",
                        dataclasses.replace(DEFAULT, url=onnx_weights.as_uri()))
    assert main(["weights"]) == 0
    captured = capsys.readouterr()
    assert "nvpipe: downloading the mobilenetv3 weights" in captured.err
    cached = cache / DEFAULT.filename
    assert captured.out.strip() == f"mobilenetv3: {cached} (cache, sha256 verified)"
    assert rvm.weights.sha256_of(cached) == DEFAULT.sha256
    # A present cache: only reported, nothing fetched (offline is not even needed).
    monkeypatch.setitem(rvm.weights.DEFAULT_WEIGHTS, "mobilenetv3",
                        dataclasses.replace(DEFAULT, url="file:///nonexistent"))
    assert main(["weights"]) == 0
    captured = capsys.readouterr()
    assert "downloading" not in captured.err and "sha256 verified" in captured.out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"nvpipe {nvpipe.__version__} (torch ")
