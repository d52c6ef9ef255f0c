"""Bad PyTorch input: a one-line convaudit error, never a traceback, never unpickling by default."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convaudit.errors import (
    ConfigError,
    ConvauditError,
    InputShapeError,
    ModelFileError,
    UntrustedPickleError,
)
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.pytorch.archive import LEGACY_MAGIC
from convaudit.loaders.pytorch.reader import PyTorchLoader

PWNED = Path("/tmp/convaudit-test-pickle-ran")


class Evil:
    """Unpickling this runs code: the loader must never call it without --trust-pickle."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (PWNED.write_text, ("ran",))


def load(path: Path, **options: object) -> None:
    PyTorchLoader().load(path, LoadOptions(**options))  # type: ignore[arg-type]


def assert_one_line(err: ConvauditError) -> None:
    assert (
        "\n" not in err.message and err.message.startswith("cannot read")
    ) or "--arch" in err.message


def test_a_payload_beside_the_weights_is_never_run(tmp_path: Path) -> None:
    """The restricted reader takes the tensors and leaves the payload an inert placeholder."""
    PWNED.unlink(missing_ok=True)
    weight = torch.randn(2, 2, 3, 3)
    torch.save({"model": Evil(), "conv.weight": weight}, tmp_path / "evil.pt")
    ir = PyTorchLoader().load(tmp_path / "evil.pt", LoadOptions())
    np.testing.assert_array_equal(ir.layer("conv").kernel, weight.numpy())
    assert any("without running code" in n and "builtins.getattr" in n for n in ir.notes)
    assert not PWNED.exists()


def test_tensors_inside_an_unloaded_object_need_trust_with_reason_and_hint(
    tmp_path: Path,
) -> None:
    PWNED.unlink(missing_ok=True)
    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UntrustedPickleError) as info:
        load(tmp_path / "evil.pt")
    assert "arbitrary code" in info.value.message and "unpickling" in info.value.message
    assert "builtins.getattr" in info.value.message  # what holds them (a bound method)
    assert "--trust-pickle" in (info.value.hint or "")
    assert not PWNED.exists()
    assert_one_line(info.value)


def test_pickled_module_is_refused_legacy_too(tmp_path: Path) -> None:
    torch.save(
        nn.Sequential(nn.Conv2d(1, 2, 3)), tmp_path / "m.pt", _use_new_zipfile_serialization=False
    )
    with pytest.raises(UntrustedPickleError):
        load(tmp_path / "m.pt")


def _state_dict_bytes(tmp_path: Path, legacy: bool) -> bytes:
    path = tmp_path / "ok.pt"
    torch.save(
        {"c.weight": torch.randn(4, 2, 3, 3)}, path, _use_new_zipfile_serialization=not legacy
    )
    return path.read_bytes()


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_files(tmp_path: Path, legacy: bool, cut: float) -> None:
    data = _state_dict_bytes(tmp_path, legacy)
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * cut)])
    if not PyTorchLoader.sniff(path, path.read_bytes()[:4096]):
        return  # not even recognisable: detect() reports it as an unknown format
    with pytest.raises(ModelFileError) as info:
        load(path)
    assert not isinstance(info.value, UntrustedPickleError)  # corrupt is not "needs trust"
    assert_one_line(info.value)


def test_corrupt_pickle_bytes(tmp_path: Path) -> None:
    data = bytearray(_state_dict_bytes(tmp_path, legacy=True))
    data[40:60] = b"x" * 20
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as info:
        load(tmp_path / "bad.pt")
    assert not isinstance(info.value, UntrustedPickleError)


def test_random_bytes_behind_the_legacy_magic(tmp_path: Path) -> None:
    (tmp_path / "r.pt").write_bytes(LEGACY_MAGIC + bytes(range(256)) * 8)
    with pytest.raises(ModelFileError):
        load(tmp_path / "r.pt")


def test_zip_bomb_is_refused_before_extraction(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/data/0", bytes(64 * 1024**2))
    assert PyTorchLoader.sniff(path, path.read_bytes()[:4096])
    with pytest.raises(ModelFileError, match="zip bomb"):
        load(path)


def test_safetensors_declaring_more_than_the_file(tmp_path: Path) -> None:
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    ).encode()
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    assert PyTorchLoader.sniff(path, path.read_bytes()[:4096])
    with pytest.raises(ModelFileError) as info:
        load(path)
    assert_one_line(info.value)


def test_storage_shorter_than_its_tensor(tmp_path: Path) -> None:
    """A zip state_dict whose storage member was cut short (declared size exceeds the data)."""
    src = tmp_path / "ok.pt"
    torch.save({"c.weight": torch.randn(64, 64, 3, 3)}, src)
    dst = tmp_path / "short.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, data[:100] if info.filename.endswith("/data/0") else data)
    with pytest.raises(ModelFileError):
        load(dst)


@pytest.mark.parametrize("kind", ["pt2", "torchscript"])
def test_truncated_program_archives(tmp_path: Path, kind: str) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3)).eval()
    path = tmp_path / "m.bin"
    if kind == "pt2":
        torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 5, 5),)), path)
    else:
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 5, 5)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    if PyTorchLoader.sniff(path, path.read_bytes()[:4096]):
        with pytest.raises(ModelFileError):
            load(path)


def test_training_dict_without_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "notes": "hello"}, tmp_path / "t.pt")
    with pytest.raises(ModelFileError, match="no state_dict"):
        load(tmp_path / "t.pt")


def test_empty_dict_says_it_is_empty(tmp_path: Path) -> None:
    torch.save({}, tmp_path / "t.pt")
    with pytest.raises(ModelFileError, match=r"t\.pt: the dict is empty$"):
        load(tmp_path / "t.pt")


def test_state_dict_without_conv_or_dense(tmp_path: Path) -> None:
    torch.save({"bn.running_mean": torch.zeros(3)}, tmp_path / "t.pt")
    with pytest.raises(ModelFileError, match="no conv or dense"):
        load(tmp_path / "t.pt")


def test_arch_errors(tmp_path: Path) -> None:
    torch.save({"x.weight": torch.zeros(2, 1, 3, 3)}, tmp_path / "sd.pt")
    for spec in ("no_colon", "no_such_module_xyz:f", "math:pi", "collections:OrderedDict"):
        with pytest.raises(ConfigError):
            load(tmp_path / "sd.pt", arch=spec)
    with pytest.raises(ModelFileError, match="do not fit"):
        load(tmp_path / "sd.pt", arch="torch.nn:Identity")


def test_input_shape_contradicting_an_export(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 5, 5),)), tmp_path / "m.pt2")
    with pytest.raises(InputShapeError, match="contradicts"):
        load(tmp_path / "m.pt2", input_shapes={"": (1, 1, 7, 7)})


def test_torchscript_input_shape_that_does_not_run(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3)).eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "m.pt")
    with pytest.raises(InputShapeError):
        load(tmp_path / "m.pt", input_shapes={"": (1, 5, 8, 8)})
