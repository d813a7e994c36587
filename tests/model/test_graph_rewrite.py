"""nvpipe.model.graph_rewrite: the split convolutions compute what the concatenations did.

- A small graph on fresh random inputs: a 3-way concatenation into a biased convolution is
  split; a concatenation used twice and a grouped convolution are left alone; ONNX Runtime
  gives the same outputs within float32 rounding (sums in another order).
- The network's own export: split and unsplit files agree within 1e-4 on real frames over 4
  steps of the recurrent state (the CPU engines' parity bar), and no convolution of a
  concatenation is left in it.
"""

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nvpipe.model.graph_rewrite import split_concatenated_convolutions  # noqa: E402

# float32 sums of up to 135 products of unit normals (outputs up to ~40) in another order
TOLERANCE_SMALL = dict(rtol=1e-5, atol=2e-5)
TOLERANCE_NETWORK = 1e-4  # tests/engine/test_cpu_engines.py's bar


def _run(model, feeds):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _small_graph(rng):
    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, c, None, None])
              for name, c in (("a", 5), ("b", 3), ("c", 7))]
    nodes = [
        helper.make_node("Concat", ["a", "b", "c"], ["abc"], axis=1),
        helper.make_node("Conv", ["abc", "w1", "b1"], ["y1"], pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        # used twice: kept
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
        helper.make_node("Conv", ["ab", "w2"], ["y2"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["ab"], ["y3"]),
        # grouped: kept
        helper.make_node("Concat", ["b", "b"], ["bb"], axis=1),
        helper.make_node("Conv", ["bb", "w4"], ["y4"], kernel_shape=[1, 1], group=2),
    ]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, None, None])
               for name in ("y1", "y2", "y3", "y4")]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [
        weight("w1", 6, 15, 3, 3), weight("b1", 6), weight("w2", 4, 8, 1, 1),
        weight("w4", 2, 3, 1, 1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_small_graph_split_where_it_may_be_and_equal(rng=np.random.default_rng(3)):
    model = _small_graph(rng)
    split, count = split_concatenated_convolutions(model)
    assert count == 1
    kinds = [node.op_type for node in split.graph.node]
    assert kinds.count("Concat") == 2 and kinds.count("Conv") == 5 and kinds.count("Add") == 2
    for height, width in ((9, 13), (1, 1), (32, 17)):  # odd sizes
        feeds = {name: rng.standard_normal((1, c, height, width)).astype(np.float32)
                 for name, c in (("a", 5), ("b", 3), ("c", 7))}
        for want, got in zip(_run(model, feeds), _run(split, feeds)):
            np.testing.assert_allclose(got, want, **TOLERANCE_SMALL)


def test_network_export_split_matches_unsplit(official_network, footage, tmp_path):
    import av

    from nvpipe.engine.matting._common import recurrent_state_shapes
    from nvpipe.model.export import export_coefficients_onnx

    plain = onnx.load(str(export_coefficients_onnx(official_network, tmp_path / "plain.onnx",
                                                    split_concats=False)))
    split = onnx.load(str(export_coefficients_onnx(official_network, tmp_path / "split.onnx")))
    producer = {out: node for node in split.graph.node for out in node.output}
    def group(node):
        return next((a.i for a in node.attribute if a.name == "group"), 1)

    assert not [node.name for node in split.graph.node if node.op_type == "Conv"
                and group(node) == 1
                and getattr(producer.get(node.input[0]), "op_type", None) == "Concat"]
    assert len(split.graph.node) > len(plain.graph.node)

    frames = []
    with av.open(str(footage("person_fullbody_360x640.mp4"))) as container:
        for frame in container.decode(video=0):
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float()
            small = torch.nn.functional.interpolate(rgb[None] / 255, scale_factor=0.25,
                                                    mode="bilinear", align_corners=False)
            frames.append(small.numpy())
            if len(frames) == 4:
                break
    height, width = frames[0].shape[-2:]
    states = {"plain": [np.zeros(s, np.float32) for s in recurrent_state_shapes(height, width)],
              "split": [np.zeros(s, np.float32) for s in recurrent_state_shapes(height, width)]}
    worst = 0.0
    for frame in frames:
        outputs = {}
        for name, model in (("plain", plain), ("split", split)):
            feeds = dict(zip(("r1i", "r2i", "r3i", "r4i"), states[name]), src_sm=frame)
            outputs[name] = _run(model, feeds)
            states[name] = outputs[name][2:]
        for want, got in zip(outputs["plain"][:2], outputs["split"][:2]):
            worst = max(worst, float(np.abs(want - got).max()))
    assert worst <= TOLERANCE_NETWORK, worst
