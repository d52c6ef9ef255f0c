"""Small models written by real Keras 3 (torch backend), in every Keras file flavour.

Built once per test session (``build_keras_files``); the test modules wrap it in a fixture.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

_CACHE: dict[str, Any] = {}


@dataclass
class KerasCase:
    model: Any  # the live keras.Model that wrote the files
    files: dict[str, Path]  # flavour -> path ("keras", "h5", "weights", "legacy_weights")


def _functional_2d(keras):
    from keras import layers

    inp = keras.Input((17, 16, 3), name="img")
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c_relu")(inp)
    x = layers.Conv2D(
        8, (3, 2), dilation_rate=(2, 1), padding="valid", use_bias=False, name="c_dil"
    )(x)
    x = layers.BatchNormalization(epsilon=0.01, name="bn_dil")(x)
    d = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    d = layers.BatchNormalization(scale=False, name="bn_dw")(d)
    s = layers.SeparableConv2D(
        16, 3, depth_multiplier=2, padding="same", activation="tanh", name="sep"
    )(x)
    y = layers.Add(name="add")([d, s])
    y = layers.MaxPooling2D(2, name="pool")(y)
    t = layers.Conv2DTranspose(5, 4, strides=2, padding="same", name="ct_same")(y)
    u = layers.Conv2DTranspose(5, 3, strides=2, padding="valid", name="ct_valid")(y)
    u = layers.Cropping2D(((0, 1), (0, 1)), name="crop")(u)
    z = layers.Concatenate(name="cat")([t, u])
    z = layers.ZeroPadding2D(1, name="zpad")(z)
    z = layers.Conv2D(4, 3, groups=2, padding="same", name="grouped")(
        layers.Conv2D(4, 1, name="pre_group")(z)
    )
    z = layers.UpSampling2D(2, name="up")(z)
    z = layers.GlobalAveragePooling2D(name="gap")(z)
    out = layers.Dense(3, activation="softmax", name="head")(z)
    return keras.Model(inp, out, name="f2d")


def _sequential_1d(keras):
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((20, 2)),
            layers.Conv1D(3, 5, padding="causal", dilation_rate=2, name="causal"),
            layers.Conv1D(4, 3, strides=2, padding="same", name="strided"),
            layers.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name="dw1"),
            layers.SeparableConv1D(4, 3, dilation_rate=2, padding="same", name="sep1"),
            layers.AveragePooling1D(2, padding="same", name="avg"),
            layers.Conv1DTranspose(2, 3, strides=2, name="ct1"),
            layers.Conv1DTranspose(2, 3, strides=2, padding="same", name="ct1_same"),
            layers.Flatten(name="flat"),
            layers.Dropout(0.5, name="drop"),
            layers.Dense(2, name="dense"),
        ],
        name="seq1d",
    )


def _sequential_3d(keras):
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((6, 8, 8, 2)),
            layers.Conv3D(3, 3, strides=(1, 2, 2), padding="same", name="c3"),
            layers.Conv3DTranspose(2, 2, strides=2, name="ct3"),
        ],
        name="seq3d",
    )


def _channels_first(keras):
    from keras import layers

    inp = keras.Input((3, 9, 10), name="cf_in")
    x = layers.Conv2D(
        4, 3, strides=2, padding="same", data_format="channels_first", name="cf_conv"
    )(inp)
    x = layers.BatchNormalization(axis=1, name="cf_bn")(x)
    x = layers.DepthwiseConv2D(3, data_format="channels_first", name="cf_dw")(x)
    return keras.Model(inp, x, name="cf")


def _nested_dynamic(keras):
    from keras import layers

    inner = keras.Sequential(
        [
            keras.Input((None, None, 2)),
            layers.Conv2D(3, 3, padding="same", name="ic"),
            layers.BatchNormalization(name="ibn"),
        ],
        name="inner",
    )
    inp = keras.Input((None, None, 2), name="dyn")
    x = inner(inp)
    x = layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = layers.Conv2D(2, 3, strides=2, padding="same", name="after_lambda")(x)
    return keras.Model(inp, x, name="nested")


def build_keras_files(root: Path) -> dict[str, KerasCase]:
    """Build every fixture model once per session and save it in each flavour."""
    if "cases" in _CACHE:
        return _CACHE["cases"]
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    cases: dict[str, KerasCase] = {}
    builders = {
        "f2d": _functional_2d,
        "seq1d": _sequential_1d,
        "seq3d": _sequential_3d,
        "cf": _channels_first,
        "nested": _nested_dynamic,
    }
    for name, build in builders.items():
        model = build(keras)
        for w in model.weights:  # non-trivial BN statistics and biases
            if "moving_variance" in w.path or "gamma" in w.path:
                w.assign(keras.random.uniform(w.shape, 0.5, 2.0))
            elif "moving_mean" in w.path or "beta" in w.path or "bias" in w.path:
                w.assign(keras.random.normal(w.shape))
        files = {
            "keras": root / f"{name}.keras",
            "h5": root / f"{name}.h5",
            "weights": root / f"{name}.weights.h5",
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(files["keras"])
            model.save(files["h5"])
        model.save_weights(files["weights"])
        files["legacy_weights"] = root / f"{name}_legacy_weights.h5"
        with h5py.File(files["legacy_weights"], "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        cases[name] = KerasCase(model, files)
    _CACHE["cases"] = cases
    return cases
