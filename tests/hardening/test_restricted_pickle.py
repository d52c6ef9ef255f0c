"""Promise 1 for training checkpoints: their tensors are read, their code never runs.

torch.load(weights_only=True) refuses a pickle that names a class outside torch's allowlist;
convaudit then reads it with its restricted unpickler (convaudit.loaders.pytorch.unpickler).
Each payload here is live: loading it the unsafe way really runs it (positive control), so the
tests fail if the restricted reader ever called, or imported, anything a file names.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, assert_clean_error, cli_env

from convaudit.errors import ModelFileError
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.pytorch.reader import PyTorchLoader


def _load(path: Path):  # type: ignore[no-untyped-def]
    return PyTorchLoader().load(path, LoadOptions())


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 1))
    return net.state_dict()


class Trap:
    """A real class whose __setstate__ (BUILD) runs a command: unpickling it the unsafe way
    touches the marker."""

    def __init__(self, marker: Path, payload: bytes = b"") -> None:
        self.cmd = f"touch {marker}"
        self.payload = payload

    def __setstate__(self, state: dict) -> None:
        os.system(state["cmd"])
        self.__dict__.update(state)


class Chained:
    """REDUCE of a REDUCE: the callable is itself rebuilt (functools.partial, with BUILD)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (functools.partial(os.system, f"touch {self.marker}"), ())


class Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (subprocess.Popen, (["touch", str(self.marker)],))


class Evaluated:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (eval, (f"__import__('os').system('touch {self.marker}')",))


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("payload", [Trap, Chained, Popen, Evaluated])
def test_payloads_beside_the_weights_never_run(tmp_path: Path, payload, legacy: bool) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "PWNED"
    state = _state()
    path = tmp_path / "ck.pt"
    torch.save(
        {"state_dict": state, "extra": [payload(marker), {"again": payload(marker)}]},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    ran = torch.load(path, weights_only=False)  # positive control: the payload is live
    for obj in (ran["extra"][0], ran["extra"][1]["again"]):
        if isinstance(obj, subprocess.Popen):
            obj.wait()  # it runs in the background
    assert marker.exists(), "the payload does not run: the test proves nothing"
    marker.unlink()
    ir = _load(path)
    time.sleep(0.2)
    assert not marker.exists(), "the restricted reader ran the payload"
    for key, tensor in state.items():  # bit-exact, as torch reads them
        if key.endswith("weight"):
            got = ir.layer(key[: -len(".weight")]).kernel
            np.testing.assert_array_equal(got, tensor.numpy())
            assert got.dtype == np.float32


def test_a_huge_setstate_payload_is_recorded_not_run(tmp_path: Path) -> None:
    """BUILD state of 24 MiB and 300 levels of nesting: held inertly, read in seconds."""
    marker = tmp_path / "PWNED"
    deep: list = []
    for _ in range(300):
        deep = [deep, {"level": deep}]
    trap = Trap(marker, payload=os.urandom(24 * 1024**2))
    trap.deep = deep  # type: ignore[attr-defined]
    path = tmp_path / "big.ckpt"
    torch.save({"state_dict": _state(), "hyper_parameters": trap}, path)
    start = time.perf_counter()
    ir = _load(path)
    assert time.perf_counter() - start < 60
    assert not marker.exists()
    assert any("test_restricted_pickle.Trap" in n for n in ir.notes)


def _sideeffect_module(folder: Path, marker: Path) -> None:
    (folder / "ca_sideeffect.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "class Config(dict):\n    pass\n"
    )


def test_the_modules_a_checkpoint_names_are_never_imported(tmp_path: Path) -> None:
    """A Lightning-style checkpoint whose hparams class lives in a module that writes a marker
    when imported; the module is importable in the reading process, and is not imported."""
    marker = tmp_path / "IMPORTED"
    _sideeffect_module(tmp_path, marker)
    sys.path.insert(0, str(tmp_path))
    try:
        import ca_sideeffect  # type: ignore[import-not-found]

        config = ca_sideeffect.Config(lr=0.1, layers=[3, 8, 4])
        path = tmp_path / "model.ckpt"
        torch.save({"state_dict": _state(), "hyper_parameters": config, "epoch": 7}, path)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ca_sideeffect", None)
    marker.unlink()
    env = {**cli_env(), "PYTHONPATH": f"{tmp_path}{os.pathsep}{cli_env()['PYTHONPATH']}"}
    probe = (
        "import sys, convaudit\n"
        f"ir = convaudit.load({str(path)!r})\n"
        "print(len(ir.convs), 'ca_sideeffect' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "False"]
    assert not marker.exists()
    # positive control: the same process can import it, and then the marker appears
    subprocess.run([sys.executable, "-c", "import ca_sideeffect"], env=env, check=True)
    assert marker.exists()


def test_an_omegaconf_lightning_checkpoint(tmp_path: Path) -> None:
    """The layout Lightning writes, with omegaconf hyperparameters: read without omegaconf."""
    omegaconf = pytest.importorskip("omegaconf")
    state = _state()
    hparams = omegaconf.OmegaConf.create({"model": {"channels": [3, 8, 4]}, "lr": 1e-3})
    checkpoint = {
        "epoch": 4,
        "global_step": 1200,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 5}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.1)}},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(8, 3, 3, 3)}}, "param_groups": []}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
    }  # fmt: skip
    path = tmp_path / "epoch=4-step=1200.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(path, weights_only=True)  # what convaudit used to stop at
    probe = (
        "import sys, convaudit\n"
        f"ir = convaudit.load({str(path)!r})\n"
        "print(sorted(c.name for c in ir.convs), 'omegaconf' in sys.modules)\n"
        "print(ir.notes[0])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env(), cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    first, note = proc.stdout.splitlines()[:2]
    assert first == "['model.0', 'model.1'] False"
    assert "omegaconf" in note and "without running code" in note
    ir = _load(path)
    for key, tensor in state.items():
        if key.endswith("weight"):
            np.testing.assert_array_equal(ir.layer(f"model.{key[:-7]}").kernel, tensor.numpy())


def _torch_zip(path: Path, pickled: bytes) -> Path:
    """A zip laid out like torch.save's, around a hand-written data.pkl."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize(
    ("name", "pickled"),
    [
        # _codecs.encode through a codec that would be imported (encodings.*): refused
        ("codec", b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x08\x00\x00\x00uu_codec\x86R."),
        # bytearray(2**40): never allocated
        ("bytearray", b"\x80\x02c__builtin__\nbytearray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85R."),
        # BUILD on an allowed function: a pickle may not set its attributes
        (
            "build-function",
            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x01\x00\x00\x00aK\x01sb.",
        ),
        # a persistent id that is no storage
        ("persid", b"\x80\x02X\x04\x00\x00\x00evilQ."),
    ],
)
def test_hostile_opcodes_end_in_one_error(
    tmp_path: Path, run_cli, name: str, pickled: bytes
) -> None:  # type: ignore[no-untyped-def]
    from convaudit.loaders.pytorch.unpickler import restricted_load

    path = _torch_zip(tmp_path / f"{name}.pt", pickled)
    before = set(sys.modules)
    with pytest.raises(Exception):  # noqa: B017 (any refusal; the loader makes it one error)
        restricted_load(path)
    # (torch's own weights-only pass, tried first, does look codecs up: stdlib encodings only)
    assert not {m for m in set(sys.modules) - before if m.startswith("encodings.")}
    import torch._utils

    assert not hasattr(torch._utils._rebuild_tensor_v2, "a")
    with pytest.raises(ModelFileError):
        _load(path)
    assert_clean_error(run_cli("layers", path), name)


def test_a_placeholder_never_reaches_the_layers(tmp_path: Path) -> None:
    """Non-tensor values inside the state_dict (an unloaded object) are no layers."""
    state = dict(_state())
    state["0._extra_state"] = Popen(tmp_path / "PWNED")  # type: ignore[assignment]
    path = tmp_path / "sd.pt"
    torch.save(state, path)
    ir = _load(path)
    assert sorted(c.name for c in ir.convs) == ["0", "1"]
    assert not (tmp_path / "PWNED").exists()


def test_a_full_module_still_needs_trust(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), path)
    line = assert_clean_error(run_cli("layers", path), "module")
    assert "torch.nn.modules.container.Sequential" in line and "code" in line
