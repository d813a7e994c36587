"""bench/openvino_layers.py: OpenVINO's per-layer profile of the network nvpipe runs adds up
to its per-call total, and names the convolutions (most of the network) among its layers."""

import json

import pytest

from conftest import _shared_path, load_bench_script

pytestmark = pytest.mark.slow


def test_the_profile_adds_up(tmp_path, capsys):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    weights = _shared_path("weights/rvm_mobilenetv3_fp32.onnx")  # skips where absent
    out = tmp_path / "layers.json"
    script = load_bench_script("openvino_layers")
    assert script.main(["--size", "96x64", "--calls", "3", "--weights", str(weights),
                        "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["size"] == [96, 64] and report["layers_ms_per_call_median"] > 0
    kinds = report["by_kind"]
    assert [row["ms"] for row in kinds] == sorted((row["ms"] for row in kinds), reverse=True)
    # Medians per kind, of the same calls: their sum is near the median total.
    assert sum(row["ms"] for row in kinds) == pytest.approx(
        report["layers_ms_per_call_median"], rel=0.25)
    assert any(row["node_type"] == "Convolution" for row in kinds)
    slowest = report["slowest_layers"]
    assert 0 < len(slowest) <= 15 and slowest[0]["ms"] >= slowest[-1]["ms"]
    assert "ms a call in layers (96x64" in capsys.readouterr().out
