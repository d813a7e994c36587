"""Reading weights: official ``.pth`` state_dicts and official (BN-folded) ONNX exports.

The format is detected from the file's first bytes, not its name:
- ``PK\\x03\\x04`` (zip, torch.save since 1.6) or ``\\x80`` (a legacy pickle): a state_dict,
  loaded strictly, key for key, into the unfolded network, then folded (``rvm.fuse``).
- ``\\x08`` (protobuf field 1, ``ir_version``): an ONNX model. Its BatchNorm is already
  folded into the convs, and most folded tensors have numeric names, so each tensor is
  placed from the graph's topology: the Conv nodes, taken in data-flow order from the graph
  inputs, are matched one to one with this package's convolutions in execution order,
  checking shape, groups, stride, dilation, padding and bias for each pair.
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from .errors import WeightsError
from .fuse import fuse
from .network import VARIANTS, MattingNetwork

PathLike = Union[str, "os.PathLike[str]"]


def detect_format(path: PathLike) -> str:
    """``"pth"`` or ``"onnx"`` from the file's first bytes; ``WeightsError`` otherwise."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as error:
        raise WeightsError(f"cannot read weights file {path}: {error.strerror}") from None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pth"
    if head[:1] == b"\x08":
        return "onnx"
    raise WeightsError(f"{path} is neither a PyTorch state_dict nor an ONNX model")


def _guess_variant(keys) -> Optional[str]:
    if "backbone.features.0.0.weight" in keys:
        return "mobilenetv3"
    if "backbone.conv1.weight" in keys:
        return "resnet50"
    return None


def load_pth(path: PathLike, variant: str = "mobilenetv3") -> MattingNetwork:
    """An official-format state_dict, strictly, into an unfolded ``MattingNetwork`` (train
    mode, float32, not folded). ``WeightsError`` on any missing, extra or misshapen tensor."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged files
        raise WeightsError(f"{path} is not a readable PyTorch file ({type(error).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict of tensors")
    guessed = _guess_variant(state)
    if guessed is not None and guessed != variant:
        raise WeightsError(f"{path} holds {guessed} weights, but variant {variant!r} was asked for")
    network = MattingNetwork(variant)
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshapen:
        parts = [
            f"{label} {len(keys)} (e.g. {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen))
            if keys
        ]
        raise WeightsError(f"{path} does not fit the {variant} network: " + ", ".join(parts))
    network.load_state_dict(state, strict=True)
    # A zeroed head (e.g. a state_dict derived from an ONNX export) is no segmentation head.
    network.has_segmentation_head = bool(state["project_seg.conv.weight"].any())
    return network


# --- ONNX -------------------------------------------------------------------------------


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightsError("reading ONNX weights needs the 'onnx' package: pip install onnx") from None
    return onnx, numpy_helper


class _OnnxConv:
    """One Conv node: its tensors (numpy, any float dtype) and attributes."""

    def __init__(self, node, weight, bias, attributes):
        self.name = node.name or node.output[0]
        self.weight_name = node.input[1]
        self.weight = weight
        self.bias = bias
        kernel = weight.shape[2:]
        self.groups = int(attributes.get("group", 1))
        self.stride = tuple(attributes.get("strides", [1] * len(kernel)))
        self.dilation = tuple(attributes.get("dilations", [1] * len(kernel)))
        pads = tuple(attributes.get("pads", [0] * 2 * len(kernel)))
        self.padding = pads[: len(kernel)]
        self.symmetric = pads[: len(kernel)] == pads[len(kernel):]
        self.auto_pad = attributes.get("auto_pad", b"NOTSET")


def onnx_convolutions(model) -> list[_OnnxConv]:
    """The graph's Conv nodes in data-flow order from the inputs, with constant tensors.

    Order: Kahn's topological sort, ties broken by the node's position in the file. Weights
    may be initializers, Constant nodes, or Identity/Cast of those (fp16 exports).
    """
    onnx, numpy_helper = _import_onnx()
    graph = model.graph
    constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = list(graph.node)
    for node in nodes:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attribute.t)
    producers = {out: node for node in nodes for out in node.output}

    def constant(name: str) -> np.ndarray:
        if name in constants:
            return constants[name]
        node = producers.get(name)
        if node is not None and node.op_type in ("Identity", "Cast") and node.input:
            return constant(node.input[0])  # dtype handled by the caller (cast to the net's)
        raise WeightsError(f"ONNX Conv weight {name!r} is not a constant tensor")

    available = {i.name for i in graph.input} | set(constants) | {""}
    waiting = {index: {n for n in node.input if n not in available} for index, node in enumerate(nodes)}
    consumers: dict[str, list[int]] = {}
    for index, missing in waiting.items():
        for name in missing:
            consumers.setdefault(name, []).append(index)
    ready = [index for index, missing in waiting.items() if not missing]
    heapq.heapify(ready)
    ordered = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(nodes[index])
        for name in nodes[index].output:
            for consumer in consumers.pop(name, []):
                waiting[consumer].discard(name)
                if not waiting[consumer]:
                    heapq.heappush(ready, consumer)
    if len(ordered) != len(nodes):
        raise WeightsError("the ONNX graph is not a connected DAG from its inputs")
    if any(node.op_type == "BatchNormalization" for node in nodes):
        raise WeightsError("this ONNX graph has unfolded BatchNormalization nodes; use a .pth or an official export")

    convs = []
    for node in ordered:
        if node.op_type != "Conv":
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = constant(node.input[1])
        bias = constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        convs.append(_OnnxConv(node, weight, bias, attributes))
    return convs


def _conv_call_order(network: MattingNetwork) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d call of ``coefficients`` with the refiner, in execution order (a module
    called several times, like the box filter, appears each time)."""
    names = {module: name for name, module in network.named_modules()}
    calls: list[tuple[str, nn.Conv2d]] = []
    hooks = [
        module.register_forward_pre_hook(lambda m, args: calls.append((names[m], m)))
        for module in network.modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            # 64x64 reaches every layer (the encoder output is 4x4).
            network.coefficients(torch.zeros(1, 3, 64, 64), use_refiner=True)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def load_onnx(path: PathLike, variant: str = "mobilenetv3") -> MattingNetwork:
    """An official ONNX export (fp32 or fp16; BatchNorm folded) into
    ``MattingNetwork(variant, folded=True)`` (float32, train mode). ``project_seg``, absent
    from the exports, is zeroed."""
    onnx, _ = _import_onnx()
    try:
        model = onnx.load(os.fspath(path))
    except Exception as error:  # DecodeError and friends
        raise WeightsError(f"{path} is not a readable ONNX model ({type(error).__name__})") from None
    convs = onnx_convolutions(model)
    network = MattingNetwork(variant, folded=True)
    calls = _conv_call_order(network)
    if len(convs) != len(calls):
        raise WeightsError(
            f"{path}: the ONNX graph has {len(convs)} convolutions, the {variant} network runs "
            f"{len(calls)} (wrong variant or not an RVM export?)"
        )
    assigned: dict[nn.Conv2d, _OnnxConv] = {}
    for position, ((name, module), conv) in enumerate(zip(calls, convs)):
        problems = []
        if tuple(conv.weight.shape) != tuple(module.weight.shape):
            problems.append(f"weight {list(conv.weight.shape)} vs {list(module.weight.shape)}")
        if (conv.bias is not None) != (module.bias is not None):
            problems.append("bias presence differs")
        if (conv.groups, conv.stride, conv.dilation) != (module.groups, module.stride, module.dilation):
            problems.append("groups/stride/dilation differ")
        if not conv.symmetric or conv.padding != module.padding or conv.auto_pad not in (b"NOTSET", "NOTSET"):
            problems.append("padding differs")
        if module in assigned and not np.array_equal(assigned[module].weight, conv.weight):
            problems.append(f"a second use of {assigned[module].weight_name!r} holds other values")
        if problems:
            raise WeightsError(
                f"{path}: ONNX conv #{position} ({conv.name}) does not match {variant} layer "
                f"{name}: " + "; ".join(problems)
            )
        assigned.setdefault(module, conv)
    with torch.no_grad():
        for module, conv in assigned.items():
            module.weight.copy_(torch.from_numpy(conv.weight.astype(np.float32)))
            if conv.bias is not None:
                module.bias.copy_(torch.from_numpy(conv.bias.astype(np.float32)))
        unused = [m for m in network.modules() if isinstance(m, nn.Conv2d) and m not in assigned]
        if unused != [network.project_seg.conv]:
            raise WeightsError(f"{path}: some {variant} layers got no ONNX weights")
        network.project_seg.conv.weight.zero_()
        network.project_seg.conv.bias.zero_()
        network.has_segmentation_head = False
    return network


# --- public entry points ----------------------------------------------------------------


def load_network(path: PathLike, variant: str = "mobilenetv3", *, folded: bool = True) -> MattingNetwork:
    """A float32 CPU network from a weights file of either format, in eval mode.

    ``folded=False`` keeps the BatchNorm layers of a ``.pth`` (ONNX weights are folded
    already and give a folded network either way).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    kind = detect_format(path)
    if kind == "pth":
        network = load_pth(path, variant)
        network.eval()
        if folded:
            fuse(network)
    else:
        network = load_onnx(path, variant)
    return network.eval()


def load(
    source: Optional[PathLike] = None,
    variant: str = "mobilenetv3",
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> MattingNetwork:
    """The network ready for inference: eval mode, BatchNorm folded, on ``device`` in ``dtype``.

    Args:
        source: a ``.pth`` state_dict or an ONNX export (detected from the content); None
            resolves the default weights (``rvm.resolve_weights``: ``NVPIPE_WEIGHTS``, the
            cache, then a verified download).
        variant: ``"mobilenetv3"`` or ``"resnet50"``.
        device, dtype: where the parameters live (float32 or float16/bfloat16).

    Raises:
        WeightsError: weights missing, unverifiable, unreadable or not fitting ``variant``.
    """
    from .weights import resolve_weights

    path = resolve_weights(source, variant)
    return load_network(path, variant).to(device=device, dtype=dtype)
