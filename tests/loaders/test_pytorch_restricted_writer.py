"""Writing kernels back into a checkpoint read without running its code (its pickle names classes
that were never loaded): only the changed storages' bytes differ; the pickle, every other
storage and every other archive member stay byte-identical; torch itself (with the classes
importable again) reads the new file and sees the new kernels and the same everything else."""

from __future__ import annotations

import hashlib
import importlib
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from convaudit.errors import ModelFileError
from convaudit.ir import ConvLayer
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.pytorch.reader import PyTorchLoader


@pytest.fixture
def hparams_module(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A module with a config class, importable while the checkpoint is written and re-read by
    torch, but not when convaudit reads it (the restricted reader never imports it)."""
    (tmp_path / "ca_hparams.py").write_text("class HParams(dict):\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    yield importlib.import_module("ca_hparams")
    sys.path.remove(str(tmp_path))
    sys.modules.pop("ca_hparams", None)


def _checkpoint(hparams_module, half: bool = False) -> dict:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 1))
    if half:
        net = net.half()
    state = net.state_dict()
    return {
        "state_dict": state,
        "hyper_parameters": hparams_module.HParams(lr=0.1),
        "optimizer_states": [{"exp_avg": torch.randn(8, 3, 3, 3)}],
        "tied": state["0.weight"],  # the same storage twice: written once, both see it
        "epoch": 3,
    }


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("half", [False, True])
def test_only_the_changed_storages_change(
    tmp_path: Path, hparams_module, legacy: bool, half: bool
) -> None:  # type: ignore[no-untyped-def]
    src, dest = tmp_path / "in.ckpt", tmp_path / "out.ckpt"
    torch.save(_checkpoint(hparams_module, half), src, _use_new_zipfile_serialization=not legacy)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    sys.modules.pop("ca_hparams")  # convaudit reads it without the class
    ir = PyTorchLoader().load(src, LoadOptions())
    conv = ir.layer("0")
    assert isinstance(conv, ConvLayer)
    assert conv.provenance is not None and conv.provenance.get("unpickled") == "restricted"
    new = np.random.default_rng(1).standard_normal(conv.kernel.shape)
    PyTorchLoader().write_kernels(ir, dest, {"0": new})
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest  # the input is untouched
    if not legacy:
        before, after = _members(src), _members(dest)
        assert set(before) == set(after)
        changed = {n for n in before if before[n] != after[n]}
        assert len(changed) == 1 and "/data/" in changed.pop()  # one storage, pickle untouched
    else:
        assert src.stat().st_size == dest.stat().st_size
    importlib.import_module("ca_hparams")  # torch itself, with the class back
    old, got = torch.load(src, weights_only=False), torch.load(dest, weights_only=False)
    dtype = torch.float16 if half else torch.float32
    want = torch.from_numpy(new).to(dtype)
    assert torch.equal(got["state_dict"]["0.weight"], want)
    assert torch.equal(got["tied"], want)  # tied storage: the same bytes
    assert torch.equal(got["state_dict"]["1.weight"], old["state_dict"]["1.weight"])
    assert torch.equal(got["optimizer_states"][0]["exp_avg"], old["optimizer_states"][0]["exp_avg"])
    assert got["hyper_parameters"] == old["hyper_parameters"] and got["epoch"] == 3
    assert type(got["hyper_parameters"]).__name__ == "HParams"
    # and convaudit reads its own output back
    reread = PyTorchLoader().load(dest, LoadOptions()).layer("0")
    np.testing.assert_array_equal(reread.kernel, want.numpy())  # type: ignore[union-attr]


def test_a_changed_file_is_refused_not_misread(tmp_path: Path, hparams_module) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "in.ckpt"
    torch.save(_checkpoint(hparams_module), src)
    sys.modules.pop("ca_hparams")
    ir = PyTorchLoader().load(src, LoadOptions())
    again = importlib.import_module("ca_hparams")
    torch.save({"state_dict": {}, "hp": again.HParams()}, src)  # replaced meanwhile
    with pytest.raises(ModelFileError, match="no longer in the file"):
        PyTorchLoader().write_kernels(ir, tmp_path / "out.ckpt", {"0": np.zeros((8, 3, 3, 3))})
