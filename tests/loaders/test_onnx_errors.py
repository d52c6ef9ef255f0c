"""Bad ONNX input raises a convaudit error with a one-line message, never a traceback.

Broken files cannot come from a real exporter, so most are made by damaging a real export.
"""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_fixtures import Exported, Net1d, export

from convaudit.errors import ConvauditError, ModelFileError
from convaudit.loaders import detect
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.onnx.reader import OnnxLoader

SHAPE = (1, 2, 37)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return export(Net1d(), SHAPE, tmp_path_factory.mktemp("e_legacy") / "net.onnx", dynamo=False)


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory, legacy: Exported) -> Path:
    """The legacy export re-saved with every tensor in one external data file (onnx's own API)."""
    folder = tmp_path_factory.mktemp("e_ext")
    model = onnx.load(str(legacy.path))
    path = folder / "ext.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0
    )
    return path


def load(path: Path) -> None:
    OnnxLoader().load(path, LoadOptions())


def expect_error(path: Path, words: str) -> ModelFileError:
    with pytest.raises(ModelFileError, match=words) as err:
        load(path)
    assert "\n" not in err.value.message
    return err.value


def damaged(legacy: Exported, tmp_path: Path, change) -> Path:
    model = onnx.load(str(legacy.path))
    change(model)
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_truncated_file(legacy: Exported, tmp_path: Path) -> None:
    data = legacy.path.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "truncated or corrupt|not an ONNX model|bytes")


def test_garbage_with_onnx_suffix(tmp_path: Path) -> None:
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    expect_error(path, "not a valid ONNX file|not an ONNX model")


def test_text_file_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a model\n" * 10)
    assert not OnnxLoader.sniff(path, path.read_bytes())
    with pytest.raises(ConvauditError):
        detect(path)


def test_sniff_rejects_hdf5_zip_and_pickle(tmp_path: Path) -> None:
    import h5py

    h5 = tmp_path / "m.onnx"
    with h5py.File(h5, "w") as f:
        f["x"] = np.zeros(3)
    zipped = tmp_path / "z.onnx"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a", "b")
    pickled = tmp_path / "p.onnx"
    pickled.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    for path in (h5, zipped, pickled):
        assert not OnnxLoader.sniff(path, path.read_bytes()[:4096]), path.name


def test_missing_external_data(external: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "ext.onnx"
    shutil.copy(external, lonely)
    err = expect_error(lonely, "external data file 'ext.onnx.data'.*missing")
    assert err.hint


def test_external_data_outside_the_folder(external: Path, tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    shutil.copy(external.parent / "ext.onnx.data", tmp_path / "ext.onnx.data")
    model = onnx.load(str(external), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../ext.onnx.data"
    path = tmp_path / "inner" / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    expect_error(path, "outside the model's folder")


def test_external_length_beyond_the_file(external: Path, tmp_path: Path) -> None:
    for name in ("ext.onnx", "ext.onnx.data"):
        shutil.copy(external.parent / name, tmp_path / name)
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    expect_error(tmp_path / "ext.onnx", "declares .* bytes but only")


def test_declared_size_larger_than_data(legacy: Exported, tmp_path: Path) -> None:
    def inflate(model: onnx.ModelProto) -> None:
        tensor = model.graph.initializer[0]
        tensor.dims[0] = 10**12  # would be terabytes if trusted

    expect_error(damaged(legacy, tmp_path, inflate), "declares .* bytes but only")


def test_node_of_an_undeclared_domain(legacy: Exported, tmp_path: Path) -> None:
    """A declared unknown domain is read (tests/loaders/test_onnx_domains.py); a node whose
    domain the model never declares is a malformed file."""

    def use_domain(model: onnx.ModelProto) -> None:
        model.graph.node[0].domain = "com.example.secret"

    expect_error(damaged(legacy, tmp_path, use_domain), "domain 'com.example.secret'.*not import")


def test_opset_newer_than_onnx(legacy: Exported, tmp_path: Path) -> None:
    def bump(model: onnx.ModelProto) -> None:
        model.opset_import[0].version = 999

    expect_error(damaged(legacy, tmp_path, bump), "opset 999 is newer")


def test_dangling_input(legacy: Exported, tmp_path: Path) -> None:
    def dangle(model: onnx.ModelProto) -> None:
        model.graph.node[0].input[0] = "nobody_makes_this"

    expect_error(damaged(legacy, tmp_path, dangle), "dangling input")


def test_cycle(legacy: Exported, tmp_path: Path) -> None:
    def loop(model: onnx.ModelProto) -> None:
        first, last = model.graph.node[0], model.graph.node[len(model.graph.node) - 1]
        first.input[0] = last.output[0]

    expect_error(damaged(legacy, tmp_path, loop), "cycle")


def test_empty_file_with_suffix(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    expect_error(path, "not an ONNX model")


def test_malformed_conv_attributes_skip_the_layer(legacy: Exported, tmp_path: Path) -> None:
    def bad_pads(model: onnx.ModelProto) -> None:
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        pads = next(a for a in conv.attribute if a.name == "pads")
        del pads.ints[:]
        pads.ints.extend([1, 1, 1])

    ir = OnnxLoader().load(damaged(legacy, tmp_path, bad_pads), LoadOptions())
    assert len(ir.skipped) == 1 and "pads [1, 1, 1] must have 2 entries" in ir.skipped[0].reason
    assert len(ir.convs) == 2


def test_names_that_are_not_utf8(legacy: Exported, tmp_path: Path) -> None:
    data = bytearray(legacy.path.read_bytes())
    name = b"a.weight"  # an initializer name the exporter wrote
    at = data.find(name)
    assert at > 0
    data[at] = 0xC0  # not a valid UTF-8 start byte
    path = tmp_path / "bad.onnx"
    path.write_bytes(bytes(data))
    expect_error(path, "not valid UTF-8|not a valid ONNX file")
