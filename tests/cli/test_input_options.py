"""--input-size, --input-value, and exit 2 when no conv could be analysed, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import one_error_line, run_cli
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(3)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)


def _sample_rate_if(path: Path) -> Path:
    """y = (sr == 16000) ? conv3x3(x) : conv1x1(x), with sr an int64 input."""
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)

    def branch(name: str, weight: str, pads: int) -> onnx.GraphProto:
        node = helper.make_node("Conv", ["x", weight], ["y"], name=name, pads=[pads] * 4)
        return helper.make_graph([node], name, [], [out])

    nodes = [
        helper.make_node("Equal", ["sr", "rate"], ["is_16k"]),
        helper.make_node("If", ["is_16k"], ["y"], name="by_rate",
                         then_branch=branch("wide", "w3", 1), else_branch=branch("narrow", "w1", 0)),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, -1, -1]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [out],
        [numpy_helper.from_array(W, "w3"), numpy_helper.from_array(W[:, :, :1, :1].copy(), "w1"),
         numpy_helper.from_array(np.array(16000, np.int64), "rate")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sample_rate_if(tmp_path_factory.mktemp("switch") / "switch.onnx")


def test_input_size_and_value_decide_sizes_and_branch(switch: Path) -> None:
    result = run_cli(
        "layers", str(switch), "--input-size", "24x40", "--input-value", "sr=16000",
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    model = json.loads(result.stdout)["models"][0]
    assert model["input_shapes"] == {"sr": [], "x": [1, 3, 24, 40]}
    layers = {layer["name"]: layer for layer in model["layers"]}
    assert set(layers) == {"by_rate/then_branch/wide", "by_rate/else_branch/narrow"}
    assert all(layer["input_size"] == [24, 40] for layer in layers.values())
    checked = run_cli(
        "check", str(switch), "--input-size", "24x40", "--input-value", "sr=16000",
        "--no-empirical", "--format", "json",
    )  # fmt: skip
    assert checked.exit_code == 0, checked.stderr
    notes = json.dumps(json.loads(checked.stdout))
    assert "follows its then_branch only" in notes


@pytest.mark.parametrize("rate", [None, "16000", "8000"])
def test_the_empirical_search_holds_the_sample_rate_fixed(switch: Path, rate: str | None) -> None:
    """onnxruntime runs the model at the given rate (0 without one): its lower bound must stay
    under the graph bound, which is that branch's, or the larger branch's without a rate."""
    args = ["--input-value", f"sr={rate}"] if rate else []
    result = run_cli("check", str(switch), "--input-size", "12x12", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    network = json.loads(result.stdout)["models"][0]["network"]
    assert network["empirical_error"] is None
    lower = network["empirical"]["lower_bound"]
    assert 0 < lower <= network["bound"] * (1 + 1e-6)
    if rate is None:
        assert any("held fixed" in n for n in network["notes"])


def test_check_reads_input_size_and_value_from_the_config(switch: Path, tmp_path: Path) -> None:
    config = tmp_path / "convaudit.toml"
    config.write_text(
        f'models = ["{switch}"]\ninput-size = "24x40"\ninput-value = ["sr=8000"]\n'
        'empirical = false\nformat = "json"\n'
    )
    result = run_cli("check", "--config", str(config))
    assert result.exit_code == 0, result.stderr
    assert "follows its else_branch only" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--input-size", "0x5"], "bad --input-size"),
        (["--input-size", "big"], "bad --input-size"),
        (["--input-size", "1x2x3x4"], "bad --input-size"),
        (["--input-value", "sr"], "bad --input-value"),
        (["--input-value", "sr=fast"], "bad --input-value"),
        (["--input-value", "sr=1.5", "--input-size", "8x8"], "which is int64"),
        (["--input-value", "rate=3", "--input-size", "8x8"], "no such input"),
        (["--input-size", "8"], "one image-like input of rank 3"),
    ],
)
def test_bad_input_options_give_one_error(switch: Path, args: list[str], words: str) -> None:
    result = run_cli("spectrum", str(switch), *args)
    assert result.exit_code == 2
    assert words in one_error_line(result)


def test_options_that_need_a_declared_input_are_refused_for_pytorch(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), path)
    result = run_cli("layers", str(path), "--input-value", "sr=16000")
    assert "--input-value is read for ONNX inputs" in one_error_line(result)
    result = run_cli("layers", str(path), "--input-size", "32x32")
    assert "--input-size needs the input's channel count" in one_error_line(result)


def test_keras_input_size_completes_a_dynamic_batch() -> None:
    result = run_cli("layers", "sample_models/keras_cnn.keras", "--input-size", "32x32",
                     "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["models"][0]["input_shapes"] == {"image": [1, 32, 32, 3]}
    result = run_cli("layers", "sample_models/keras_cnn.keras", "--input-size", "64x64")
    assert "contradicts" in one_error_line(result)


def _unanalysable(path: Path) -> Path:
    """Two convs whose weights are computed from the input: no constant kernel to analyse."""
    nodes = [
        helper.make_node("Conv", ["x", "x"], ["a"], name="self_conv"),
        helper.make_node("Mul", ["x", "x"], ["k"]),
        helper.make_node("Conv", ["x", "k"], ["y"], name="data_conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("command", ["spectrum", "check"])
def test_no_conv_analysed_is_exit_2_with_the_reasons(tmp_path: Path, command: str) -> None:
    path = _unanalysable(tmp_path / "m.onnx")
    extra = ["--no-empirical"] if command == "check" else []
    result = run_cli(command, str(path), *extra)
    assert result.exit_code == 2, result.stdout
    line = one_error_line(result)
    assert "none of the 2 conv layer(s)" in line
    assert "self_conv: the weight is not a constant" in line and "data_conv" in line
