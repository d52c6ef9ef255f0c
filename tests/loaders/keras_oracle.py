"""Independent checks for the Keras tests: run an IR conv with torch.nn.functional, and compare
it with the Keras layer that wrote it (Keras 3 on the torch backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.keras.reader import KerasLoader

CONV_CLASSES = ("Conv", "DepthwiseConv", "SeparableConv")

_CONV = (F.conv1d, F.conv2d, F.conv3d)
_CONVT = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


def run_ir_conv(layer: ConvLayer, x: np.ndarray) -> np.ndarray:
    """The IR layer applied to ``x`` (N, C, *spatial), float64, bias included.

    Forward: explicit zero pads, then an unpadded conv. Transposed: the full transposed conv,
    zero-extended, then the window [before, before + output size) per axis.
    """
    nd = layer.spatial_dims
    t = torch.from_numpy(np.asarray(x, np.float64))
    k = torch.from_numpy(np.asarray(layer.kernel, np.float64))
    if not layer.transposed:
        pads = [p for pair in reversed(layer.padding) for p in pair]
        y = _CONV[nd - 1](
            F.pad(t, pads), k, stride=layer.stride, dilation=layer.dilation, groups=layer.groups
        )
    else:
        full = _CONVT[nd - 1](
            t, k, stride=layer.stride, dilation=layer.dilation, groups=layer.groups
        )
        out = layer.output_size(tuple(x.shape[2:]))
        assert out is not None
        extend = []
        for ax in reversed(range(nd)):
            extend += [0, max(0, layer.padding[ax][0] + out[ax] - full.shape[2 + ax])]
        full = F.pad(full, extend)
        index = [slice(None), slice(None)] + [
            slice(layer.padding[ax][0], layer.padding[ax][0] + out[ax]) for ax in range(nd)
        ]
        y = full[tuple(index)]
    if layer.bias is not None:
        y = y + torch.from_numpy(np.asarray(layer.bias, np.float64)).reshape(1, -1, *([1] * nd))
    return y.numpy()


def to_channels_first(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 1)


def to_channels_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1)


def load(path: Path, **shapes: tuple[int, ...]) -> ModelIR:
    return KerasLoader().load(path, LoadOptions(input_shapes=shapes))


def keras_conv_layers(model):
    """Every conv-like layer of a model, nested models included, with its IR base name."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out += [(f"{layer.name}/{n}", lay) for n, lay in keras_conv_layers(layer)]
        elif type(layer).__name__.startswith(CONV_CLASSES):
            out.append((layer.name, layer))
    return out


def ir_ops(ir: ModelIR, name: str) -> list[ConvLayer]:
    found = [c for c in ir.convs if c.name == name or c.name.startswith(name + "/")]
    return sorted(found, key=lambda c: c.kind != "separable-depthwise")


def check_against_keras(
    ir: ModelIR, model, rng: np.random.Generator, exclude: tuple[str, ...] = ()
) -> int:
    """Each IR conv (chain) of known input size reproduces its Keras layer's output on random
    input; returns how many were checked."""
    import keras

    checked = 0
    for name, kl in keras_conv_layers(model):
        if name in exclude:
            continue
        ops = ir_ops(ir, name)
        assert ops, f"{name} missing from the IR"
        first = ops[0]
        if first.input_size is None:
            continue
        cf = getattr(kl, "data_format", "channels_last") == "channels_first"
        x = rng.standard_normal((2, first.in_channels, *first.input_size)).astype(np.float32)
        want = keras.ops.convert_to_numpy(kl(x if cf else to_channels_last(x)))
        got = x.astype(np.float64)
        for op in ops:
            got = run_ir_conv(op, got)
        got = keras.ops.convert_to_numpy(
            kl.activation(
                keras.ops.convert_to_tensor(
                    (got if cf else to_channels_last(got)).astype(np.float32)
                )
            )
        )
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
        checked += 1
    return checked
