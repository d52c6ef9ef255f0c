"""auto_pad / pads / output_shape resolution, the onnxruntime size fallback and control flow.

The truth is onnxruntime: the conv the IR describes, run with torch.nn.functional, must give
the same tensor as onnxruntime running the ONNX node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from convaudit.ir import ConvLayer
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader


def one_conv_model(
    path: Path, op: str, weight: np.ndarray, in_shape: tuple[int, ...], **attrs
) -> Path:
    node = helper.make_node(op, ["x", "w"], ["y"], name="the_conv", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def torch_reference(layer: ConvLayer, x: np.ndarray) -> np.ndarray:
    """Apply the IR's geometry with torch (2-D)."""
    xt, w = torch.from_numpy(x), torch.from_numpy(np.array(layer.kernel))
    (t, b), (left, r) = layer.padding
    if not layer.transposed:
        xt = F.pad(xt, (left, r, t, b))
        return F.conv2d(
            xt, w, stride=layer.stride, dilation=layer.dilation, groups=layer.groups
        ).numpy()
    full = F.conv_transpose2d(
        xt, w, stride=layer.stride, dilation=layer.dilation, groups=layer.groups
    )
    op = layer.output_padding or (0, 0)
    full = F.pad(full, (0, op[1], 0, op[0]))
    return full[:, :, t : full.shape[2] - b, left : full.shape[3] - r].numpy()


CASES = [
    ("Conv", (6, 3, 3, 4), {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    ("Conv", (6, 3, 3, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ("Conv", (6, 3, 4, 2), {"auto_pad": "SAME_UPPER"}),  # even kernel: uneven pads
    ("Conv", (6, 3, 4, 2), {"auto_pad": "SAME_LOWER", "strides": [3, 1]}),
    ("Conv", (6, 3, 3, 2), {"dilations": [2, 3], "pads": [2, 1, 1, 2], "strides": [2, 1]}),
    ("Conv", (6, 1, 3, 3), {"auto_pad": "VALID", "group": 3, "strides": [2, 2]}),
    ("Conv", (6, 3, 3, 3), {"pads": [0, 1, 2, 3]}),  # begins then ends: h (0, 2), w (1, 3)
    ("Conv", (6, 3, 3, 3), {}),  # opset defaults: stride 1, no padding
    (
        "ConvTranspose",
        (3, 4, 3, 3),
        {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1]},
    ),
    ("ConvTranspose", (3, 4, 3, 3), {"strides": [2, 2], "output_shape": [14, 20]}),
    ("ConvTranspose", (3, 2, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_UPPER", "group": 3}),
    ("ConvTranspose", (3, 2, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER", "group": 3}),
]


@pytest.mark.parametrize(
    ("op", "wshape", "attrs"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_padding_matches_onnxruntime(
    tmp_path: Path, op: str, wshape: tuple[int, ...], attrs: dict
) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(wshape).astype(np.float32)
    in_shape = (1, 3, 7, 10)
    path = one_conv_model(tmp_path / "m.onnx", op, weight, in_shape, **attrs)
    layer = OnnxLoader().load(path, LoadOptions()).convs[0]
    assert layer.name == "the_conv" and layer.input_size == (7, 10)
    x = rng.standard_normal(in_shape).astype(np.float32)
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got = torch_reference(layer, x)
    assert got.shape == expected.shape
    assert layer.output_size() == expected.shape[2:]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_runtime_fallback_measures_unknown_sizes(tmp_path: Path) -> None:
    """A com.microsoft op that onnx shape inference does not know hides the conv's input size."""
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
        helper.make_node("Conv", ["g", "w"], ["y"], name="c", strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 9, 11))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    ir = OnnxLoader().load(path, LoadOptions())
    assert ir.convs[0].input_size == (9, 11)
    assert any("onnxruntime" in note for note in ir.notes)


def test_convs_inside_if_are_read_by_branch_path(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Conv", ["x", "w"], ["y"], name=name)], name, [], [out]
    )
    node = helper.make_node(
        "If",
        ["cond"],
        ["y"],
        name="branchy",
        then_branch=branch("then_conv"),
        else_branch=branch("else_conv"),
    )
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 8, 8)),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, ()),
        ],
        [out],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ir = OnnxLoader().load(path, LoadOptions())
    assert not ir.skipped
    assert [c.name for c in ir.convs] == [
        "branchy/then_branch/then_conv",
        "branchy/else_branch/else_conv",
    ]
    assert all(c.input_size == (8, 8) and c.kernel.shape == (2, 3, 3, 3) for c in ir.convs)
    assert [n.kind for n in ir.graph.nodes] == ["conv", "conv", "select"]
    assert ir.graph.nodes[2].inputs == (
        "cond",
        "branchy/then_branch/y",
        "branchy/else_branch/y",
    )  # each branch's y is its own tensor
    assert ir.graph.parameters == ("cond",)  # a bool input: held fixed by the bound


def test_unnamed_nodes_get_stable_names(tmp_path: Path) -> None:
    path = one_conv_model(
        tmp_path / "m.onnx", "Conv", np.ones((2, 3, 1, 1), np.float32), (1, 3, 4, 4)
    )
    model = onnx.load(str(path))
    model.graph.node[0].name = ""
    onnx.save(model, str(path))
    first = OnnxLoader().load(path, LoadOptions())
    again = OnnxLoader().load(path, LoadOptions())
    assert first.convs[0].name == again.convs[0].name == "Conv_0"


def test_a_tensor_added_to_itself_is_listed_twice(tmp_path: Path) -> None:
    """x + x doubles the Lipschitz constant: the graph must show both edges."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Add", ["c", "c"], ["y"], name="double"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2, 4, 4))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    add = OnnxLoader().load(path, LoadOptions()).graph.nodes[-1]
    assert (add.kind, add.inputs) == ("add", ("c", "c"))


def test_input_shape_contradicting_a_dynamic_channel_dim(tmp_path: Path) -> None:
    from convaudit.errors import InputShapeError

    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ("n", "c", "h", "w"))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(InputShapeError, match="expects 3 input channels, but gets 4"):
        OnnxLoader().load(path, LoadOptions(input_shapes={"x": (1, 4, 8, 8)}))
    ok = OnnxLoader().load(path, LoadOptions(input_shapes={"x": (1, 3, 8, 8)}))
    assert ok.convs[0].input_size == (8, 8)
