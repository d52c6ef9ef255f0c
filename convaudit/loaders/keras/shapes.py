"""Propagate tensor shapes through a flattened Keras model, the way Keras computes them.

Shapes include the batch axis (None when free). Only common layers have a rule; after a layer
without one the shape is unknown, unless Keras 3 recorded it in the config (``recorded``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from convaudit.loaders.keras.config import KLayer, KModel, Shape

Rule = Callable[[KLayer, list[Shape]], Shape | None]

ELEMENTWISE = frozenset(
    {
        "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU",
        "BatchNormalization", "LayerNormalization", "Dropout", "SpatialDropout1D",
        "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "GaussianNoise",
        "AlphaDropout", "ActivityRegularization", "Rescaling", "Normalization", "Masking",
        "Identity", "UnitNormalization",
    }
)  # fmt: skip
MERGE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})


def nd_of(class_name: str) -> int:
    """Spatial rank from a class name such as Conv2DTranspose or MaxPooling3D (0 if none)."""
    for nd in (1, 2, 3):
        if f"{nd}D" in class_name:
            return nd
    return 0


def channels_first(cfg: Mapping[str, Any]) -> bool:
    return cfg.get("data_format") == "channels_first"


def spatial(shape: Shape, cfg: Mapping[str, Any], nd: int) -> Shape:
    return tuple(shape[2 : 2 + nd]) if channels_first(cfg) else tuple(shape[1 : 1 + nd])


def _with_spatial(shape: Shape, cfg: Mapping[str, Any], sp: Shape, channels: int | None) -> Shape:
    if channels_first(cfg):
        return (shape[0], channels, *sp)
    return (shape[0], *sp, channels)


def _channels(shape: Shape, cfg: Mapping[str, Any]) -> int | None:
    return shape[1] if channels_first(cfg) else shape[-1]


def tup(value: Any, nd: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * nd
    return tuple(int(v) for v in value)


def conv_length(n: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    """Output length of a Keras conv / pool along one axis (keras conv_output_length)."""
    if n is None:
        return None
    dk = (k - 1) * d + 1
    if padding in ("same", "causal"):
        return math.ceil(n / s)
    if padding == "full":
        return (n + dk - 2) // s + 1
    return max(0, math.ceil((n - dk + 1) / s))


def deconv_length(
    n: int | None, k: int, s: int, d: int, padding: str, output_padding: int | None
) -> int | None:
    """Output length of a Keras transposed conv along one axis (keras deconv_output_length)."""
    if n is None:
        return None
    dk = (k - 1) * d + 1
    if output_padding is None:
        if padding == "valid":
            return n * s + max(dk - s, 0)
        return n * s
    pad = dk // 2 if padding == "same" else 0
    return (n - 1) * s + dk - 2 * pad + output_padding


def _conv(layer: KLayer, ins: list[Shape]) -> Shape | None:
    cfg, nd, x = layer.config, nd_of(layer.class_name), ins[0]
    k, s, d = (
        tup(cfg["kernel_size"], nd),
        tup(cfg.get("strides", 1), nd),
        tup(cfg.get("dilation_rate", 1), nd),
    )
    pad = str(cfg.get("padding", "valid")).lower()
    sp = spatial(x, cfg, nd)
    if "Transpose" in layer.class_name:
        ops = cfg.get("output_padding")
        opt = tup(ops, nd) if ops is not None else (None,) * nd
        out = tuple(
            deconv_length(n, kk, ss, dd, pad, o)
            for n, kk, ss, dd, o in zip(sp, k, s, d, opt, strict=True)
        )
    else:
        out = tuple(
            conv_length(n, kk, ss, dd, pad) for n, kk, ss, dd in zip(sp, k, s, d, strict=True)
        )
    if "Depthwise" in layer.class_name:
        c = _channels(x, cfg)
        channels = None if c is None else c * int(cfg.get("depth_multiplier", 1))
    else:
        channels = int(cfg["filters"])
    return _with_spatial(x, cfg, out, channels)


def _pool(layer: KLayer, ins: list[Shape]) -> Shape | None:
    cfg, nd, x = layer.config, nd_of(layer.class_name), ins[0]
    k = tup(cfg.get("pool_size", 2), nd)
    s = tup(cfg.get("strides") or k, nd)
    pad = str(cfg.get("padding", "valid")).lower()
    out = tuple(
        conv_length(n, kk, ss, 1, pad) for n, kk, ss in zip(spatial(x, cfg, nd), k, s, strict=True)
    )
    return _with_spatial(x, cfg, out, _channels(x, cfg))


def _global_pool(layer: KLayer, ins: list[Shape]) -> Shape | None:
    cfg, nd, x = layer.config, nd_of(layer.class_name), ins[0]
    if cfg.get("keepdims"):
        return _with_spatial(x, cfg, (1,) * nd, _channels(x, cfg))
    return (x[0], _channels(x, cfg))


def _pairs(value: Any, nd: int) -> list[tuple[int, int]]:
    if isinstance(value, int):
        return [(value, value)] * nd
    out = []
    for v in value:
        out.append((int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1])))
    return out


def _resize_axes(
    layer: KLayer, ins: list[Shape], fn: Callable[[int, int, int], int], key: str, default: Any
) -> Shape:
    cfg, nd, x = layer.config, nd_of(layer.class_name), ins[0]
    value = cfg.get(key, default)
    per = _pairs(value, nd) if key != "size" else [(v, 0) for v in tup(value, nd)]
    out = tuple(
        None if n is None else fn(n, *p) for n, p in zip(spatial(x, cfg, nd), per, strict=True)
    )
    return _with_spatial(x, cfg, out, _channels(x, cfg))


def _flatten(layer: KLayer, ins: list[Shape]) -> Shape | None:
    rest = ins[0][1:]
    return (ins[0][0], None if any(v is None for v in rest) else math.prod(rest))  # type: ignore[arg-type]


def _reshape(layer: KLayer, ins: list[Shape]) -> Shape | None:
    target = [int(v) for v in layer.config["target_shape"]]
    if -1 in target:
        rest = ins[0][1:]
        if any(v is None for v in rest):
            return None
        known = math.prod(v for v in target if v != -1)
        target[target.index(-1)] = math.prod(rest) // known  # type: ignore[arg-type]
    return (ins[0][0], *target)


def _concat(layer: KLayer, ins: list[Shape]) -> Shape | None:
    axis = int(layer.config.get("axis", -1))
    rank = len(ins[0])
    axis = axis % rank
    sizes = [s[axis] for s in ins]
    total = None if any(v is None for v in sizes) else sum(sizes)  # type: ignore[arg-type]
    return (*ins[0][:axis], total, *ins[0][axis + 1 :])


def _permute(layer: KLayer, ins: list[Shape]) -> Shape | None:
    dims = [int(v) for v in layer.config["dims"]]
    return (ins[0][0], *(ins[0][d] for d in dims))


def _dense(layer: KLayer, ins: list[Shape]) -> Shape | None:
    return (*ins[0][:-1], int(layer.config["units"]))


def _resizing(layer: KLayer, ins: list[Shape]) -> Shape | None:
    cfg = layer.config
    return _with_spatial(
        ins[0], cfg, (int(cfg["height"]), int(cfg["width"])), _channels(ins[0], cfg)
    )


def rule_for(class_name: str) -> Rule | None:
    if class_name in ELEMENTWISE or class_name in MERGE:
        return lambda layer, ins: ins[0]
    if class_name.startswith(("Conv", "DepthwiseConv", "SeparableConv")):
        return _conv
    if class_name.startswith(("MaxPooling", "AveragePooling", "MaxPool", "AvgPool")):
        return _pool
    if class_name.startswith(
        ("GlobalAveragePooling", "GlobalMaxPooling", "GlobalMaxPool", "GlobalAvgPool")
    ):
        return _global_pool
    if class_name.startswith("ZeroPadding"):
        return lambda layer, ins: _resize_axes(layer, ins, lambda n, a, b: n + a + b, "padding", 1)
    if class_name.startswith("Cropping"):
        return lambda layer, ins: _resize_axes(layer, ins, lambda n, a, b: n - a - b, "cropping", 0)
    if class_name.startswith("UpSampling"):
        return lambda layer, ins: _resize_axes(layer, ins, lambda n, f, _: n * f, "size", 2)
    table: dict[str, Rule] = {
        "Flatten": _flatten,
        "Reshape": _reshape,
        "Concatenate": _concat,
        "Permute": _permute,
        "Dense": _dense,
        "Resizing": _resizing,
    }
    return table.get(class_name)


def propagate(model: KModel, inputs: Mapping[str, Shape]) -> dict[str, Shape]:
    """Shape of every tensor that can be known; ``inputs`` gives the model inputs' batch shapes."""
    shapes: dict[str, Shape] = dict(inputs)
    for call in model.calls:
        layer = model.layers[call.layer]
        ins = [shapes.get(t) for t in call.inputs]
        out: Shape | None = None
        rule = rule_for(layer.class_name)
        if rule is not None and ins and all(s is not None for s in ins):
            try:
                out = rule(layer, ins)  # type: ignore[arg-type]
            except (KeyError, ValueError, TypeError, IndexError, ZeroDivisionError):
                out = None
        for tensor in call.outputs:
            recorded = model.recorded.get(tensor)
            # Keras 3 wrote the shape it saw; prefer it when ours is unknown or partial.
            if out is None or (recorded is not None and None in out and None not in recorded[1:]):
                if recorded is not None:
                    shapes[tensor] = recorded
                continue
            shapes[tensor] = out
    return shapes
