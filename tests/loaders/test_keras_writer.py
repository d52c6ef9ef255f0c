"""Writing new kernels into Keras files: Keras itself loads the result, only kernels change."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from keras_fixture_models import KerasCase, build_keras_files
from keras_oracle import check_against_keras, load

from convaudit.errors import ModelFileError
from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders.keras.reader import KerasLoader

pytestmark = pytest.mark.keras
SIZES = {"nested": {"dyn": (1, 12, 10, 2)}}


@pytest.fixture(scope="session")
def cases(tmp_path_factory) -> dict[str, KerasCase]:
    pytest.importorskip("keras")
    return build_keras_files(tmp_path_factory.mktemp("keras_models_w"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_kernels(ir: ModelIR, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for layer in ir.layers:
        current = layer.kernel if isinstance(layer, ConvLayer) else layer.weight
        out[layer.name] = rng.standard_normal(current.shape).astype(current.dtype)
    return out


def datasets(h5: h5py.File) -> dict[str, tuple[np.ndarray, dict]]:
    found: dict[str, tuple[np.ndarray, dict]] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found["/" + name] = (obj[()], dict(obj.attrs))

    h5.visititems(visit)
    return found


def open_weights(path: Path) -> h5py.File:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r")
    return h5py.File(path, "r")


def assert_only_kernels_changed(src: Path, dest: Path, ir: ModelIR, updates) -> None:
    changed = {ir.layer(n).provenance.locator for n in updates}  # type: ignore[union-attr]
    with open_weights(src) as a, open_weights(dest) as b:
        old, new = datasets(a), datasets(b)
        assert old.keys() == new.keys()
        assert dict(a.attrs).keys() == dict(b.attrs).keys()
        for key, (value, attrs) in old.items():
            assert new[key][0].dtype == value.dtype and new[key][1].keys() == attrs.keys()
            if key not in changed:
                assert new[key][0].tobytes() == value.tobytes(), key
            else:
                assert new[key][0].tobytes() != value.tobytes(), key
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as za, zipfile.ZipFile(dest) as zb:
            assert [i.filename for i in za.infolist()] == [i.filename for i in zb.infolist()]
            for info in za.infolist():
                if info.filename != "model.weights.h5":
                    assert za.read(info) == zb.read(info.filename)


def reload_in_keras(case: KerasCase, flavour: str, dest: Path):
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    if flavour in ("keras", "h5"):
        return keras.saving.load_model(dest, compile=False, safe_mode=False)
    # a fresh copy of the model (our own fixture, so its Lambda may be deserialised)
    model = keras.saving.load_model(case.files["keras"], compile=False, safe_mode=False)
    if flavour == "weights":
        model.load_weights(dest)
    else:
        with h5py.File(dest, "r") as f:
            legacy_h5_format.load_weights_from_hdf5_group(f, model)
    return model


@pytest.mark.parametrize("flavour", ["keras", "h5", "weights", "legacy_weights"])
@pytest.mark.parametrize("case", ["f2d", "seq1d", "nested"])
def test_round_trip(cases, case, flavour, tmp_path):
    src = cases[case].files[flavour]
    before = sha256(src)
    ir = load(src)
    updates = new_kernels(ir)
    dest = tmp_path / src.name
    KerasLoader().write_kernels(ir, dest, updates)
    assert sha256(src) == before
    assert_only_kernels_changed(src, dest, ir, updates)
    reread = load(dest)
    for layer in reread.layers:
        got = layer.kernel if isinstance(layer, ConvLayer) else layer.weight
        np.testing.assert_array_equal(got, updates[layer.name])
    model = reload_in_keras(cases[case], flavour, dest)
    # Keras computes with the written kernels exactly what the IR (with geometry from the
    # config-bearing file) computes with the new kernels: the layout went back right.
    geometry = load(cases[case].files["keras"], **SIZES.get(case, {}))
    shaped = ModelIR(
        geometry.path,
        "keras",
        tuple(
            ConvLayer(**{**c.__dict__, "kernel": updates[c.name]})
            if isinstance(c, ConvLayer)
            else c
            for c in geometry.layers
        ),
    )
    # A Keras 3 legacy weights-only file stores no class: its depthwise layers were read as convs.
    exclude = ("dw", "dw1") if flavour == "legacy_weights" else ()
    checked = check_against_keras(shaped, model, np.random.default_rng(5), exclude)
    total = {"f2d": 8, "seq1d": 6, "nested": 1}[case]
    assert checked == total - sum(c.name in exclude for c in geometry.convs)


def test_real_fer_model_round_trip(shared_models, tmp_path):
    src = shared_models / "fer_emotion.hdf5"
    before = sha256(src)
    ir = load(src)
    updates = {c.name: np.asarray(c.kernel * 0.5, c.kernel.dtype) for c in ir.convs}
    dest = tmp_path / "fer.hdf5"
    KerasLoader().write_kernels(ir, dest, updates)
    assert sha256(src) == before
    assert_only_kernels_changed(src, dest, ir, updates)
    with h5py.File(src, "r") as a, h5py.File(dest, "r") as b:
        assert a.attrs["model_config"] == b.attrs["model_config"]
        opt = datasets(a["optimizer_weights"])
        assert all(
            v[0].tobytes() == b["optimizer_weights"][k.lstrip("/")][()].tobytes()
            for k, v in opt.items()
        )
    for conv in load(dest).convs:
        np.testing.assert_array_equal(conv.kernel, updates[conv.name])


def test_writer_rejects_bad_updates(cases, tmp_path):
    ir = load(cases["f2d"].files["h5"])
    with pytest.raises(ModelFileError, match="no layer named"):
        KerasLoader().write_kernels(ir, tmp_path / "a.h5", {"nope": np.zeros((1, 1, 1, 1))})
    with pytest.raises(ModelFileError, match="shape"):
        KerasLoader().write_kernels(ir, tmp_path / "b.h5", {"c_relu": np.zeros((1, 1, 1, 1))})
