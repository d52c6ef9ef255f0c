"""Writing kernels back: onnxruntime runs the written model, it holds the new kernels, every
other tensor / attribute / metadata entry is bit-identical, and the input file is untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx_fixtures import Exported, Net2d, export, load_once, shared_export

from convaudit.atomic import atomic_path
from convaudit.errors import UnsupportedLayerError
from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders import write_kernels
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader

SHAPE = (1, 3, 20, 24)


def load(path: Path, **shapes: tuple[int, ...]) -> ModelIR:
    return OnnxLoader().load(path, LoadOptions(input_shapes=shapes))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_kernels(ir: ModelIR, names: list[str] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for layer in ir.layers:
        if names is None or layer.name in names:
            current = layer.kernel if isinstance(layer, ConvLayer) else layer.weight
            out[layer.name] = rng.standard_normal(current.shape).astype(current.dtype)
    return out


def tensors(model: onnx.ModelProto, base: Path) -> dict[str, np.ndarray]:
    """Every initializer and Constant tensor by name, external data loaded."""
    onnx.load_external_data_for_model(model, str(base))
    found = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            found[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return found


def without_tensors(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model's structure: nodes (Constant values removed), I/O, metadata, opsets."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.initializer[:]
    for node in copy.graph.node:
        if node.op_type == "Constant":
            del node.attribute[:]
    return copy


def check_round_trip(
    src: Path, dest: Path, ir: ModelIR, updates: dict[str, np.ndarray], feeds: dict
) -> None:
    before = digest(src)
    write_kernels(ir, dest, updates)
    assert digest(src) == before
    session = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    assert all(np.isfinite(o).all() for o in session.run(None, feeds))
    written = load(dest, **{k: v.shape for k, v in feeds.items()})
    for name, kernel in updates.items():
        layer = written.layer(name)
        got = layer.kernel if isinstance(layer, ConvLayer) else layer.weight
        np.testing.assert_allclose(got, kernel, rtol=1e-6, atol=0)
    old_model, new_model = (
        onnx.load(str(src), load_external_data=False),
        onnx.load(str(dest), load_external_data=False),
    )
    old, new = tensors(old_model, src.parent), tensors(new_model, dest.parent)
    assert old.keys() == new.keys()
    changed = {ir.layer(n).provenance.locator for n in updates}
    for name in old:
        if name not in changed:
            assert (
                old[name].tobytes() == new[name].tobytes() and old[name].dtype == new[name].dtype
            ), name
        else:
            assert old[name].dtype == new[name].dtype and old[name].shape == new[name].shape
    old_s, new_s = without_tensors(old_model), without_tensors(new_model)
    assert old_s.SerializeToString() == new_s.SerializeToString()


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return shared_export(Net2d, SHAPE, dynamo=False)


@pytest.fixture(scope="module")
def dynamo(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return export(
        Net2d(),
        SHAPE,
        tmp_path_factory.mktemp("w_dynamo") / "net.onnx",
        dynamo=True,
        external_data=True,
    )


def feeds(shape: tuple[int, ...] = SHAPE) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def test_initializers_round_trip(legacy: Exported, tmp_path: Path) -> None:
    ir = load(legacy.path)
    check_round_trip(legacy.path, tmp_path / "out.onnx", ir, new_kernels(ir), feeds())


def test_written_model_computes_with_the_new_kernels(legacy: Exported, tmp_path: Path) -> None:
    """Scaling the Gemm weight by 2 doubles the logits minus bias: onnxruntime sees the new weight."""
    ir = load(legacy.path)
    head = ir.denses[0]
    write_kernels(ir, tmp_path / "out.onnx", {head.name: head.weight * 2})
    x = feeds()
    a = ort.InferenceSession(str(legacy.path)).run(None, x)[0]
    b = ort.InferenceSession(str(tmp_path / "out.onnx")).run(None, x)[0]
    np.testing.assert_allclose(b - head.bias, 2 * (a - head.bias), rtol=1e-4, atol=1e-5)


def test_external_data_goes_to_a_new_file(dynamo: Exported, tmp_path: Path) -> None:
    data = dynamo.path.parent / "net.onnx.data"
    data_hash = digest(data)
    ir = load(dynamo.path)
    dest = tmp_path / "clipped.onnx"
    check_round_trip(dynamo.path, dest, ir, new_kernels(ir), feeds())
    assert (tmp_path / "clipped.onnx.data").is_file()
    assert digest(data) == data_hash


def test_external_data_beside_the_input_through_atomic_path(dynamo: Exported) -> None:
    """Written into the input's own folder via atomic_path: new data file, input's untouched."""
    folder = dynamo.path.parent
    data_hash = digest(folder / "net.onnx.data")
    ir = load(dynamo.path)
    dest = folder / "net.clipped.onnx"
    with atomic_path(dest) as tmp:
        write_kernels(ir, tmp, new_kernels(ir, [ir.convs[0].name]))
    assert (folder / "net.clipped.onnx.data").is_file()
    assert digest(folder / "net.onnx.data") == data_hash
    ort.InferenceSession(str(dest)).run(None, feeds())
    np.testing.assert_array_equal(load(dest).convs[1].kernel, ir.convs[1].kernel)


def test_in_place_never_touches_the_input_data_file(dynamo: Exported, tmp_path: Path) -> None:
    """--in-place on a model with external data: the input's data file keeps its bytes."""
    model = tmp_path / "net.onnx"
    shutil.copy(dynamo.path, model)
    shutil.copy(dynamo.path.parent / "net.onnx.data", tmp_path / "net.onnx.data")
    data_hash = digest(tmp_path / "net.onnx.data")
    ir = load(model)
    with atomic_path(model) as tmp:
        write_kernels(ir, tmp, new_kernels(ir, [ir.convs[0].name]))
    assert digest(tmp_path / "net.onnx.data") == data_hash
    written = load(model)
    assert written.convs[0].provenance.get("external") not in (None, "net.onnx.data")
    np.testing.assert_array_equal(written.convs[1].kernel, ir.convs[1].kernel)
    ort.InferenceSession(str(model)).run(None, feeds())


def test_constant_nodes_round_trip(shared_models: Path, tmp_path: Path) -> None:
    src = shared_models / "ppocr_v4_det.onnx"
    ir = load(src, x=(1, 3, 64, 64))
    names = [ir.convs[0].name, ir.convs[1].name] + [c.name for c in ir.convs if c.transposed]
    check_round_trip(
        src, tmp_path / "ppocr.onnx", ir, new_kernels(ir, names), feeds((1, 3, 64, 64))
    )


def test_float16_weights_keep_their_dtype(tmp_path: Path) -> None:
    model = Net2d().half()
    try:
        exported = export(model, SHAPE, tmp_path / "half.onnx", dynamo=False, dtype=torch.float16)
    except Exception as exc:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch cannot export a float16 model here: {exc}")
    ir = load(exported.path)
    assert ir.convs[0].provenance.dtype == "float16"
    np.testing.assert_array_equal(
        ir.convs[1].kernel, exported.model.depthwise.weight.detach().float().numpy()
    )
    updates = {c.name: (c.kernel * 0.5).astype(np.float32) for c in ir.convs}
    write_kernels(ir, tmp_path / "out.onnx", updates)
    written = onnx.load(str(tmp_path / "out.onnx"))
    init = {t.name: t for t in written.graph.initializer}
    assert init["depthwise.weight"].data_type == onnx.TensorProto.FLOAT16
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(init["depthwise.weight"]),
        (exported.model.depthwise.weight.detach() * 0.5).numpy(),
    )


class SmallNet(torch.nn.Module):
    """onnxruntime's quantiser cannot handle grouped ConvTranspose, so quantise a plain stack."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, stride=2, groups=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise(torch.relu(self.conv(x)))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return export(
        SmallNet(), SHAPE, tmp_path_factory.mktemp("w_small") / "small.onnx", dynamo=False
    )


@pytest.fixture(scope="module")
def quantized(small: Exported, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([feeds(), feeds()])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    folder = tmp_path_factory.mktemp("quant")
    out = {}
    for fmt in (QuantFormat.QOperator, QuantFormat.QDQ):
        out[fmt.name] = folder / f"{fmt.name}.onnx"
        quantize_static(
            str(small.path),
            str(out[fmt.name]),
            Reader(),
            quant_format=fmt,
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    return out


@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
def test_quantised_weights_dequantise_and_refuse_writes(
    quantized: dict[str, Path], small: Exported, fmt: str, tmp_path: Path
) -> None:
    ir = load(quantized[fmt])
    ops = {c.provenance.get("op") for c in ir.convs}
    assert ("QLinearConv" in ops) == (fmt == "QOperator")
    depthwise = next(c for c in ir.convs if c.groups == 8)
    weight = small.model.depthwise.weight.detach().numpy()
    scale = np.abs(weight).reshape(8, -1).max(axis=1) / 127  # per-channel int8 step
    assert np.all(np.abs(depthwise.kernel - weight) <= scale[:, None, None, None] * 0.51 + 1e-7)
    assert depthwise.provenance.get("read_only")
    with pytest.raises(UnsupportedLayerError, match="quantised"):
        write_kernels(ir, tmp_path / "out.onnx", {depthwise.name: depthwise.kernel})
    assert not (tmp_path / "out.onnx").exists()


def test_computed_weights_refuse_writes(onnx_light_models: list[Path], tmp_path: Path) -> None:
    ir = load_once(onnx_light_models[0])
    conv = ir.convs[0]
    with pytest.raises(UnsupportedLayerError, match="computed"):
        write_kernels(ir, tmp_path / "out.onnx", {conv.name: conv.kernel})


def test_unknown_layer_and_bad_shape(legacy: Exported, tmp_path: Path) -> None:
    from convaudit.errors import ConvauditError

    ir = load(legacy.path)
    with pytest.raises(ConvauditError, match="no layer named"):
        write_kernels(ir, tmp_path / "o.onnx", {"nope": np.zeros(1)})
    with pytest.raises(UnsupportedLayerError, match="shape"):
        write_kernels(ir, tmp_path / "o.onnx", {ir.convs[0].name: np.zeros((1, 1, 1, 1))})


def test_writes_through_identity(tmp_path: Path) -> None:
    """do_constant_folding=False leaves weights behind Identity nodes; they are written at the source."""
    exported = shared_export(Net2d, SHAPE, dynamo=False, do_constant_folding=False)
    ir = load(exported.path)
    check_round_trip(exported.path, tmp_path / "out.onnx", ir, new_kernels(ir), feeds())
