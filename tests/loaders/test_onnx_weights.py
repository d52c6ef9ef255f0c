"""Where weights live and how dense layers read: checked against onnxruntime's own arithmetic.

These small graphs are built with onnx.helper because they pin one storage form each (a Cast
from float16, Gemm's alpha / transB, MatMul with the weight on either side).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from convaudit.ir import ModelIR
from convaudit.loaders import write_kernels
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader

RNG = np.random.default_rng(3)


def save(path: Path, nodes: list, inputs: list, inits: list, opset: int = 17) -> Path:
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]


def load(path: Path) -> ModelIR:
    return OnnxLoader().load(path, LoadOptions())


def test_float16_initializer_behind_cast(tmp_path: Path) -> None:
    w16 = RNG.standard_normal((4, 3, 3, 3)).astype(np.float16)
    nodes = [
        helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 6, 6))
    path = save(tmp_path / "m.onnx", nodes, [x_info], [numpy_helper.from_array(w16, "w16")])
    ir = load(path)
    conv = ir.convs[0]
    assert conv.kernel.dtype == np.float32
    np.testing.assert_array_equal(conv.kernel, w16.astype(np.float32))
    assert (conv.provenance.locator, conv.provenance.dtype) == ("w16", "float16")
    write_kernels(ir, tmp_path / "out.onnx", {"conv": conv.kernel * 2})
    written = {t.name: t for t in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}
    assert written["w16"].data_type == TensorProto.FLOAT16
    np.testing.assert_array_equal(numpy_helper.to_array(written["w16"]), w16 * 2)
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(
        run(tmp_path / "out.onnx", x), 2 * run(path, x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_alpha_and_trans_b(tmp_path: Path, trans_b: int) -> None:
    weight = RNG.standard_normal((5, 7)).astype(np.float32)  # (out, in)
    stored = weight if trans_b else weight.T.copy()
    bias = RNG.standard_normal(5).astype(np.float32)
    node = helper.make_node(
        "Gemm", ["x", "b", "c"], ["y"], name="fc", alpha=0.5, beta=2.0, transB=trans_b
    )
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 7))
    inits = [numpy_helper.from_array(stored, "b"), numpy_helper.from_array(bias, "c")]
    path = save(tmp_path / "m.onnx", [node], [x_info], inits)
    ir = load(path)
    dense = ir.denses[0]
    x = RNG.standard_normal((2, 7)).astype(np.float32)
    np.testing.assert_allclose(x @ dense.weight.T + dense.bias, run(path, x), rtol=1e-5, atol=1e-5)
    assert dense.provenance.layout == ("oi" if trans_b else "io")
    # written back: onnxruntime's Gemm with the stored B reproduces the new operator
    new = RNG.standard_normal((5, 7)).astype(np.float32)
    write_kernels(ir, tmp_path / "out.onnx", {"fc": new})
    np.testing.assert_allclose(
        run(tmp_path / "out.onnx", x), x @ new.T + dense.bias, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("left", [False, True])
def test_matmul_weight_on_either_side(tmp_path: Path, left: bool) -> None:
    weight = RNG.standard_normal((4, 6)).astype(np.float32)  # (out, in)
    if left:
        node = helper.make_node("MatMul", ["w", "x"], ["y"], name="mm")
        stored, x_shape = weight, (6, 3)
    else:
        node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
        stored, x_shape = weight.T.copy(), (3, 6)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    path = save(tmp_path / "m.onnx", [node], [x_info], [numpy_helper.from_array(stored, "w")])
    dense = load(path).denses[0]
    np.testing.assert_array_equal(dense.weight, weight)
    x = RNG.standard_normal(x_shape).astype(np.float32)
    expected = weight @ x if left else x @ weight.T
    np.testing.assert_allclose(run(path, x), expected, rtol=1e-5, atol=1e-5)


def test_constant_of_shape_weight_is_folded_and_read_only(tmp_path: Path) -> None:
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["w"],
            value=numpy_helper.from_array(np.array([0.25], np.float32)),
        ),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=2),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4, 5, 5))
    shape = numpy_helper.from_array(np.array([6, 2, 3, 3], np.int64), "shape")
    ir = load(save(tmp_path / "m.onnx", nodes, [x_info], [shape]))
    conv = ir.convs[0]
    np.testing.assert_array_equal(conv.kernel, np.full((6, 2, 3, 3), 0.25, np.float32))
    assert conv.groups == 2 and conv.provenance.get("source") == "computed"
    assert "ConstantOfShape" in (conv.provenance.get("read_only") or "")


@pytest.mark.parametrize(
    ("dims", "why"),
    [
        ([10**6, 4, 10**4, 10**4], "is too large to fold (over 2 GiB)"),
        ([8, 4, -3, 3], "has a negative dimension [8, 4, -3, 3]"),
    ],
)
def test_huge_constant_of_shape_is_not_allocated(tmp_path: Path, dims: list[int], why: str) -> None:
    """A ConstantOfShape asking for petabytes is left unfolded: the conv is skipped, not run."""
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4, 5, 5))
    shape = numpy_helper.from_array(np.array(dims, np.int64), "shape")
    ir = load(save(tmp_path / "m.onnx", nodes, [x_info], [shape]))
    assert not ir.layers and ir.skipped[0].name == "conv"
    assert f"ConstantOfShape {why}" in ir.skipped[0].reason


def test_tied_weights_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    from convaudit.errors import UnsupportedLayerError

    w = RNG.standard_normal((3, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], name="first", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "w"], ["y"], name="second", pads=[1, 1, 1, 1]),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 5, 5))
    ir = load(save(tmp_path / "m.onnx", nodes, [x_info], [numpy_helper.from_array(w, "w")]))
    out = tmp_path / "out.onnx"
    with pytest.raises(UnsupportedLayerError, match="shared with second"):
        write_kernels(ir, out, {"first": w * 0.5})
    with pytest.raises(UnsupportedLayerError, match="differ"):
        write_kernels(ir, out, {"first": w * 0.5, "second": w * 0.25})
    write_kernels(ir, out, {"first": w * 0.5, "second": w * 0.5})
    assert [c.kernel for c in load(out).convs][1].tolist() == (w * 0.5).tolist()
