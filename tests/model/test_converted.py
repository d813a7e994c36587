"""ONNX weights converted once and read back from the cache (nvpipe.model.converted)."""

import sys


import torch

from nvpipe.model import converted


def test_cached_conversion_is_the_same_network_and_skips_onnx(onnx_weights, monkeypatch):
    first = converted.load(str(onnx_weights))  # converts (rvm.load) and writes the cache
    path = converted._cache_path(str(onnx_weights), "mobilenetv3")
    assert path.exists()
    loader = sys.modules["rvm.load"]  # the module (rvm.load is also the function)

    def no_onnx(*args, **kwargs):
        raise AssertionError("the cached conversion must not read the ONNX graph")
    with monkeypatch.context() as patch:
        patch.setattr(loader, "load_onnx", no_onnx)
        second = converted.load(str(onnx_weights))
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    assert second.folded and not second.has_segmentation_head and not second.training
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(second.coefficients(x)[1], first.coefficients(x)[1],
                                   rtol=0, atol=0)
    # A damaged cache file: converted again (the real loader back), and rewritten.
    path.write_bytes(b"not a state_dict")
    third = converted.load(str(onnx_weights))
    assert torch.equal(third.state_dict()["project_mat.conv.weight"],
                       first.state_dict()["project_mat.conv.weight"])
    assert path.stat().st_size > 1_000_000
