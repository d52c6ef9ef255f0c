"""`convaudit layers`: the parsed IR, checked against the ONNX file read with the onnx package."""

from __future__ import annotations

import json

import onnx
import pytest
from cli_helpers import REPO, one_error_line
from onnx import numpy_helper

DEMO = "sample_models/resnet_tiny.onnx"
SAMPLES = [
    "sample_models/resnet_tiny.onnx",
    "sample_models/signal_1d.onnx",
    "sample_models/resnet_tiny.ts.pt",
    "sample_models/resnet_tiny.pt2",
    "sample_models/resnet_tiny.pt",
    "sample_models/circular_net.ts.pt",
    "sample_models/keras_cnn.keras",
    "sample_models/keras_cnn.h5",
]


def test_table_golden(cli, golden):
    result = cli("layers", DEMO)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == golden("layers_resnet_tiny.txt", result.stdout)


def test_json_golden(cli, golden):
    result = cli("layers", DEMO, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == golden("layers_resnet_tiny.json", result.stdout)


def test_geometry_matches_the_onnx_graph(cli, in_repo):
    """Kernel shapes, strides, dilations and groups as the ONNX file states them."""
    doc = json.loads(cli("layers", DEMO, "--format", "json").stdout)
    layers = doc["models"][0]["layers"]
    model = onnx.load(in_repo / DEMO)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    convs = [layer for layer in layers if layer["kind"] != "dense"]
    assert len(convs) == len(nodes) == 10
    for node, layer in zip(nodes, convs, strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert layer["kernel_shape"] == list(weights[node.input[1]].shape)
        assert layer["stride"] == list(attrs.get("strides", [1, 1]))
        assert layer["dilation"] == list(attrs.get("dilations", [1, 1]))
        assert layer["groups"] == attrs.get("group", 1)
        assert layer["transposed"] is (node.op_type == "ConvTranspose")
    sizes = {layer["kind"]: layer["input_size"] for layer in convs}
    assert convs[0]["input_size"] == [32, 32] and convs[-1]["input_size"] == [16, 16]
    assert sizes["depthwise"] == [16, 16]
    assert sum(layer["batchnorm"] is not None for layer in convs) == 4


@pytest.mark.parametrize("model", SAMPLES)
def test_every_sample_model_loads(cli, in_repo, model):
    result = cli("layers", model, "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["models"][0]["layers"], doc


def test_missing_file(cli):
    result = cli("layers", "sample_models/nope.onnx")
    assert result.exit_code == 2 and "no such file" in one_error_line(result)


def test_output_refuses_to_overwrite(cli, tmp_path):
    dest = tmp_path / "layers.txt"
    dest.write_text("keep")
    result = cli("layers", DEMO, "-o", str(dest))
    assert result.exit_code == 2 and "refusing to overwrite" in one_error_line(result)
    assert dest.read_text() == "keep"


def test_output_never_replaces_the_input_even_with_force(cli, tmp_path):
    model = tmp_path / "demo.onnx"
    model.write_bytes((REPO / DEMO).read_bytes())
    result = cli("layers", str(model), "-o", str(model), "--force")
    assert result.exit_code == 2 and "refusing to overwrite the input" in one_error_line(result)
    assert model.read_bytes() == (REPO / DEMO).read_bytes()
