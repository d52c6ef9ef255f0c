"""Files written by torch.onnx.export (legacy and dynamo): geometry, input sizes and kernels
must match the torch model that wrote them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_fixtures import Exported, Net1d, Net2d, Net3d, export, record_calls, shared_export
from torch import nn

from convaudit.errors import InputShapeError
from convaudit.ir import ConvLayer, DenseLayer, ModelIR
from convaudit.loaders import detect
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader

SHAPE_2D = (1, 3, 20, 24)


def load(path: Path, **shapes: tuple[int, ...]) -> ModelIR:
    return OnnxLoader().load(path, LoadOptions(input_shapes=shapes))


def torch_padding(module: nn.Module) -> tuple[tuple[int, int], ...]:
    if module.padding == "same":
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        return tuple((t // 2, t - t // 2) for t in total)
    return tuple((p, p) for p in module.padding)


def folded_weight(conv: nn.Module, bn: nn.BatchNorm2d) -> np.ndarray:
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    return conv.weight.detach().numpy() * scale[:, None, None, None]


def assert_matches(ir: ModelIR, exported: Exported, *, bn_fused_by_exporter: bool = False) -> None:
    """Every layer, in execution order, has the torch module's geometry, input size and weight."""
    assert len(ir.layers) == len(exported.calls)
    assert not ir.skipped
    for layer, (name, module, in_shape) in zip(ir.layers, exported.calls, strict=True):
        weight = module.weight.detach().numpy()
        if isinstance(module, nn.Linear):
            assert isinstance(layer, DenseLayer), name
            np.testing.assert_array_equal(layer.weight, weight)
            np.testing.assert_array_equal(layer.bias, module.bias.detach().numpy())
            continue
        assert isinstance(layer, ConvLayer), name
        transposed = isinstance(
            module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d
        )
        assert layer.transposed == transposed, name
        assert layer.stride == module.stride, name
        assert layer.dilation == module.dilation, name
        assert layer.groups == module.groups, name
        assert layer.padding == torch_padding(module), name
        assert layer.input_size == in_shape[2:], name
        if transposed:
            assert layer.output_padding == module.output_padding, name
        if bn_fused_by_exporter and name == "stem":
            np.testing.assert_allclose(
                layer.kernel, folded_weight(module, exported.model.bn), rtol=1e-5, atol=1e-6
            )
        else:
            np.testing.assert_array_equal(layer.kernel, weight)
        assert layer.output_size() == _torch_output_size(module, in_shape), name


def _torch_output_size(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(module(torch.zeros(in_shape)).shape[2:])


@pytest.fixture(scope="module")
def legacy_2d(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return shared_export(Net2d, SHAPE_2D, dynamo=False)


@pytest.fixture(scope="module")
def legacy_2d_unfolded(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return shared_export(Net2d, SHAPE_2D, dynamo=False, do_constant_folding=False)


@pytest.fixture(scope="module")
def dynamo_2d(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return shared_export(Net2d, SHAPE_2D, dynamo=True, optimize=False, external_data=True)


def test_legacy_exporter_geometry_sizes_and_kernels(legacy_2d: Exported) -> None:
    ir = load(legacy_2d.path)
    assert_matches(ir, legacy_2d, bn_fused_by_exporter=True)
    assert ir.input_shapes == {"x": SHAPE_2D}
    assert ir.convs[1].kind == "depthwise"
    assert ir.denses[0].provenance.layout == "oi"  # Gemm transB=1


def test_unfused_batchnorm_is_attached_to_its_conv(legacy_2d_unfolded: Exported) -> None:
    ir = load(legacy_2d_unfolded.path)
    assert_matches(ir, legacy_2d_unfolded)
    stem = ir.convs[0]
    bn = legacy_2d_unfolded.model.bn
    assert stem.bn is not None and all(c.bn is None for c in ir.convs[1:])
    np.testing.assert_array_equal(stem.bn.gamma, bn.weight.detach().numpy())
    np.testing.assert_array_equal(stem.bn.var, bn.running_var.numpy())
    assert stem.bn.eps == pytest.approx(bn.eps)
    np.testing.assert_allclose(
        stem.folded_kernel(), folded_weight(ir_module(legacy_2d_unfolded, "stem"), bn), rtol=1e-5
    )
    kinds = {n.kind: n for n in ir.graph.nodes}
    assert kinds["batchnorm"].attrs == {"folded_into": stem.name}


def ir_module(exported: Exported, name: str) -> nn.Module:
    return dict(exported.model.named_modules())[name]


def test_dynamo_exporter_with_external_data(dynamo_2d: Exported) -> None:
    assert Path(str(dynamo_2d.path) + ".data").is_file()
    ir = load(dynamo_2d.path)
    assert_matches(ir, dynamo_2d)
    # the dynamo exporter names initializers after the state_dict keys
    for layer, (name, _, _) in zip(ir.layers, dynamo_2d.calls, strict=True):
        assert layer.provenance is not None and layer.provenance.locator == f"{name}.weight"
    assert any(layer.provenance.get("external") == "net.onnx.data" for layer in ir.convs)
    assert ir.convs[0].bn is not None


# one dynamo export (the slow exporter) is enough for the non-2-D paths
@pytest.mark.parametrize(
    ("net", "shape", "dynamo"),
    [
        (Net1d, (1, 2, 37), False),
        (Net3d, (1, 1, 6, 10, 12), False),
        (Net3d, (1, 1, 6, 10, 12), True),
    ],
    ids=["1d-legacy", "3d-legacy", "3d-dynamo"],
)
def test_1d_and_3d(
    tmp_path: Path, net: type[nn.Module], shape: tuple[int, ...], dynamo: bool
) -> None:
    exported = export(net(), shape, tmp_path / "m.onnx", dynamo=dynamo)
    assert_matches(load(exported.path), exported)


def test_dynamic_axes_need_input_shape(tmp_path: Path) -> None:
    exported = export(Net2d(), SHAPE_2D, tmp_path / "dyn.onnx", dynamo=False, dynamic=True)
    with pytest.raises(InputShapeError) as err:
        load(exported.path)
    assert "x [d0, 3, d2, d3]" in err.value.message
    assert "--input-shape x=" in (err.value.hint or "")
    assert_matches(load(exported.path, x=SHAPE_2D), exported, bn_fused_by_exporter=True)
    # another size: the sizes follow it
    bigger = (2, 3, 33, 17)
    exported.calls = record_calls(exported.model, torch.zeros(bigger))
    assert_matches(load(exported.path, x=bigger), exported, bn_fused_by_exporter=True)
    # one unnamed shape is fine for a one-input model
    assert OnnxLoader().load(
        exported.path, LoadOptions(input_shapes={"": bigger})
    ).input_shapes == {"x": bigger}


@pytest.mark.parametrize(
    ("shapes", "words"),
    [
        ({"x": (1, 3, 20)}, "rank 3"),
        ({"x": (1, 4, 20, 24)}, "channel count is 3"),
        ({"y": (1, 3, 20, 24)}, "no such input"),
    ],
)
def test_contradictory_input_shapes(legacy_2d: Exported, shapes: dict, words: str) -> None:
    with pytest.raises(InputShapeError, match=words):
        load(legacy_2d.path, **shapes)


def test_format_is_detected_from_content(legacy_2d: Exported, tmp_path: Path) -> None:
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(legacy_2d.path.read_bytes())
    assert OnnxLoader.sniff(renamed, renamed.read_bytes()[:4096])
    assert detect(renamed) is OnnxLoader


def test_onnxruntime_optimised_model(legacy_2d: Exported, tmp_path: Path) -> None:
    """A model saved by onnxruntime's optimiser (FusedConv, extra domains) reads the same."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(legacy_2d.path), options, providers=["CPUExecutionProvider"])
    ir = load(tmp_path / "opt.onnx")
    assert "FusedConv" in {c.provenance.get("op") for c in ir.convs}
    assert_matches(ir, legacy_2d, bn_fused_by_exporter=True)
    fused = [c.name for c in ir.convs if c.provenance.get("op") == "FusedConv"]
    nodes = [n for n in ir.graph.nodes if n.op == "FusedConv"]
    assert [n.kind for n in nodes] == ["conv", "activation"] * len(fused)
    for conv, act, name in zip(nodes[::2], nodes[1::2], fused, strict=True):
        assert conv.attrs == {"layer": name} and act.attrs["fn"] == "relu"
        assert act.inputs == conv.outputs
    assert not [n for n in ir.graph.nodes if n.kind == "unknown"]
