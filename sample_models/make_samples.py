"""Regenerate the bundled sample models with the real tools (``make samples``).

Every file here is written by the framework that owns its format: torch.onnx.export,
torch.save, torch.jit.save, torch.export.save, and Keras 3 (KERAS_BACKEND=torch). Seeds are
fixed, so re-running gives the same weights. Run from anywhere:
``python sample_models/make_samples.py [OUTPUT_DIR]``.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from tiny_nets import CircularNet, ResNetTiny, Signal1d, randomise_batchnorm  # noqa: E402

SEED = 20190101


def _seeded(cls: type[torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model = cls()
    randomise_batchnorm(model, torch.Generator().manual_seed(SEED))
    return model.eval()


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, dest: Path) -> None:
    # The TorchScript-based exporter keeps eval-mode BatchNorm as its own node
    # (training=PRESERVE stops it folding BN into the conv), so --fold-bn has work to do.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(dest),
            input_names=["input"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
        )


def make_torch_samples(out: Path) -> list[Path]:
    written = []
    resnet = _seeded(ResNetTiny)
    x = torch.zeros(1, 3, 32, 32)
    _export_onnx(resnet, x, out / "resnet_tiny.onnx")
    torch.save(resnet.state_dict(), out / "resnet_tiny.pt")
    torch.jit.save(torch.jit.script(resnet), str(out / "resnet_tiny.ts.pt"))
    torch.export.save(torch.export.export(resnet, (x,)), str(out / "resnet_tiny.pt2"))
    written += [out / n for n in ("resnet_tiny.onnx", "resnet_tiny.pt", "resnet_tiny.ts.pt", "resnet_tiny.pt2")]

    circular = _seeded(CircularNet)
    torch.jit.save(torch.jit.script(circular), str(out / "circular_net.ts.pt"))
    written.append(out / "circular_net.ts.pt")

    signal = _seeded(Signal1d)
    _export_onnx(signal, torch.zeros(1, 2, 64), out / "signal_1d.onnx")
    written.append(out / "signal_1d.onnx")
    return written


def _keras_model():  # type: ignore[no-untyped-def]
    import keras
    from keras import layers

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 3, strides=2, padding="valid", name="conv2_stride2")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=1, name="depthwise")(x)
    x = layers.SeparableConv2D(16, 3, padding="same", name="separable")(x)
    x = layers.Conv2D(16, 3, padding="same", dilation_rate=2, name="dilated")(x)
    x = layers.Conv2DTranspose(8, 2, strides=2, name="upsample")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, name="head")(x)
    model = keras.Model(inputs, outputs, name="keras_cnn")
    # Non-trivial BatchNorm statistics, as after training.
    import numpy as np

    rng = np.random.default_rng(SEED)
    bn = model.get_layer("bn1")
    bn.set_weights([
        (0.5 + rng.random(8)).astype("float32"),
        (0.1 * rng.standard_normal(8)).astype("float32"),
        (0.1 * rng.standard_normal(8)).astype("float32"),
        (0.25 + rng.random(8)).astype("float32"),
    ])
    return model


def make_keras_samples(out: Path) -> list[Path]:
    model = _keras_model()
    model.save(out / "keras_cnn.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # keras warns that .h5 is a legacy format: that is the point
        model.save(out / "keras_cnn.h5")
    return [out / "keras_cnn.keras", out / "keras_cnn.h5"]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else HERE
    out.mkdir(parents=True, exist_ok=True)
    written = make_torch_samples(out) + make_keras_samples(out)
    for path in written:
        size = path.stat().st_size
        assert size < 1_000_000, f"{path} is {size} bytes: samples must stay well under 1 MB"
        print(f"wrote {path} ({size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
