"""convert_video's device/dtype defaults: what reaches the job and the network loader.

The pipeline itself is replaced by a recorder (it is tested elsewhere); what is checked is
the choice of dtype: the model's when a module is given, else float16 on CUDA and float32
on the CPU, as ``Job.dtype`` None means in the runner.
"""

import pytest
import torch

from nvpipe import api
from nvpipe.errors import NvpipeError


@pytest.fixture
def recorded(monkeypatch):
    calls = {}

    def fake_network(model, device, dtype):
        calls["network"] = (device, dtype)
        return object()

    def fake_run(job, progress=None, network=None):
        calls["job"] = job
        return "result"

    monkeypatch.setattr(api, "_as_network", fake_network)
    monkeypatch.setattr(api, "run", fake_run)
    return calls


@pytest.mark.parametrize("device, expected", [("cuda", torch.float16), ("cpu", torch.float32),
                                              (torch.device("cuda", 0), torch.float16),
                                              ("cuda:1", torch.float16)])
def test_without_a_model_the_dtype_follows_the_device(recorded, tmp_path, device, expected):
    assert api.convert_video(None, str(tmp_path / "in.mp4"), output_composition=str(tmp_path / "o.mp4"),
                             device=device, progress=False) == "result"
    named = str(torch.device(device))  # cuda:N keeps its GPU number
    assert recorded["network"] == (named, expected)
    assert recorded["job"].device == named
    assert recorded["job"].dtype == {torch.float16: "float16", torch.float32: "float32"}[expected]


def test_a_models_dtype_wins(recorded, tmp_path):
    model = torch.nn.Linear(2, 2).to(torch.float16)
    api.convert_video(model, str(tmp_path / "in.mp4"), output_alpha=str(tmp_path / "a.mp4"),
                      device="cuda", progress=False)
    assert recorded["network"] == ("cuda", torch.float16)
    model32 = torch.nn.Linear(2, 2)
    api.convert_video(model32, str(tmp_path / "in.mp4"), output_alpha=str(tmp_path / "a.mp4"),
                      device="cuda", progress=False)
    assert recorded["network"] == ("cuda", torch.float32)


def test_an_unsupported_dtype_is_a_user_error(recorded, tmp_path):
    with pytest.raises(NvpipeError, match="dtype"):
        api.convert_video(None, str(tmp_path / "in.mp4"), output_alpha=str(tmp_path / "a.mp4"),
                          dtype=torch.bfloat16, progress=False)
    assert "job" not in recorded
