"""Convs inside If / Loop / Scan bodies: read, named by their branch path, sized like the runtime
sizes them, and followed by the graph bound (the live branch, else the larger of the two).

The If models are written by the real exporters (torch.onnx.export of ``torch.cond`` through
dynamo, and of a scripted ``if`` through the legacy exporter); the truths are the modules'
own weights and the input sizes torch's forward hooks record. Loop / Scan / nesting and the
corner cases are crafted with onnx.helper, their truths from onnxruntime.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from convaudit.errors import ModelFileError
from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders import write_kernels
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader
from convaudit.network.graph import network_bound

SR = 16000
ANY3 = ("a", "b", "c")
ANY4 = ("n", "c", "h", "w")


class SampleRateSwitch(nn.Module):
    """A voice-activity-detector-like model: two 1-D conv stacks, picked by the sample rate."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(1, 4, 5, padding=2)
        self.b = nn.Conv1d(1, 4, 3, stride=2)
        self.c = nn.Conv1d(4, 2, 3)

    def high(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.a(x)))

    def low(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(x)))

    def forward(self, x: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
        return torch.cond(sr == SR, self.high, self.low, (x,))


def load(path: Path, **options: object) -> ModelIR:
    return OnnxLoader().load(path, LoadOptions(**options))  # type: ignore[arg-type]


def conv_inputs(module: nn.Module, run) -> list[tuple[nn.Module, tuple[int, ...]]]:  # type: ignore[no-untyped-def]
    """(conv, input shape) in call order, as torch's forward pre-hooks see them."""
    seen: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: seen.append((m, tuple(args[0].shape))))
        for m in module.modules()
        if isinstance(m, nn.Conv1d | nn.Conv2d)
    ]
    with torch.no_grad():
        run()
    for h in hooks:
        h.remove()
    return seen


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleRateSwitch]:
    torch.manual_seed(0)
    model = SampleRateSwitch().eval()
    path = tmp_path_factory.mktemp("cond") / "switch.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 64), torch.tensor(SR)), str(path), dynamo=True)
    assert any(n.op_type == "If" for n in onnx.load(str(path)).graph.node)  # a real If
    return path, model


def test_every_branch_conv_is_read_with_its_weights_and_sizes(switch) -> None:  # type: ignore[no-untyped-def]
    path, model = switch
    ir = load(path)
    assert not ir.skipped
    by_branch = {
        branch: [c for c in ir.convs if f"/{branch}/" in c.name]
        for branch in ("then_branch", "else_branch")
    }
    x = torch.randn(1, 1, 64)
    truth = {
        "then_branch": conv_inputs(model, lambda: model.high(x)),
        "else_branch": conv_inputs(model, lambda: model.low(x)),
    }
    for branch, layers in by_branch.items():
        assert [c.name.split("/")[0:2] for c in layers] == [
            [layers[0].name.split("/")[0], branch]
        ] * 2
        assert len(layers) == len(truth[branch]) == 2
        for layer, (module, shape) in zip(layers, truth[branch], strict=True):
            np.testing.assert_array_equal(layer.kernel, module.weight.detach().numpy())
            assert layer.stride == module.stride and layer.padding == ((module.padding[0],) * 2,)
            assert layer.input_size == shape[2:]


def test_the_sample_rate_decides_the_live_branch(switch) -> None:  # type: ignore[no-untyped-def]
    path, _ = switch
    ir = load(path, input_values={"sr": np.array(SR)})
    dead = [c for c in ir.convs if "/else_branch/" in c.name]
    live = [c for c in ir.convs if "/then_branch/" in c.name]
    assert dead and all(any("do not take" in n for n in c.notes) for c in dead)
    assert live and not any("do not take" in n for c in live for n in c.notes)
    assert any("then_branch only" in n for n in ir.notes)
    assert ir.graph is not None
    # the bound follows the live branch's two convs only (relu between: 1-Lipschitz)
    bounds = {c.name: 2.0 if "/then_branch/" in c.name else 5.0 for c in ir.convs}
    assert network_bound(ir.graph, bounds).value == pytest.approx(4.0)
    other = load(path, input_values={"sr": np.array(8000)})
    assert network_bound(other.graph, bounds).value == pytest.approx(25.0)  # type: ignore[arg-type]


def test_without_the_sample_rate_the_bound_is_the_larger_branch(switch) -> None:  # type: ignore[no-untyped-def]
    path, _ = switch
    ir = load(path)
    assert ir.graph is not None and ir.graph.parameters == ("sr",)
    assert [n.kind for n in ir.graph.nodes if n.op == "If"] == ["select"]
    bounds = {c.name: 2.0 if "/then_branch/" in c.name else 5.0 for c in ir.convs}
    result = network_bound(ir.graph, bounds)
    assert result.value == pytest.approx(25.0)  # max(2 * 2, 5 * 5)
    assert any("sr" in n and "each of their values" in n for n in result.notes)


def test_a_data_dependent_if_is_unbounded(tmp_path: Path) -> None:
    """The legacy exporter's If on x.mean() > 0: the output jumps between branches as x moves,
    so there is no Lipschitz constant and the bound must say which op stops it."""

    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x) if bool(x.mean() > 0) else self.b(x)
            return torch.relu(y)

    torch.manual_seed(1)
    model = Gate().eval()
    path = tmp_path / "gate.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch.jit.script(model), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False
        )
    ir = load(path)
    assert sorted(c.kernel.shape for c in ir.convs) == [(4, 3, 1, 1), (4, 3, 3, 3)]
    for conv in ir.convs:
        module = model.a if conv.kernel.shape[-1] == 3 else model.b
        np.testing.assert_array_equal(conv.kernel, module.weight.detach().numpy())
        assert conv.input_size == (8, 8)
    assert ir.graph is not None
    result = network_bound(ir.graph, {c.name: 1.0 for c in ir.convs})
    assert not result.bounded
    assert "op If at node" in result.describe() and "jump" in result.describe()


# --- crafted: Loop, Scan, nesting, sizes only onnxruntime knows, writing back -------------------


def _conv(name: str, x: str, w: str, out: str, pads: int = 1) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w], [out], name=name, pads=[pads] * 4)


def _save(path: Path, nodes, inputs, outputs, inits, opset: int = 17) -> Path:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _value(name: str, shape, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:  # type: ignore[no-untyped-def]
    return helper.make_tensor_value_info(name, elem, shape)


def test_loop_and_scan_bodies_are_read_and_the_loop_is_not_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w_loop = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)
    w_scan = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    body = helper.make_graph(
        [_conv("step", "h", "w_loop", "h2"), helper.make_node("Identity", ["c"], ["c2"])],
        "body",
        [_value("i", (), TensorProto.INT64), _value("c", (), TensorProto.BOOL), _value("h", ANY4)],
        [_value("c2", (), TensorProto.BOOL), _value("h2", ANY4)],
    )
    scan_body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["s", "axis0"], ["s4"]), _conv("slice", "s4", "w_scan", "o4"),
         helper.make_node("Squeeze", ["o4", "axis0"], ["o"])],
        "scan_body",
        [_value("s", ANY3)],
        [_value("o", ANY3)],
        [numpy_helper.from_array(np.array([0], np.int64), "axis0")],
    )  # fmt: skip
    nodes = [
        helper.make_node("Loop", ["trips", "", "x"], ["y"], name="repeat", body=body),
        helper.make_node("Scan", ["frames"], ["z"], name="per_frame", body=scan_body,
                         num_scan_inputs=1),
    ]  # fmt: skip
    inits = [
        numpy_helper.from_array(w_loop, "w_loop"),
        numpy_helper.from_array(w_scan, "w_scan"),
        numpy_helper.from_array(np.array(2, np.int64), "trips"),
    ]
    path = _save(
        tmp_path / "loops.onnx",
        nodes,
        [_value("x", (1, 3, 10, 12)), _value("frames", (5, 3, 6, 7))],
        [_value("y", ANY4), _value("z", ANY4)],
        inits,
    )
    ir = load(path)
    step, frame = ir.layer("repeat/body/step"), ir.layer("per_frame/body/slice")
    assert isinstance(step, ConvLayer) and isinstance(frame, ConvLayer)
    np.testing.assert_array_equal(step.kernel, w_loop)
    np.testing.assert_array_equal(frame.kernel, w_scan)
    assert step.input_size == (10, 12) and frame.input_size == (6, 7)
    assert ir.graph is not None
    result = network_bound(ir.graph, {step.name: 1.0, frame.name: 1.0})
    assert not result.bounded and "op Loop at node repeat" in result.describe()


def test_nested_ifs_sizes_from_onnxruntime_and_outer_weights(tmp_path: Path) -> None:
    """An If inside an If; the inner conv's input comes out of a com.microsoft Gelu, which onnx's
    shape inference does not know (onnxruntime runs it), and its weight lives in the outer graph.
    """
    rng = np.random.default_rng(1)
    w_inner = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w_else = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w_local = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    inner_then = helper.make_graph(
        [
            helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
            helper.make_node("Slice", ["g", "starts", "ends", "axes"], ["cropped"]),
            _conv("deep", "cropped", "w_inner", "y_it"),
        ],
        "inner_then",
        [],
        [_value("y_it", None)],
    )
    inner_else = helper.make_graph(
        [_conv("local", "x", "w_local", "y_ie", pads=2)],
        "inner_else",
        [],
        [_value("y_ie", None)],
        [numpy_helper.from_array(w_local, "w_local")],
    )
    outer_then = helper.make_graph(
        [helper.make_node("If", ["c2"], ["y_t"], name="inner", then_branch=inner_then,
                          else_branch=inner_else)],
        "outer_then",
        [],
        [_value("y_t", None)],
    )  # fmt: skip
    outer_else = helper.make_graph(
        [_conv("flat", "x", "w_else", "y_e", pads=0)], "outer_else", [], [_value("y_e", None)]
    )
    nodes = [
        helper.make_node("If", ["c1"], ["y"], name="outer", then_branch=outer_then,
                         else_branch=outer_else)
    ]  # fmt: skip
    inits = [
        numpy_helper.from_array(w_inner, "w_inner"),
        numpy_helper.from_array(w_else, "w_else"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "starts"),
        numpy_helper.from_array(np.array([100, 9], np.int64), "ends"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [_value("x", (1, 3, 11, 13)), _value("c1", (), TensorProto.BOOL),
         _value("c2", (), TensorProto.BOOL)],
        [_value("y", None)],
        inits,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    path = tmp_path / "nested.onnx"
    onnx.save(model, str(path))
    ir = load(path)
    deep = ir.layer("outer/then_branch/inner/then_branch/deep")
    local = ir.layer("outer/then_branch/inner/else_branch/local")
    flat = ir.layer("outer/else_branch/flat")
    assert isinstance(deep, ConvLayer) and isinstance(local, ConvLayer)
    np.testing.assert_array_equal(deep.kernel, w_inner)
    np.testing.assert_array_equal(local.kernel, w_local)
    np.testing.assert_array_equal(flat.kernel, w_else)  # type: ignore[union-attr]
    # the truth: what onnxruntime computes for the cropped Gelu output (rows 1.., cols 2..9)
    session = ort.InferenceSession(
        helper.make_model(
            helper.make_graph(
                [*inner_then.node[:2]],
                "probe",
                [_value("x", (1, 3, 11, 13))],
                [_value("cropped", None)],
                inits[2:],
            ),
            opset_imports=model.opset_import,
        ).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    (cropped,) = session.run(None, {"x": np.zeros((1, 3, 11, 13), np.float32)})
    assert deep.input_size == cropped.shape[2:] == (10, 7)
    assert local.input_size == (11, 13)
    assert any("onnxruntime" in n for n in ir.notes)
    assert deep.provenance is not None and deep.provenance.get("scope") is None  # outer weight
    assert local.provenance is not None
    assert local.provenance.get("scope") == "outer/then_branch/inner/else_branch"

    # writing back: each kernel goes where it was read from, and the model still runs
    out = tmp_path / "written.onnx"
    write_kernels(ir, out, {deep.name: 2 * w_inner, local.name: -w_local})
    again = load(out)
    np.testing.assert_array_equal(again.layer(deep.name).kernel, 2 * w_inner)  # type: ignore[union-attr]
    np.testing.assert_array_equal(again.layer(local.name).kernel, -w_local)  # type: ignore[union-attr]
    np.testing.assert_array_equal(again.layer(flat.name).kernel, w_else)  # type: ignore[union-attr]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).standard_normal((1, 3, 11, 13)).astype(np.float32)
    (y,) = session.run(None, {"x": x, "c1": np.array(True), "c2": np.array(False)})
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(-w_local), padding=2)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-4, atol=1e-4)


def test_subgraphs_nested_too_deep_are_refused(tmp_path: Path) -> None:
    out = _value("y", None)
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [out])
    branch = leaf
    for depth in range(20):  # one level more in each then_branch (both would double each time)
        node = helper.make_node(
            "If", ["c"], ["y"], name=f"level{depth}", then_branch=branch, else_branch=leaf
        )
        branch = helper.make_graph([node], f"b{depth}", [], [out])
    graph = helper.make_graph(
        list(branch.node), "g", [_value("x", (1, 3, 4, 4)), _value("c", (), TensorProto.BOOL)],
        [out],
    )  # fmt: skip
    path = tmp_path / "deep.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelFileError, match="nested more than 16 deep"):
        load(path)
