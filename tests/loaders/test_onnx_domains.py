"""ONNX files real exporters write that convaudit used to refuse: opset domains it does not know,
``dim_value: -1``, a dynamic batch with static spatial dims; and the input options that complete
them (``--input-size``, ``--input-value``).

Truths: the weights that were put into the file, and the tensor shapes onnxruntime computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_fixtures import Net2d, shared_export

from convaudit.errors import InputShapeError
from convaudit.ir import ModelIR
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader
from convaudit.network.graph import network_bound

RNG = np.random.default_rng(7)
W1 = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
W2 = RNG.standard_normal((2, 4, 3, 3)).astype(np.float32)


def load(path: Path, **options: object) -> ModelIR:
    return OnnxLoader().load(path, LoadOptions(**options))  # type: ignore[arg-type]


def _two_convs(
    path: Path,
    dims: list[int | str],
    *,
    middle: onnx.NodeProto | None = None,
    domains: tuple[tuple[str, int], ...] = (),
    value_info: tuple[onnx.ValueInfoProto, ...] = (),
) -> Path:
    """x -> Conv(W1, stride 2) [-> middle] -> Conv(W2) -> y."""
    first_out = "a" if middle is None else "pre"
    nodes = [helper.make_node("Conv", ["x", "w1"], [first_out], name="first", pads=[1] * 4,
                              strides=[2, 2])]  # fmt: skip
    if middle is not None:
        nodes.append(middle)
    nodes.append(helper.make_node("Conv", ["a", "w2"], ["y"], name="second", pads=[1] * 4))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    for d, value in zip(x.type.tensor_type.shape.dim, dims, strict=True):
        if isinstance(value, int) and value < 0:  # helper refuses negative dims; Paddle writes them
            d.Clear()
            d.dim_value = value
    graph = helper.make_graph(
        nodes,
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(W2, "w2")],
        value_info=list(value_info),
    )
    opsets = [helper.make_opsetid("", 13), *(helper.make_opsetid(d, v) for d, v in domains)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def _runtime_shape(path: Path, tensor: str, x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape onnxruntime gives ``tensor`` when the model runs on an input of ``x_shape``."""
    model = onnx.load(str(path))
    model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    x = model.graph.input[0].type.tensor_type.shape
    del x.dim[:]
    for n in x_shape:
        x.dim.add().dim_value = n
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"x": np.zeros(x_shape, np.float32)}
    return tuple(session.run([tensor], feed)[0].shape)


def test_a_declared_domain_no_node_uses_is_ignored(tmp_path: Path) -> None:
    exported = shared_export(Net2d, (1, 3, 16, 20), dynamo=False)
    model = onnx.load(str(exported.path))
    for domain in ("Paddle", "com.microsoft.mlfeaturizers"):  # as Paddle2ONNX / converters write
        model.opset_import.append(helper.make_opsetid(domain, 1))
    path = tmp_path / "declared.onnx"
    onnx.save(model, str(path))
    plain, declared = load(exported.path), load(path)
    assert [c.name for c in declared.layers] == [c.name for c in plain.layers]
    for a, b in zip(plain.convs, declared.convs, strict=True):
        np.testing.assert_array_equal(a.kernel, b.kernel)
        assert a.input_size == b.input_size and a.padding == b.padding
    assert [n.kind for n in declared.graph.nodes] == [n.kind for n in plain.graph.nodes]  # type: ignore[union-attr]
    assert not any("domain" in n for n in declared.notes)  # nothing of theirs is used


def test_a_node_of_an_unknown_domain_between_two_convs(tmp_path: Path) -> None:
    mystery = helper.make_node("Mystery", ["pre"], ["a"], name="mystery", domain="com.example")
    path = _two_convs(tmp_path / "m.onnx", [1, 3, 16, 20], middle=mystery,
                      domains=(("com.example", 1),))  # fmt: skip
    ir = load(path)
    first, second = ir.layer("first"), ir.layer("second")
    np.testing.assert_array_equal(first.kernel, W1)  # type: ignore[union-attr]
    np.testing.assert_array_equal(second.kernel, W2)  # type: ignore[union-attr]
    assert first.input_size == (16, 20)  # type: ignore[union-attr]
    assert second.input_size is None  # type: ignore[union-attr]  # nothing can run Mystery
    assert any("'com.example'" in n and "no Lipschitz rule" in n for n in ir.notes)
    assert ir.graph is not None
    result = network_bound(ir.graph, {"first": 1.0, "second": 1.0})
    assert result.describe().startswith("unbounded (op Mystery at node mystery")
    assert "domain 'com.example'" in result.describe()


def test_an_unknown_op_with_a_declared_output_shape(tmp_path: Path) -> None:
    """Where the exporter wrote the custom op's output shape, the next conv is sized by it."""
    mystery = helper.make_node("Mystery", ["pre"], ["a"], name="mystery", domain="com.example")
    info = helper.make_tensor_value_info("a", TensorProto.FLOAT, (1, 4, 8, 10))
    path = _two_convs(tmp_path / "m.onnx", [1, 3, 16, 20], middle=mystery,
                      domains=(("com.example", 1),), value_info=(info,))  # fmt: skip
    assert load(path).layer("second").input_size == (8, 10)  # type: ignore[union-attr]


def test_minus_one_dims_are_dynamic(tmp_path: Path) -> None:
    path = _two_convs(tmp_path / "paddle.onnx", [-1, 3, -1, -1])
    with pytest.raises(InputShapeError, match=r"x \[-1, 3, -1, -1\]") as info:
        load(path)
    assert "--input-size" in (info.value.hint or "")
    by_shape = load(path, input_shapes={"x": (1, 3, 48, 192)})
    by_size = load(path, input_size=(48, 192))
    for ir in (by_shape, by_size):
        assert ir.input_shapes == {"x": (1, 3, 48, 192)}
        assert ir.layer("first").input_size == (48, 192)  # type: ignore[union-attr]
        truth = _runtime_shape(path, "a", (1, 3, 48, 192))
        assert ir.layer("second").input_size == truth[2:] == (24, 96)  # type: ignore[union-attr]
    assert any("--input-size 48x192 read as NCHW 1x3x48x192" in n for n in by_size.notes)


def test_a_dynamic_batch_needs_no_flag(tmp_path: Path) -> None:
    for batch in ("N", -1):
        path = _two_convs(tmp_path / "batch.onnx", [batch, 3, 32, 32])
        ir = load(path)
        assert ir.input_shapes == {"x": (1, 3, 32, 32)}
        assert any("dynamic batch dim taken as 1" in n for n in ir.notes)
        assert ir.layer("second").input_size == _runtime_shape(path, "a", (1, 3, 32, 32))[2:]  # type: ignore[union-attr]


def test_input_size_takes_channels_last_and_refuses_what_it_cannot_decide(tmp_path: Path) -> None:
    nhwc = tmp_path / "nhwc.onnx"
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
         helper.make_node("Conv", ["t", "w1"], ["y"], name="c", pads=[1] * 4)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(W1, "w1")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(nhwc))
    ir = load(nhwc, input_size=(40, 56))
    assert ir.input_shapes == {"x": (1, 40, 56, 3)}
    assert ir.layer("c").input_size == (40, 56)  # type: ignore[union-attr]
    fixed = _two_convs(tmp_path / "fixed.onnx", ["N", 3, 32, 32])
    with pytest.raises(InputShapeError, match="contradicts"):
        load(fixed, input_size=(64, 64))
    with pytest.raises(InputShapeError, match="one image-like input of rank 3"):
        load(fixed, input_size=(64,))
    with pytest.raises(InputShapeError, match="disagree"):
        load(fixed, input_size=(32, 32), input_shapes={"x": (2, 3, 32, 32)})


def test_input_values_are_checked_against_the_inputs(tmp_path: Path) -> None:
    path = _two_convs(tmp_path / "m.onnx", [1, 3, 8, 8])
    with pytest.raises(InputShapeError, match="no such input"):
        load(path, input_values={"sr": np.array(16000)})
    with pytest.raises(InputShapeError, match="element"):
        load(path, input_values={"x": np.array([1.0, 2.0])})


@pytest.mark.real_models
def test_the_paddle_export_as_paddle2onnx_writes_it(shared_models: Path, tmp_path: Path) -> None:
    """ppocr_v4_det with what other Paddle2ONNX versions write: a Paddle opset and -1 dims. It
    reads with --input-size alone, exactly as the original does with a full --input-shape."""
    model = onnx.load(str(shared_models / "ppocr_v4_det.onnx"))
    model.opset_import.append(helper.make_opsetid("Paddle", 1))
    for d in model.graph.input[0].type.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            d.Clear()
            d.dim_value = -1
    path = tmp_path / "paddle.onnx"
    onnx.save(model, str(path))
    original = load(shared_models / "ppocr_v4_det.onnx", input_shapes={"x": (1, 3, 640, 640)})
    paddle = load(path, input_size=(640, 640))
    assert len(paddle.convs) == 64 and not paddle.skipped
    for a, b in zip(original.convs, paddle.convs, strict=True):
        assert a.name == b.name and a.input_size == b.input_size
        np.testing.assert_array_equal(a.kernel, b.kernel)
