"""Bad Keras input: one precise ModelFileError, never a traceback or a huge allocation."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from keras_fixture_models import KerasCase, build_keras_files
from keras_oracle import load

from convaudit.errors import ModelFileError
from convaudit.loaders.keras.reader import KerasLoader

pytestmark = pytest.mark.keras


@pytest.fixture(scope="session")
def cases(tmp_path_factory) -> dict[str, KerasCase]:
    pytest.importorskip("keras")
    return build_keras_files(tmp_path_factory.mktemp("keras_models_e"))


def sniff(path: Path) -> bool:
    return KerasLoader.sniff(path, path.read_bytes()[:4096])


def test_sniff_claims_keras_files_only(cases, tmp_path):
    for flavour, path in cases["f2d"].files.items():
        assert sniff(path), flavour
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("archive/data.pkl", b"x")
    assert not sniff(other)
    text = tmp_path / "model.h5"
    text.write_text("not a model")
    assert not sniff(text)  # the suffix alone claims nothing


def test_hdf5_without_keras_structure(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros((3, 3, 3, 3), np.float32)
    assert sniff(path)
    with pytest.raises(ModelFileError, match="HDF5 file without Keras structure"):
        load(path)


@pytest.mark.parametrize("flavour", ["h5", "keras", "weights"])
def test_truncated_file(cases, flavour, tmp_path):
    data = cases["f2d"].files[flavour].read_bytes()
    path = tmp_path / cases["f2d"].files[flavour].name
    path.write_bytes(data[: len(data) * 2 // 3])
    assert sniff(path)
    with pytest.raises(ModelFileError, match=r"corrupt|truncated"):
        load(path)


def test_corrupt_zip(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"PK\x03\x04" + b"\x00garbage" * 100)
    assert sniff(path)
    with pytest.raises(ModelFileError, match=r"corrupt or truncated archive"):
        load(path)


def test_zip_bomb(cases, tmp_path):
    path = tmp_path / "bomb.keras"
    shutil.copyfile(cases["f2d"].files["keras"], path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("assets/bomb.bin", bytes(8 * 1024**2))  # 8 MiB of zeros -> ~8 KiB
    with pytest.raises(ModelFileError, match="zip bomb"):
        load(path)


def test_keras_zip_without_weights(cases, tmp_path):
    path = tmp_path / "noweights.keras"
    with zipfile.ZipFile(cases["f2d"].files["keras"]) as zin, zipfile.ZipFile(path, "w") as zout:
        zout.writestr("config.json", zin.read("config.json"))
    with pytest.raises(ModelFileError, match=r"model\.weights\.h5"):
        load(path)


def edited_copy(src: Path, dest: Path, edit: Callable[[h5py.File], object]) -> Path:
    """A copy of a real Keras HDF5 file with one thing broken by ``edit``."""
    shutil.copyfile(src, dest)
    with h5py.File(dest, "r+") as f:
        edit(f)
    return dest


def _huge_kernel(f: h5py.File) -> None:
    del f["model_weights/c_relu/c_relu/kernel"]
    f.create_dataset("model_weights/c_relu/c_relu/kernel", shape=(3, 3, 3, 2**29), dtype="f4")


def test_dataset_declaring_more_than_the_file_holds(cases, tmp_path):
    """A kernel declared as 64 GiB (never allocated in the file) is refused before reading."""
    path = edited_copy(cases["f2d"].files["h5"], tmp_path / "huge.h5", _huge_kernel)
    assert path.stat().st_size < 1024**2
    with pytest.raises(ModelFileError, match="declares"):
        load(path)


def test_weight_names_pointing_nowhere(cases, tmp_path):
    path = edited_copy(
        cases["f2d"].files["h5"],
        tmp_path / "dangling.h5",
        lambda f: f.pop("model_weights/head/head/kernel"),
    )
    with pytest.raises(ModelFileError, match="missing"):
        load(path)


def test_malformed_config(cases, tmp_path):
    for bad in ('{"class_name": "Functional", "config": {"layers": 3}}', "{not json", "[]"):
        path = edited_copy(
            cases["f2d"].files["h5"],
            tmp_path / "badcfg.h5",
            lambda f, b=bad: f.attrs.__setitem__("model_config", b),
        )
        with pytest.raises(ModelFileError, match="config"):
            load(path)


def _rename_class(f: h5py.File) -> None:
    config = json.loads(f.attrs["model_config"])
    for layer in config["config"]["layers"]:
        if layer["name"] == "grouped":
            layer["class_name"] = "MyFancyConv"
    f.attrs["model_config"] = json.dumps(config)


def test_unknown_layer_class_is_skipped_and_unknown_in_the_graph(cases, tmp_path):
    path = edited_copy(cases["f2d"].files["h5"], tmp_path / "custom.h5", _rename_class)
    ir = load(path)
    assert [(s.name, s.op) for s in ir.skipped] == [("grouped", "MyFancyConv")]
    assert "grouped" not in {c.name for c in ir.convs}
    node = next(n for n in ir.graph.nodes if n.name == "grouped")  # type: ignore[union-attr]
    assert node.kind == "unknown" and "MyFancyConv" in node.attrs["reason"]
    assert load(path).convs[-1].input_size == (6, 8)  # shapes still propagate before it


def test_quantized_dense_is_skipped_not_misread(cases, tmp_path):
    import warnings

    import keras

    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, name="qc"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="qd"),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.quantize("int8")  # Dense only: the Conv2D keeps float32 weights
    path = tmp_path / "q.keras"
    model.save(path)
    ir = load(path)
    assert [c.name for c in ir.convs] == ["qc"] and not ir.denses
    assert [(s.name, s.op) for s in ir.skipped] == [("qd", "Dense")]
    assert "quantised" in ir.skipped[0].reason


def test_hdf5_with_unrelated_groups_is_not_keras(tmp_path):
    path = tmp_path / "data.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("experiment/run1")["images"] = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(ModelFileError, match="without Keras structure"):
        load(path)
