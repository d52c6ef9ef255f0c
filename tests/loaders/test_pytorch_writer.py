"""Write-back round trips: each file is re-read by its own framework; the kernels are replaced,
every other tensor and entry is bit-identical, and the input file is untouched."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convaudit.errors import ModelFileError
from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.pytorch.archive import LEGACY_MAGIC
from convaudit.loaders.pytorch.reader import PyTorchLoader


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="circular")
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(torch.relu(self.bn(self.conv(x))))
        return self.fc(y.mean(dim=(2, 3)))


SHAPE = (1, 2, 8, 8)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_kernels(ir: ModelIR) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for layer in ir.layers:
        shape = layer.kernel.shape if isinstance(layer, ConvLayer) else layer.weight.shape
        out[layer.name] = rng.standard_normal(shape).astype(np.float64)
    return out


def assert_replaced(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    ir: ModelIR,
    updates: Mapping[str, np.ndarray],
) -> None:
    keys = {ir.layer(name).provenance.locator: name for name in updates}
    assert set(before) == set(after)
    for key, old in before.items():
        new = after[key]
        assert new.dtype == old.dtype and new.shape == old.shape, key
        if key in keys:
            want = torch.from_numpy(updates[keys[key]]).to(old.dtype)
            assert torch.equal(new, want), key
            assert not torch.equal(new, old), key
        else:
            assert new.detach().numpy().tobytes() == old.detach().numpy().tobytes(), key


def round_trip(src: Path, dest: Path, **options: object) -> tuple[ModelIR, dict[str, np.ndarray]]:
    digest = sha(src)
    ir = PyTorchLoader().load(src, LoadOptions(**options))  # type: ignore[arg-type]
    updates = new_kernels(ir)
    PyTorchLoader().write_kernels(ir, dest, updates)
    assert sha(src) == digest
    reread = PyTorchLoader().load(dest, LoadOptions(**options))  # type: ignore[arg-type]
    for name, kernel in updates.items():
        layer = reread.layer(name)
        got = layer.kernel if isinstance(layer, ConvLayer) else layer.weight
        np.testing.assert_array_equal(got, kernel.astype(np.float32))
    return ir, updates


def model() -> nn.Module:
    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net


@pytest.mark.parametrize("legacy", [False, True])
def test_state_dict_round_trip_keeps_its_format(tmp_path: Path, legacy: bool) -> None:
    sd = model().state_dict()
    src = tmp_path / "sd.pt"
    torch.save(sd, src, _use_new_zipfile_serialization=not legacy)
    ir, updates = round_trip(src, tmp_path / "out.pt")
    out = tmp_path / "out.pt"
    assert zipfile.is_zipfile(out) is not legacy
    if legacy:
        assert out.read_bytes().startswith(LEGACY_MAGIC)
    assert_replaced(sd, torch.load(out, weights_only=True), ir, updates)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_kernels_are_written_back_in_their_stored_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model().state_dict().items()}
    torch.save(sd, tmp_path / "h.pt")
    ir = PyTorchLoader().load(tmp_path / "h.pt", LoadOptions())
    assert ir.layer("conv").provenance.dtype == str(dtype).removeprefix("torch.")
    np.testing.assert_array_equal(ir.layer("conv").kernel, sd["conv.weight"].double().numpy())
    updates = {"conv": np.full(ir.layer("conv").kernel.shape, 0.1)}
    PyTorchLoader().write_kernels(ir, tmp_path / "o.pt", updates)
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    assert out["conv.weight"].dtype == dtype
    assert torch.equal(out["conv.weight"], torch.full_like(out["conv.weight"], 0.1))
    for key in sd:
        if key != "conv.weight":
            assert torch.equal(out[key], sd[key])


def test_training_dict_keeps_optimizer_and_epoch(tmp_path: Path) -> None:
    net = model()
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(SHAPE)).sum().backward()
    opt.step()
    ckpt = {
        "epoch": 12,
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "best": 0.93,
    }
    torch.save(ckpt, tmp_path / "c.pt")
    ir, updates = round_trip(tmp_path / "c.pt", tmp_path / "o.pt")
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    assert out["epoch"] == 12 and out["best"] == 0.93
    assert_replaced(ckpt["model_state_dict"], out["model_state_dict"], ir, updates)
    for pid, state in ckpt["optimizer_state_dict"]["state"].items():
        for k, v in state.items():
            assert torch.equal(out["optimizer_state_dict"]["state"][pid][k], v)
    assert (
        out["optimizer_state_dict"]["param_groups"] == ckpt["optimizer_state_dict"]["param_groups"]
    )


def test_safetensors_keeps_metadata(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    sd = {k: v.contiguous() for k, v in model().state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"), metadata={"format": "pt", "author": "test"})
    ir, updates = round_trip(tmp_path / "m.safetensors", tmp_path / "o.safetensors")
    assert_replaced(sd, load_file(str(tmp_path / "o.safetensors")), ir, updates)
    with safe_open(str(tmp_path / "o.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "author": "test"}


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_round_trip_runs(tmp_path: Path, how: str) -> None:
    net = model()
    ts = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.zeros(SHAPE))
    torch.jit.save(ts, tmp_path / "m.pt", _extra_files={"meta.txt": "hello"})
    ir, updates = round_trip(tmp_path / "m.pt", tmp_path / "o.pt")
    extra = {"meta.txt": ""}
    loaded = torch.jit.load(str(tmp_path / "o.pt"), _extra_files=extra)
    assert extra["meta.txt"] in ("hello", b"hello")
    assert_replaced(net.state_dict(), loaded.state_dict(), ir, updates)
    net.load_state_dict(loaded.state_dict())  # the written module computes with the new kernels
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)


def test_exported_program_round_trip_runs(tmp_path: Path) -> None:
    net = model()
    torch.export.save(torch.export.export(net, (torch.zeros(SHAPE),)), tmp_path / "m.pt2")
    ir, updates = round_trip(tmp_path / "m.pt2", tmp_path / "o.pt2")
    ep = torch.export.load(tmp_path / "o.pt2")
    assert_replaced(net.state_dict(), ep.state_dict, ir, updates)
    net.load_state_dict(dict(ep.state_dict))
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert torch.allclose(ep.module()(x), net(x), atol=1e-5)


def test_arch_route_writes_to_file_keys(tmp_path: Path) -> None:
    net = model()
    sd = {f"model.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 2}, tmp_path / "l.ckpt")
    ir, updates = round_trip(
        tmp_path / "l.ckpt",
        tmp_path / "o.ckpt",
        arch=f"{__name__}:SmallNet",
        input_shapes={"": SHAPE},
    )
    out = torch.load(tmp_path / "o.ckpt", weights_only=True)
    assert out["epoch"] == 2
    assert_replaced(sd, out["state_dict"], ir, updates)


def test_trusted_full_module_round_trip(tmp_path: Path) -> None:
    net = model()
    torch.save(net, tmp_path / "full.pt")
    ir, updates = round_trip(tmp_path / "full.pt", tmp_path / "o.pt", trust_pickle=True)
    out = torch.load(tmp_path / "o.pt", weights_only=False)
    assert isinstance(out, SmallNet)
    assert_replaced(net.state_dict(), out.state_dict(), ir, updates)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda u: {"no_such_layer": np.zeros(3)},
        lambda u: {"conv": np.zeros((1, 2, 3))},
    ],
)
def test_bad_updates_are_refused(tmp_path: Path, mutate: Callable[[dict], dict]) -> None:
    torch.save(model().state_dict(), tmp_path / "sd.pt")
    ir = PyTorchLoader().load(tmp_path / "sd.pt", LoadOptions())
    with pytest.raises(ModelFileError):
        PyTorchLoader().write_kernels(ir, tmp_path / "o.pt", mutate(new_kernels(ir)))


def test_protocol_4_file_read_with_trust_is_written_back(tmp_path: Path) -> None:
    sd = model().state_dict()
    torch.save(
        {"net": sd, "epoch": 1},
        tmp_path / "p4.pt",
        _use_new_zipfile_serialization=False,
        pickle_protocol=4,
    )
    ir, updates = round_trip(tmp_path / "p4.pt", tmp_path / "o.pt", trust_pickle=True)
    assert ir.layer("conv").provenance.get("unpickled") == "full"
    out = torch.load(
        tmp_path / "o.pt", weights_only=True
    )  # written back at torch's default protocol
    assert out["epoch"] == 1 and not zipfile.is_zipfile(tmp_path / "o.pt")
    assert_replaced(sd, out["net"], ir, updates)
