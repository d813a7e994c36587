"""rvm.MattingNetwork on random weights: layout, shapes, chunks, the coefficient split, fusing."""

import math
import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rvm
from rvm.blocks import ConvGRU

VARIANTS = ["mobilenetv3", "resnet50"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _parse_key_list(path):
    """``(key, dtype, shape)`` rows and the header's parameter count of rvm-keys-*.txt."""
    rows, parameters = [], None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            match = re.search(r"n_parameters (\d+)", line)
            parameters = int(match.group(1)) if match else parameters
        elif line.strip():
            key, dtype, shape = line.split("\t")
            rows.append((key, dtype, [int(v) for v in shape.strip("[] ").split(",") if v.strip()]))
    return rows, parameters


def _randomise_batchnorm(network: nn.Module, generator: torch.Generator) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding has something to fold."""
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return network


def _random_network(variant="mobilenetv3", seed=0):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return _randomise_batchnorm(rvm.MattingNetwork(variant), generator).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_equals_official_key_list(variant, shared_path):
    expected, parameters = _parse_key_list(shared_path(f"docs/rvm-keys-{variant}.txt"))
    network = rvm.MattingNetwork(variant)
    actual = [
        (key, str(t.dtype).removeprefix("torch."), list(t.shape))
        for key, t in network.state_dict().items()
    ]
    assert len(actual) == len(expected)
    assert actual == expected
    assert sum(p.numel() for p in network.parameters()) == parameters


@pytest.mark.parametrize("variant", VARIANTS)
def test_fuse_gives_the_folded_layout(variant):
    fused = rvm.fuse(rvm.MattingNetwork(variant).eval())
    folded = rvm.MattingNetwork(variant, folded=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert {k: v.shape for k, v in fused.state_dict().items()} == {
        k: v.shape for k, v in folded.state_dict().items()
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_fuse_preserves_outputs(variant):
    network = _random_network(variant, seed=1)
    src = torch.rand(1, 3, 77, 61)
    with torch.no_grad():
        expected = network.coefficients(rvm.downsample(src, 0.5))
        rvm.fuse(network)
        actual = network.coefficients(rvm.downsample(src, 0.5))
    for a, e in zip(actual, expected):
        scale = e.abs().max().item() + 1e-6
        assert (a - e).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_and_state_shapes(variant):
    network = rvm.MattingNetwork(variant).eval()
    src = torch.rand(2, 3, 270, 100)  # 270 -> 135 -> 68 -> 34 -> 17; 100 -> 50 -> 25 -> 13 -> 7
    with torch.no_grad():
        fgr, pha, *states = network(src)
        coeff_a, coeff_b, *_ = network.coefficients(rvm.downsample(src, 0.5))
    assert fgr.shape == (2, 3, 270, 100) and pha.shape == (2, 1, 270, 100)
    channels = rvm.STATE_CHANNELS[variant]
    sizes = [(135, 50), (68, 25), (34, 13), (17, 7)]
    assert [tuple(s.shape) for s in states] == [(2, c, *hw) for c, hw in zip(channels, sizes)]
    assert coeff_a.shape == coeff_b.shape == (2, 4, 135, 50)
    assert 0 <= fgr.min() and fgr.max() <= 1 and 0 <= pha.min() and pha.max() <= 1


def test_chunk_equals_frames_one_by_one():
    network = _random_network(seed=2)
    chunk = torch.rand(2, 5, 3, 64, 48)
    with torch.no_grad():
        fgr_c, pha_c, *states_c = network(chunk, downsample_ratio=0.5)
        coeff_chunk = network.coefficients(rvm.downsample(chunk, 0.5))
        states = [None] * 4
        for t in range(chunk.shape[1]):
            fgr, pha, *states = network(chunk[:, t], *states, downsample_ratio=0.5)
            torch.testing.assert_close(fgr_c[:, t], fgr, rtol=0, atol=1e-5)
            torch.testing.assert_close(pha_c[:, t], pha, rtol=0, atol=1e-5)
    assert coeff_chunk[0].shape == (2, 5, 4, 32, 24)
    for s_c, s in zip(states_c, states):
        assert s_c.shape == s.shape
        torch.testing.assert_close(s_c, s, rtol=0, atol=1e-5)


def test_states_none_zeros_and_broadcast_zeros_agree():
    network = _random_network(seed=3)
    src = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        _, _, *states = network(src, downsample_ratio=0.5)
        from_none = network(src, downsample_ratio=0.5)
        zeros = [torch.zeros_like(s) for s in states]
        from_zeros = network(src, *zeros, downsample_ratio=0.5)
        onnx_style = [torch.zeros(1, 1, 1, 1)] * 4  # what the official ONNX usage feeds
        from_broadcast = network(src, *onnx_style, downsample_ratio=0.5)
        carried = network(src, *states, downsample_ratio=0.5)
    for a, b, c in zip(from_none, from_zeros, from_broadcast):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(carried[1], from_none[1])  # the state does matter
    with pytest.raises(ValueError, match="recurrent state"):
        network(torch.rand(1, 3, 96, 64), *states, downsample_ratio=0.5)


@pytest.mark.parametrize("ratio", [0.5, 0.37, 1.0])
@pytest.mark.parametrize("chunked", [False, True])
def test_forward_is_refine_of_coefficients(ratio, chunked):
    network = _random_network(seed=4)
    src = torch.rand(1, 2, 3, 71, 53) if chunked else torch.rand(2, 3, 71, 53)
    with torch.no_grad():
        fgr, pha, *states = network(src, downsample_ratio=ratio)
        coeff_a, coeff_b, *states_c = network.coefficients(rvm.downsample(src, ratio), use_refiner=ratio != 1)
    fgr_r, pha_r = rvm.refine(coeff_a, coeff_b, src)
    assert torch.equal(fgr, fgr_r) and torch.equal(pha, pha_r)
    assert all(torch.equal(a, b) for a, b in zip(states, states_c))


def test_ratio_one_skips_the_refiner_and_follows_the_definition():
    network = _random_network(seed=5)
    src = torch.rand(1, 3, 64, 80)
    refiner_calls = []
    projected = []
    network.project_mat.register_forward_hook(lambda m, args, out: projected.append(out))
    for module in network.refiner.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(lambda *args: refiner_calls.append(1))
    with torch.no_grad():
        fgr, pha, *_ = network(src, downsample_ratio=1.0)
        coeff_a, coeff_b, *_ = network.coefficients(src, use_refiner=False)
    assert not refiner_calls
    fgr_residual, alpha = projected[0].split([3, 1], dim=1)
    assert torch.equal(fgr, (fgr_residual + src).clamp(0, 1))
    assert torch.equal(pha, alpha.clamp(0, 1))
    assert torch.equal(coeff_a, torch.zeros_like(coeff_a)) and torch.equal(coeff_b, projected[1])


@pytest.mark.parametrize("chunked", [False, True])
def test_refine_matches_its_formula(chunked):
    torch.manual_seed(6)
    lead = (2, 3) if chunked else (2,)
    coeff_a, coeff_b = torch.randn(*lead, 4, 9, 13), torch.randn(*lead, 4, 9, 13)
    src = torch.rand(*lead, 3, 37, 50)
    fgr, pha = rvm.refine(coeff_a, coeff_b, src)
    flat = lambda x: x.reshape(-1, *x.shape[-3:])  # noqa: E731
    up = lambda x: F.interpolate(flat(x), size=(37, 50), mode="bilinear", align_corners=False)  # noqa: E731
    guide = torch.cat([flat(src), flat(src).mean(1, keepdim=True)], 1)
    out = up(coeff_a) * guide + up(coeff_b)
    torch.testing.assert_close(flat(fgr), (out[:, :3] + flat(src)).clamp(0, 1), rtol=0, atol=1e-6)
    torch.testing.assert_close(flat(pha), out[:, 3:].clamp(0, 1), rtol=0, atol=1e-6)
    assert fgr.shape == (*lead, 3, 37, 50) and pha.shape == (*lead, 1, 37, 50)
    with pytest.raises(ValueError):
        rvm.refine(coeff_a[..., :3, :, :], coeff_b, src)


def test_downsample_size_is_floor():
    src = torch.rand(1, 3, 1080, 1920)
    assert rvm.downsample(src, 0.25).shape[-2:] == (270, 480)
    assert rvm.downsample(src, 0.999).shape[-2:] == (math.floor(1080 * 0.999), math.floor(1920 * 0.999))
    assert rvm.downsample(src, 1.0) is src


def test_conv_gru_follows_its_equations():
    torch.manual_seed(7)
    gru = ConvGRU(6)
    x, h = torch.randn(2, 6, 5, 7), torch.randn(2, 6, 5, 7)
    w_ih, b_ih = gru.ih[0].weight, gru.ih[0].bias
    w_hh, b_hh = gru.hh[0].weight, gru.hh[0].bias
    with torch.no_grad():
        gates = torch.sigmoid(F.conv2d(torch.cat([x, h], 1), w_ih, b_ih, padding=1))
        r, z = gates[:, :6], gates[:, 6:]
        candidate = torch.tanh(F.conv2d(torch.cat([x, r * h], 1), w_hh, b_hh, padding=1))
        expected = (1 - z) * h + z * candidate
        out, last = gru(x, h, steps=1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert out is last


def test_bad_arguments_raise():
    network = rvm.MattingNetwork()
    with pytest.raises(ValueError, match="variant"):
        rvm.MattingNetwork("mobilenetv2")
    for ratio in (0.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="downsample_ratio"):
            network(torch.rand(1, 3, 32, 32), downsample_ratio=ratio)
    with pytest.raises(ValueError, match="RGB"):
        network.coefficients(torch.rand(1, 4, 32, 32))
