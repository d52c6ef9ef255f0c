"""PyTorch loader on files written by the real tools: torch.save, safetensors, torch.jit.save,
torch.export.save. Geometry is checked against hand-written tables of what the test models were
built with, input sizes against forward hooks on the live model, kernels against its weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convaudit.ir import ConvLayer, DenseLayer, ModelIR
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.pytorch.reader import PyTorchLoader

torch.manual_seed(0)


class GeometryNet(nn.Module):
    """Every 2-D geometry the loader must read, plus BN, a residual add and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="circular", bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.grouped = nn.Conv2d(8, 8, (3, 1), padding=(1, 0), groups=2)
        self.reflect = nn.Conv2d(8, 6, 3, padding=1, padding_mode="reflect")
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        y = y + self.dw(y)
        y = torch.sigmoid(self.grouped(y))
        y = self.up(self.reflect(y)) * 0.5
        y = self.pool(y)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class OneDNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(2, 4, 5, stride=2, padding=2)
        self.b = nn.Conv1d(4, 4, 3, padding="same", dilation=2, padding_mode="circular")
        self.t = nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.t(nn.functional.leaky_relu(self.b(self.a(x)), 0.2))


class ThreeDNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(1, 4, 3, stride=(1, 2, 2), padding=1)
        self.bn = nn.BatchNorm3d(4)
        self.t = nn.ConvTranspose3d(4, 2, 2, stride=2, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.t(torch.tanh(self.bn(self.a(x))))


# name -> stride, dilation, explicit (before, after) pads, groups, padding_mode, transposed
GEOMETRY = {
    "stem": ((2, 2), (1, 1), ((1, 1), (1, 1)), 1, "circular", False),
    "dw": ((1, 1), (2, 2), ((2, 2), (2, 2)), 8, "zeros", False),
    "grouped": ((1, 1), (1, 1), ((1, 1), (0, 0)), 2, "zeros", False),
    "reflect": ((1, 1), (1, 1), ((1, 1), (1, 1)), 1, "reflect", False),
    "up": ((2, 2), (1, 1), ((1, 1), (1, 1)), 1, "zeros", True),
    "a1": ((2,), (1,), ((2, 2),), 1, "zeros", False),
    "b1": ((1,), (2,), ((2, 2),), 1, "circular", False),
    "t1": ((2,), (1,), ((1, 1),), 1, "zeros", True),
    "a3": ((1, 2, 2), (1, 1, 1), ((1, 1),) * 3, 1, "zeros", False),
    "t3": ((2, 2, 2), (1, 1, 1), ((0, 0),) * 3, 2, "zeros", True),
}
MODELS = {
    "2d": (
        GeometryNet,
        (1, 3, 16, 16),
        {"stem": "stem", "dw": "dw", "grouped": "grouped", "reflect": "reflect", "up": "up"},
    ),
    "1d": (OneDNet, (1, 2, 20), {"a": "a1", "b": "b1", "t": "t1"}),
    "3d": (ThreeDNet, (1, 1, 4, 8, 8), {"a": "a3", "t": "t3"}),
}


def make(kind: str) -> tuple[nn.Module, tuple[int, ...], dict[str, str]]:
    cls, shape, table = MODELS[kind]
    model = cls()
    with torch.no_grad():  # non-trivial BN statistics, so folding is visible
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return model.eval(), shape, table


def hooked_input_sizes(model: nn.Module, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    sizes: dict[str, tuple[int, ...]] = {}

    def note(name: str, inputs: tuple[torch.Tensor, ...]) -> None:
        sizes.setdefault(name, tuple(inputs[0].shape[2:]))

    handles = [
        m.register_forward_hook(lambda _m, i, _o, n=n: note(n, i))
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd)
    ]
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in handles:
        h.remove()
    return sizes


def load(path: Path, **options: object) -> ModelIR:
    return PyTorchLoader().load(path, LoadOptions(**options))  # type: ignore[arg-type]


def assert_geometry(
    ir: ModelIR, model: nn.Module, shape: tuple[int, ...], table: dict[str, str], *, sizes: bool
) -> None:
    convs = {c.name: c for c in ir.convs}
    assert set(convs) == set(table)
    expected_sizes = hooked_input_sizes(model, shape)
    modules = dict(model.named_modules())
    for name, key in table.items():
        layer = convs[name]
        stride, dilation, pads, groups, mode, transposed = GEOMETRY[key]
        assert layer.stride == stride and layer.dilation == dilation, name
        assert layer.padding == pads and layer.groups == groups, name
        assert layer.padding_mode == mode and layer.transposed == transposed, name
        np.testing.assert_array_equal(layer.kernel, modules[name].weight.detach().numpy())
        assert layer.input_size == (expected_sizes[name] if sizes else None), name
        if transposed:  # the IR's own output size must match what torch computed
            with torch.no_grad():
                out = modules[name](torch.zeros(1, layer.in_channels, *expected_sizes[name]))
            assert layer.output_size(expected_sizes[name]) == tuple(out.shape[2:])
    for bn_owner in [
        n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]:
        conv = next(c for c in ir.convs if c.bn is not None)
        bn = modules[bn_owner]
        np.testing.assert_allclose(
            conv.bn.scale,
            (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy(),
            rtol=1e-6,
        )
    for dense in ir.denses:
        np.testing.assert_array_equal(dense.weight, modules[dense.name].weight.detach().numpy())


@pytest.mark.parametrize("kind", ["2d", "1d", "3d"])
def test_export_archive_reads_geometry_sizes_and_graph(tmp_path: Path, kind: str) -> None:
    model, shape, table = make(kind)
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)), path)
    ir = load(path)
    assert_geometry(ir, model, shape, table, sizes=True)
    assert ir.graph is not None and not ir.graph.chain_assumed
    assert list(ir.input_shapes.values()) == [shape]
    assert {n.attrs["layer"] for n in ir.graph.nodes if n.kind == "conv"} == set(table)
    assert all(n.kind != "unknown" for n in ir.graph.nodes), [
        n.op for n in ir.graph.nodes if n.kind == "unknown"
    ]
    assert ir.layers[0].provenance.get("container") == "pt2"


def test_export_graph_structure_2d(tmp_path: Path) -> None:
    model, shape, _ = make("2d")
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)), path)
    graph = load(path).graph
    kinds = [n.kind for n in graph.nodes]
    assert kinds == ["conv", "batchnorm", "activation", "conv", "add", "conv", "activation", "conv", "conv",
                     "mul_const", "maxpool", "global_avgpool", "identity", "dense"]  # fmt: skip
    by_kind = {n.kind: n for n in graph.nodes}
    assert by_kind["batchnorm"].attrs["folded_into"] == "stem"
    assert by_kind["mul_const"].attrs["value"] == 0.5
    assert by_kind["maxpool"].attrs["kernel"] == (2, 2) and by_kind["maxpool"].attrs["stride"] == (
        2,
        2,
    )
    add = by_kind["add"]  # the residual: relu output feeds both the add and the depthwise conv
    relu = next(n for n in graph.nodes if n.attrs.get("fn") == "relu")
    assert relu.outputs[0] in add.inputs and len(add.inputs) == 2
    produced = {o for n in graph.nodes for o in n.outputs}
    assert all(i in produced or i in graph.inputs for n in graph.nodes for i in n.inputs)
    assert graph.outputs[0] == graph.nodes[-1].outputs[0]


@pytest.mark.parametrize("kind", ["2d", "1d", "3d"])
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_reads_geometry(tmp_path: Path, kind: str, how: str) -> None:
    model, shape, table = make(kind)
    scripted = (
        torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.zeros(shape))
    )
    path = tmp_path / "m.pt"
    torch.jit.save(scripted, path)
    ir = load(path)
    assert_geometry(ir, model, shape, table, sizes=False)
    assert any("input sizes unknown" in n for n in ir.notes)
    ir = load(path, input_shapes={"": shape})
    assert_geometry(ir, model, shape, table, sizes=True)
    assert ir.graph is not None and not ir.graph.chain_assumed
    assert {n.attrs["layer"] for n in ir.graph.nodes if n.kind == "conv"} == set(table)


def test_traced_graph_has_the_residual(tmp_path: Path) -> None:
    model, shape, _ = make("2d")
    path = tmp_path / "t.pt"
    torch.jit.save(torch.jit.trace(model, torch.zeros(shape)), path)
    graph = load(path).graph
    add = next(n for n in graph.nodes if n.kind == "add")
    dw = next(n for n in graph.nodes if n.attrs.get("layer") == "dw")
    assert dw.outputs[0] in add.inputs and dw.inputs[0] in add.inputs


def _state_dict_files(tmp_path: Path, sd: dict) -> dict[str, tuple[Path, str]]:
    from safetensors.torch import save_file

    files = {
        "zip": (tmp_path / "sd.pt", ""),
        "legacy": (tmp_path / "legacy.pth", ""),
        "training": (tmp_path / "train.pt", "model_state_dict"),
        "lightning": (tmp_path / "epoch=3.ckpt", "state_dict"),
        "safetensors": (tmp_path / "m.safetensors", ""),
    }
    torch.save(sd, files["zip"][0])
    torch.save(sd, files["legacy"][0], _use_new_zipfile_serialization=False)
    optim = torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.9)
    torch.save(
        {"epoch": 7, "model_state_dict": sd, "optimizer_state_dict": optim.state_dict()},
        files["training"][0],
    )
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0", "state_dict": sd,
                "optimizer_states": [optim.state_dict()], "lr_schedulers": []}, files["lightning"][0])  # fmt: skip
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(files["safetensors"][0]),
        metadata={"format": "pt"},
    )
    return files


@pytest.mark.parametrize("flavour", ["zip", "legacy", "training", "lightning", "safetensors"])
def test_bare_state_dict_is_read_as_assumed_plain_convs(tmp_path: Path, flavour: str) -> None:
    model, _, _ = make("2d")
    path, nesting = _state_dict_files(tmp_path, model.state_dict())[flavour]
    ir = load(path)
    names = [layer.name for layer in ir.layers]
    in_order = ["stem", "dw", "grouped", "reflect", "up", "head"]
    assert names == (sorted(in_order) if flavour == "safetensors" else in_order)
    for layer in ir.convs:
        nd = layer.spatial_dims
        assert (layer.stride, layer.dilation, layer.padding, layer.groups) == (
            (1,) * nd,
            (1,) * nd,
            ((0, 0),) * nd,
            1,
        )
        assert layer.input_size is None and any("assumed" in n for n in layer.notes)
        np.testing.assert_array_equal(
            layer.kernel, model.state_dict()[f"{layer.name}.weight"].numpy()
        )
        assert layer.provenance.locator == f"{layer.name}.weight"
        assert layer.provenance.get("nesting", "") == nesting
    assert isinstance(ir.layer("head"), DenseLayer)
    assert any("--arch" in n for n in ir.notes)
    assert ir.graph is not None and ir.graph.chain_assumed
    stem = ir.layer("stem")
    assert isinstance(stem, ConvLayer)
    if flavour == "safetensors":  # keys sorted by name: no order to pair a BN by
        assert stem.bn is None and any("alphabetical" in n for n in ir.notes)
    else:
        assert stem.bn is not None and stem.bn.name == "bn"
        assert any("key order" in n for n in stem.notes)
    container = {"training": "zip", "lightning": "zip"}.get(flavour, flavour)
    assert stem.provenance.get("container") == container


@pytest.mark.parametrize("flavour", ["zip", "legacy", "training", "safetensors"])
def test_arch_route_reads_real_geometry(tmp_path: Path, flavour: str) -> None:
    model, shape, table = make("2d")
    path, _ = _state_dict_files(tmp_path, model.state_dict())[flavour]
    ir = load(path, arch=f"{__name__}:GeometryNet", input_shapes={"": shape})
    assert_geometry(ir, model, shape, table, sizes=True)
    assert ir.graph is not None and not ir.graph.chain_assumed  # torch.export of the built arch
    assert ir.layer("stem").bn is not None


def test_arch_without_input_shape_reads_geometry_only(tmp_path: Path) -> None:
    model, shape, table = make("1d")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    ir = load(tmp_path / "sd.pt", arch=f"{__name__}:OneDNet")
    assert_geometry(ir, model, shape, table, sizes=False)
    assert ir.graph.chain_assumed


def test_arch_strips_lightning_prefix_and_keeps_file_keys(tmp_path: Path) -> None:
    model, shape, table = make("3d")
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "l.ckpt")
    ir = load(tmp_path / "l.ckpt", arch=f"{__name__}:ThreeDNet", input_shapes={"": shape})
    assert_geometry(ir, model, shape, table, sizes=True)
    assert ir.layer("a").provenance.locator == "model.a.weight"
    assert ir.layer("a").provenance.get("nesting") == "state_dict"


def test_trusted_full_pickle_reads_like_arch(tmp_path: Path) -> None:
    model, shape, table = make("2d")
    torch.save(model, tmp_path / "full.pt")
    ir = load(tmp_path / "full.pt", trust_pickle=True, input_shapes={"": shape})
    assert_geometry(ir, model, shape, table, sizes=True)
    assert ir.layer("stem").provenance.get("container") == "pickled-module"


EXPECTED_MTCNN = {  # from the facenet-pytorch reference architecture (README: stride 1, pad 0)
    "pnet": {
        "conv1": (10, 3, 3, 3),
        "conv2": (16, 10, 3, 3),
        "conv3": (32, 16, 3, 3),
        "conv4_1": (2, 32, 1, 1),
        "conv4_2": (4, 32, 1, 1),
    },
    "rnet": {"conv1": (28, 3, 3, 3), "conv2": (48, 28, 3, 3), "conv3": (64, 48, 2, 2)},
    "onet": {
        "conv1": (32, 3, 3, 3),
        "conv2": (64, 32, 3, 3),
        "conv3": (64, 64, 3, 3),
        "conv4": (128, 64, 2, 2),
    },
}
DENSE_MTCNN = {"pnet": 0, "rnet": 3, "onet": 4}


@pytest.mark.real_models
@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_mtcnn_legacy_state_dicts_load(shared_models: Path, net: str) -> None:
    path = shared_models / f"mtcnn_{net}.pt"
    ir = load(path)
    assert {c.name: c.kernel.shape for c in ir.convs} == EXPECTED_MTCNN[net]
    assert len(ir.denses) == DENSE_MTCNN[net]
    sd = torch.load(path, weights_only=True)
    for layer in ir.convs:
        assert layer.stride == (1, 1) and layer.padding == ((0, 0), (0, 0)) and layer.bn is None
        np.testing.assert_array_equal(layer.kernel, sd[f"{layer.name}.weight"].numpy())
        assert layer.provenance.get("container") == "legacy"


def test_sniff_accepts_torch_files_and_rejects_others(tmp_path: Path) -> None:
    import zipfile

    model, shape, _ = make("1d")
    files = _state_dict_files(tmp_path, model.state_dict())
    torch.jit.save(torch.jit.trace(model, torch.zeros(shape)), tmp_path / "ts.pt")
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)), tmp_path / "e.pt2")
    accepted = [p for p, _ in files.values()] + [tmp_path / "ts.pt", tmp_path / "e.pt2"]
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as zf:  # the layout Keras 3 writes
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    (tmp_path / "x.onnx").write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(100))
    (tmp_path / "x.txt").write_bytes(b"hello world, not a model" * 10)
    for path in accepted:
        assert PyTorchLoader.sniff(path, path.read_bytes()[:4096]), path
    for name in ("m.keras", "x.h5", "x.onnx", "x.txt"):
        path = tmp_path / name
        assert not PyTorchLoader.sniff(path, path.read_bytes()[:4096]), name


def test_bn_fold_from_export_matches_torch(tmp_path: Path) -> None:
    """conv+BN as attached must equal the live modules' composite on a random input."""
    model, shape, _ = make("3d")
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)), path)
    conv = load(path).layer("a")
    assert isinstance(conv, ConvLayer) and conv.bn is not None
    x = torch.randn(shape)
    folded = torch.nn.functional.conv3d(
        x, torch.from_numpy(conv.folded_kernel()).float(), stride=conv.stride, padding=1
    )
    with torch.no_grad():
        want = model.bn(model.a(x)) - model.bn(model.a(torch.zeros(shape)))  # linear part only
        got = folded - torch.nn.functional.conv3d(
            torch.zeros(shape),
            torch.from_numpy(conv.folded_kernel()).float(),
            padding=1,
            stride=conv.stride,
        )
    assert math.isclose(float((want - got).abs().max()), 0.0, abs_tol=1e-4)


def test_decomposed_export_reads_core_aten(tmp_path: Path) -> None:
    """After run_decompositions(): aten.convolution, native BN + getitem, addmm with a .t() weight."""
    model, shape, table = make("2d")
    path = tmp_path / "dec.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)).run_decompositions(), path)
    ir = load(path)
    ops = {n.op.split(".")[1] for n in ir.graph.nodes if n.kind in ("conv", "dense", "batchnorm")}
    assert {"convolution", "addmm", "_native_batch_norm_legit_no_training"} <= ops
    assert ir.layer("stem").bn is not None
    np.testing.assert_array_equal(ir.layer("head").weight, model.head.weight.detach().numpy())
    for name in ("dw", "grouped", "up"):  # circular / reflect pads decompose into indexing ops
        key = table[name]
        layer = ir.layer(name)
        assert (layer.stride, layer.dilation, layer.groups, layer.transposed) == (
            GEOMETRY[key][0],
            GEOMETRY[key][1],
            GEOMETRY[key][3],
            GEOMETRY[key][5],
        )


def test_dynamic_export_needs_and_takes_input_shape(tmp_path: Path) -> None:
    model, _, table = make("2d")
    dims = {
        "x": {
            0: torch.export.Dim("b", max=8),
            2: 8 * torch.export.Dim("h", min=1, max=8),
            3: 8 * torch.export.Dim("w", min=1, max=8),
        }
    }
    ep = torch.export.export(model, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=dims)
    path = tmp_path / "dyn.pt2"
    torch.export.save(ep, path)
    ir = load(path)
    assert all(c.input_size is None for c in ir.convs) and any("dynamic" in n for n in ir.notes)
    shape = (1, 3, 24, 32)
    assert_geometry(load(path, input_shapes={"": shape}), model, shape, table, sizes=True)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if bool(y.sum() > 0):
            y = self.b(y)
        return y


def test_scripted_control_flow_is_an_unknown_node_and_keeps_its_convs(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(Branchy()), tmp_path / "b.pt")
    ir = load(tmp_path / "b.pt")
    assert [c.name for c in ir.convs] == ["a", "b"]
    assert ir.layer("b").stride == (2, 2) and any("control flow" in n for n in ir.layer("b").notes)
    branch = next(n for n in ir.graph.nodes if n.op == "prim::If")
    assert branch.kind == "unknown" and branch.outputs == ir.graph.outputs
    conv_a = next(n for n in ir.graph.nodes if n.attrs.get("layer") == "a")
    assert conv_a.outputs[0] in branch.inputs  # the branch reads a's output


class Splitter(nn.Module):
    """split / chunk pieces and x + x must stay on the graph (a dropped piece would hide L)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 4, 1)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = torch.split(self.a(x), 2, dim=1)
        y = torch.cat([self.b(right), left], dim=1)
        return y + y


@pytest.mark.parametrize("writer", ["export", "trace"])
def test_split_pieces_and_repeated_inputs_stay_on_the_graph(tmp_path: Path, writer: str) -> None:
    model, shape = Splitter().eval(), (1, 4, 5, 5)
    path = tmp_path / "s.bin"
    if writer == "export":
        torch.export.save(torch.export.export(model, (torch.zeros(shape),)), path)
    else:
        torch.jit.save(torch.jit.trace(model, torch.zeros(shape)), path)
    graph = load(path).graph
    assert all(n.kind != "unknown" for n in graph.nodes), [(n.op, n.kind) for n in graph.nodes]
    add = next(n for n in graph.nodes if n.kind == "add")
    assert len(add.inputs) == 2 and add.inputs[0] == add.inputs[1]
    concat = next(n for n in graph.nodes if n.kind == "concat")
    b = next(n for n in graph.nodes if n.attrs.get("layer") == "b")
    assert b.outputs[0] in concat.inputs and len(concat.inputs) == 2
    produced = {o for n in graph.nodes for o in n.outputs}
    assert all(i in produced or i in graph.inputs for n in graph.nodes for i in n.inputs)


def test_parametrized_and_integer_weights_are_reported_not_dropped(tmp_path: Path) -> None:
    from torch.nn.utils import parametrizations

    net = nn.Sequential(
        parametrizations.weight_norm(nn.Conv2d(1, 2, 3)),
        parametrizations.spectral_norm(nn.Conv2d(2, 2, 3)),
        nn.Conv2d(2, 2, 1),
    )
    sd = net.state_dict()
    sd["int.weight"] = torch.ones(2, 2, 3, 3, dtype=torch.int8)
    torch.save(sd, tmp_path / "p.pt")
    ir = load(tmp_path / "p.pt")
    assert [c.name for c in ir.convs] == ["2"]
    reasons = {s.name: s.reason for s in ir.skipped}
    assert set(reasons) == {
        "0.parametrizations.weight.original1",
        "1.parametrizations.weight.original",
        "int.weight",
    }
    assert "computed at run time" in reasons["1.parametrizations.weight.original"]
    assert "int8" in reasons["int.weight"]


class ExportBreaker(nn.Module):
    """Data-dependent Python control flow (torch.export refuses it) and an unused aux head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, stride=2)
        self.bn = nn.BatchNorm2d(2)
        self.b = nn.Conv2d(2, 2, 3, dilation=2)
        self.aux = nn.Conv2d(2, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.a(x))
        if float(y.abs().max()) >= 0:
            y = self.b(y)
        return y


def test_arch_falls_back_to_an_assumed_chain_and_reports_unused_modules(tmp_path: Path) -> None:
    model = ExportBreaker().eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    ir = load(
        tmp_path / "sd.pt", arch=f"{__name__}:ExportBreaker", input_shapes={"": (1, 1, 13, 13)}
    )
    assert [c.name for c in ir.convs] == ["a", "b"]
    assert ir.layer("a").input_size == (13, 13) and ir.layer("b").input_size == (6, 6)
    assert ir.layer("a").stride == (2, 2) and ir.layer("b").dilation == (2, 2)
    assert ir.layer("a").bn is not None and ir.layer("a").bn.name == "bn"
    assert ir.graph.chain_assumed and any("torch.export failed" in n for n in ir.notes)
    assert [n.kind for n in ir.graph.nodes] == ["conv", "batchnorm", "conv"]
    assert [s.name for s in ir.skipped] == ["aux"] and "never called" in ir.skipped[0].reason


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_any_pickle_protocol(tmp_path: Path, protocol: int, legacy: bool) -> None:
    """torch's weights_only reader parses protocol 2 only; the restricted reader takes newer ones,
    without --trust-pickle, bit-exact."""
    weight = torch.randn(3, 2, 3, 3)
    path = tmp_path / "legacy.pt"
    torch.save(
        {"c.weight": weight},
        path,
        _use_new_zipfile_serialization=not legacy,
        pickle_protocol=protocol,
    )
    assert PyTorchLoader.sniff(path, path.read_bytes()[:4096])
    for trusted in (False, True):
        ir = load(path, trust_pickle=trusted)
        np.testing.assert_array_equal(ir.layer("c").kernel, weight.numpy())
        assert ir.layer("c").provenance.get("container") == ("legacy" if legacy else "zip")
    read = load(path).layer("c").provenance.get("unpickled")
    assert read == (None if protocol == 2 else "restricted")


class OpZoo(nn.Module):
    """One of each op the graph vocabulary maps, in a known order."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3, padding=1)
        self.prelu = nn.PReLU(4, init=-3.0)
        self.scale = nn.Parameter(torch.tensor([0.5, -2.0, 1.0, 0.1]).reshape(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.leaky_relu(self.c(x), 0.3)
        y = nn.functional.gelu(nn.functional.elu(y, alpha=1.7))
        y = self.prelu(nn.functional.silu(y)) * self.scale / 4.0
        y = nn.functional.avg_pool2d(y, 3, stride=2, padding=1, count_include_pad=False)
        y = nn.functional.interpolate(y, scale_factor=3, mode="nearest")
        y = nn.functional.pad(y, (1, 1, 0, 0))
        m = y.mean(dim=(2, 3), keepdim=True)
        z = torch.cat([y, y + m], dim=1)  # y + m broadcasts m over the grid
        return torch.flatten(nn.functional.dropout(z, 0.5, training=False), 1)


def test_op_vocabulary_from_export(tmp_path: Path) -> None:
    torch.export.save(
        torch.export.export(OpZoo().eval(), (torch.zeros(1, 2, 8, 8),)), tmp_path / "z.pt2"
    )
    nodes = load(tmp_path / "z.pt2").graph.nodes
    got = [(n.kind, n.attrs.get("fn")) for n in nodes]
    assert got == [
        ("conv", None), ("activation", "leaky_relu"), ("activation", "elu"), ("activation", "gelu"),
        ("activation", "silu"), ("activation", "prelu"), ("mul_const", None), ("mul_const", None),
        ("avgpool", None), ("resize_nearest", None), ("identity", None), ("global_avgpool", None),
        ("unknown", None), ("concat", None), ("identity", None), ("identity", None),
    ]  # fmt: skip
    attrs = [n.attrs for n in nodes]
    assert attrs[1]["alpha"] == pytest.approx(0.3) and attrs[2]["alpha"] == pytest.approx(1.7)
    assert attrs[5]["slope"] == pytest.approx(3.0)
    assert attrs[6]["value"] == pytest.approx(2.0) and attrs[7]["value"] == pytest.approx(0.25)
    assert attrs[8] == {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "ceil_mode": False,
                        "input_size": (8, 8), "count_include_pad": False}  # fmt: skip
    assert attrs[9]["factor"] == (3, 3)
    assert attrs[11]["input_size"] == (12, 14)
    assert "broadcasts" in attrs[12]["reason"]
