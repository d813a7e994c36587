"""Rewrites of nvpipe's own ONNX export that keep its function and speed up the CPU engines.

``split_concatenated_convolutions(model)``: every ``Conv(Concat(x1, ..., xk, axis=1), W, B)``
(group 1, the concatenation used by nothing else) becomes
``Conv(x1, W[:, c1], B) + Conv(x2, W[:, c2]) + ... + Conv(xk, W[:, ck])``, with ``W`` split
along its input channels. Same function; the sums differ only in rounding (max abs 2e-5 on
the coefficients, ``tests/model/test_graph_rewrite.py``).

Why: RVM's decoder concatenates its upsampled features, the encoder's skip features and the
3-channel downsampled frame before each 3x3 convolution, and its ConvGRUs concatenate input
and state. OpenVINO's CPU plugin runs those concatenations with its reference kernel
(channel counts off its 16-channel blocks): 13.8 of 87 ms per 480x270 frame on 2 cores
(AMD EPYC, AVX-512). Split, each part is a convolution in the blocked layout and the sum
fuses into the next one: 56 -> 53 ms per frame in OpenVINO; ONNX Runtime unchanged (76 ms).
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def _channels(graph) -> dict[str, int]:
    """Channel count (dim 1) of every 4-D tensor whose count shape inference found."""
    out = {}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            out[info.name] = dims[1].dim_value
    return out


def _part_sizes(parts: list[str], channels: dict[str, int], total: int) -> Optional[list[int]]:
    """Channels of each concatenated part; one unknown part (a ``Resize`` to computed sizes
    leaves its output's shape unknown) is what the weight's input channels leave for it."""
    unknown = [name for name in parts if name not in channels]
    if len(unknown) > 1:
        return None
    known = sum(channels[name] for name in parts if name in channels)
    sizes = [channels.get(name, total - known) for name in parts]
    return sizes if sum(sizes) == total and min(sizes) > 0 else None


def split_concatenated_convolutions(model):
    """``model`` (an ``onnx.ModelProto``) with every concatenation feeding only a group-1
    convolution split as the module docstring says. Returns ``(model, count)``: a new
    model, and how many convolutions were split."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    # Shapes read from an inferred copy; the model itself keeps its own (where dynamic axes
    # share a name across different sizes, ORT's memory planner trusts inferred shapes).
    channels = _channels(shape_inference.infer_shapes(model).graph)
    copy = type(model)()
    copy.CopyFrom(model)
    model = copy
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    nodes_in = list(graph.node)  # nodes by index (protobuf wrappers' ids are not stable)
    producer = {name: index for index, node in enumerate(nodes_in) for name in node.output}
    replaced: dict[int, list] = {}  # index of the original Conv -> its replacement nodes
    dropped: set[int] = set()  # indices of the concatenations it no longer needs
    for index, conv in enumerate(nodes_in):
        if conv.op_type != "Conv" or conv.input[1] not in weights:
            continue
        concat_index = producer.get(conv.input[0])
        concat = nodes_in[concat_index] if concat_index is not None else None
        attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if (concat is None or concat.op_type != "Concat" or consumers[concat.output[0]] != 1
                or attributes.get("group", 1) != 1
                or {a.name: a.i for a in concat.attribute}.get("axis") != 1):
            continue
        weight = numpy_helper.to_array(weights[conv.input[1]])
        sizes = _part_sizes(list(concat.input), channels, weight.shape[1])
        if sizes is None:
            continue
        nodes, start, total = [], 0, None
        for k, (part, size) in enumerate(zip(concat.input, sizes)):
            weight_name = f"{conv.input[1]}.part{k}"
            graph.initializer.append(numpy_helper.from_array(
                np.ascontiguousarray(weight[:, start:start + size]), weight_name))
            start += size
            bias = [conv.input[2]] if k == 0 and len(conv.input) > 2 else []
            output = f"{conv.output[0]}.part{k}"
            nodes.append(helper.make_node("Conv", [part, weight_name, *bias], [output],
                                          name=f"{conv.name}.part{k}", **attributes))
            if total is not None:
                last = k == len(sizes) - 1
                summed = conv.output[0] if last else f"{conv.output[0]}.sum{k}"
                nodes.append(helper.make_node("Add", [output, total], [summed],
                                              name=f"{conv.name}.sum{k}"))
                output = summed
            total = output
        replaced[index] = nodes
        dropped.add(concat_index)
    kept = []
    for index, node in enumerate(nodes_in):
        if index in replaced:
            kept.extend(replaced[index])
        elif index not in dropped:
            kept.append(onnx.NodeProto())
            kept[-1].CopyFrom(node)  # detached: the field it came from is cleared next
    del graph.node[:]
    graph.node.extend(kept)
    # Unused initializers (the unsplit weights) dropped: ORT warns about each otherwise.
    used = {name for node in graph.node for name in node.input}
    unused = [tensor for tensor in graph.initializer if tensor.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    onnx.checker.check_model(model)
    return model, len(replaced)


__all__ = ["split_concatenated_convolutions"]
