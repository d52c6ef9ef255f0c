"""The Keras model as an ir.Graph: one or more GraphNodes per layer call.

Tensor names are the KModel's (a layer's output is named after the layer). The model inputs
(InputLayer outputs) are ``Graph.inputs``; InputLayers themselves produce no node.

Emitted kinds and attrs:
- ``conv`` / ``dense``: ``layer`` = the IR layer name. SeparableConv is two chained conv nodes
  (``<name>/depthwise`` then ``<name>/pointwise``, the latter writing the layer's tensor).
- the ``activation`` argument of a conv / dense layer is its own node after it: the linear
  part writes ``<tensor>/linear`` and the activation node writes the layer's tensor.
- ``activation``: ``fn`` (relu, relu6, leaky_relu, prelu, elu, selu, sigmoid, hard_sigmoid,
  tanh, gelu, silu, hard_swish, softplus, softsign, mish, softmax, ...), ``alpha`` for
  leaky_relu / elu / hard_sigmoid, ``slope`` (max |alpha|) for PReLU, ``max_value`` for a
  clipped ReLU. ThresholdedReLU and ReLU with a threshold are discontinuous: ``unknown``.
- ``batchnorm``: ``scale`` (gamma/sqrt(var+eps)) always, plus ``folded_into`` = the conv it
  directly follows when the loader attached it.
- ``maxpool`` / ``avgpool``: ``kernel``, ``stride``, ``dilation``, ``padding`` ((before, after)
  per axis; for "same" pools of unknown size a conservative (0, k-1)), ``input_size``,
  ``count_include_pad`` = False (Keras averages over the valid cells only).
- ``global_avgpool``: ``input_size``; ``global_maxpool``.
- ``resize_nearest``: ``factor`` (UpSampling with nearest interpolation).
- ``mul_const``: ``value`` (Rescaling's scale).
- ``add`` / ``sub`` / ``concat``; ``identity`` for Flatten, Reshape, Permute, Dropout family,
  ZeroPadding, Cropping, linear Activation; everything else ``unknown`` (with ``reason``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from convaudit.ir import Graph, GraphNode, same_padding
from convaudit.loaders.keras.config import KCall, KLayer, KModel, Shape
from convaudit.loaders.keras.shapes import nd_of, spatial, tup

_ACTIVATIONS = {
    "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
    "elu": "elu", "selu": "selu", "softplus": "softplus", "softsign": "softsign",
    "swish": "silu", "silu": "silu", "gelu": "gelu", "hard_sigmoid": "hard_sigmoid",
    "hard_silu": "hard_swish", "hard_swish": "hard_swish", "leaky_relu": "leaky_relu",
    "mish": "mish", "log_softmax": "log_softmax", "celu": "celu", "exponential": "exp",
}  # fmt: skip
# Keras 3 function defaults (keras.activations)
_DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0, "hard_sigmoid": 1.0 / 6.0}
_IDENTITY_PREFIXES = (
    "Flatten", "Reshape", "Permute", "Dropout", "SpatialDropout", "GaussianDropout",
    "GaussianNoise", "AlphaDropout", "ZeroPadding", "Cropping", "ActivityRegularization",
    "Identity",
)  # fmt: skip


def activation_attrs(value: Any) -> tuple[str, dict[str, Any]]:
    """(kind, attrs) for a Keras ``activation`` argument."""
    if isinstance(value, Mapping):  # Keras 3 may serialise a built-in as {"config": "relu"}
        value = (
            value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
        )
    name = str(value or "linear").lower()
    if name == "linear":
        return "identity", {}
    fn = _ACTIVATIONS.get(name)
    if fn is None:
        return "unknown", {"reason": f"activation {name!r}"}
    attrs: dict[str, Any] = {"fn": fn}
    if fn in _DEFAULT_ALPHA:
        attrs["alpha"] = _DEFAULT_ALPHA[fn]
    return "activation", attrs


def _relu_layer(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if float(cfg.get("threshold", 0.0) or 0.0) != 0.0:
        return "unknown", {"reason": "ReLU with a threshold is discontinuous"}
    slope = float(cfg.get("negative_slope", 0.0) or 0.0)
    attrs: dict[str, Any] = {"fn": "leaky_relu", "alpha": slope} if slope else {"fn": "relu"}
    if cfg.get("max_value") is not None:
        attrs["max_value"] = float(cfg["max_value"])
    return "activation", attrs


def _pool_attrs(layer: KLayer, shape: Shape | None) -> dict[str, Any]:
    cfg, nd = layer.config, nd_of(layer.class_name)
    k = tup(cfg.get("pool_size", 2), nd)
    s = tup(cfg.get("strides") or k, nd)
    size = spatial(shape, cfg, nd) if shape is not None else None
    known = size is not None and None not in size
    if str(cfg.get("padding", "valid")).lower() != "same":
        pads = ((0, 0),) * nd
    elif known:
        pads = same_padding(size, k, s, (1,) * nd)  # type: ignore[arg-type]
    else:
        pads = tuple((0, kk - 1) for kk in k)
    return {
        "kernel": k,
        "stride": s,
        "dilation": (1,) * nd,
        "padding": pads,
        "input_size": size if known else None,
        "count_include_pad": False,
    }


class GraphBuilder:
    """Collects nodes; ``conv_names`` maps a Keras layer to its IR conv/dense layer names."""

    def __init__(
        self,
        model: KModel,
        shapes: Mapping[str, Shape],
        conv_names: Mapping[str, list[str]],
        bn_scales: Mapping[str, np.ndarray],
        bn_folded: Mapping[str, str],
        prelu_slopes: Mapping[str, np.ndarray],
    ) -> None:
        self.model, self.shapes = model, shapes
        self.conv_names, self.bn_scales, self.bn_folded = conv_names, bn_scales, bn_folded
        self.prelu = prelu_slopes
        self.nodes: list[GraphNode] = []

    def add(
        self, name: str, kind: str, op: str, ins: tuple[str, ...], out: str, **attrs: Any
    ) -> None:
        self.nodes.append(GraphNode(name, kind, op, ins, (out,), attrs))

    def call(self, call: KCall) -> None:
        layer = self.model.layers[call.layer]
        cls, cfg = layer.class_name, layer.config
        base, ins = call.outputs[0], call.inputs
        layers = self.conv_names.get(layer.name)
        if layers:  # conv-like or dense with weights we read
            act_kind, act = activation_attrs(cfg.get("activation"))
            linear_out = base if act_kind == "identity" else f"{base}/linear"
            current = ins
            for i, ir_name in enumerate(layers):
                out = linear_out if i == len(layers) - 1 else f"{base}/{ir_name.rsplit('/', 1)[-1]}"
                kind = "dense" if cls == "Dense" else "conv"
                self.add(
                    base if len(layers) == 1 else f"{base}/{ir_name.rsplit('/', 1)[-1]}",
                    kind,
                    cls,
                    current,
                    out,
                    layer=ir_name,
                )
                current = (out,)
            if act_kind != "identity":
                self.add(f"{base}/activation", act_kind, f"{cls}.activation", current, base, **act)
            for extra in call.outputs[1:]:
                self.add(extra, "unknown", cls, ins, extra, reason="extra output")
            return
        kind, attrs = self.classify(layer, ins)
        for out in call.outputs:
            self.add(out, kind, cls, ins, out, **attrs)

    def classify(self, layer: KLayer, ins: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        cls, cfg = layer.class_name, layer.config
        shape = self.shapes.get(ins[0]) if ins else None
        if cls == "BatchNormalization" and layer.name in self.bn_scales:
            attrs: dict[str, Any] = {"scale": self.bn_scales[layer.name]}
            if layer.name in self.bn_folded:
                attrs["folded_into"] = self.bn_folded[layer.name]
            return "batchnorm", attrs
        if cls == "Activation":
            return activation_attrs(cfg.get("activation"))
        if cls == "ReLU":
            return _relu_layer(cfg)
        if cls == "LeakyReLU":
            return "activation", {
                "fn": "leaky_relu",
                "alpha": float(cfg.get("negative_slope", cfg.get("alpha", 0.3))),
            }
        if cls == "ELU":
            return "activation", {"fn": "elu", "alpha": float(cfg.get("alpha", 1.0))}
        if cls == "Softmax":
            return "activation", {"fn": "softmax"}
        if cls == "PReLU" and layer.name in self.prelu:
            return "activation", {
                "fn": "prelu",
                "slope": float(np.max(np.abs(self.prelu[layer.name]))),
            }
        if cls.startswith(("MaxPooling", "MaxPool")) and nd_of(cls):
            return "maxpool", _pool_attrs(layer, shape)
        if cls.startswith(("AveragePooling", "AvgPool")) and nd_of(cls):
            return "avgpool", _pool_attrs(layer, shape)
        if cls.startswith(("GlobalAveragePooling", "GlobalAvgPool")):
            size = spatial(shape, cfg, nd_of(cls)) if shape is not None else None
            return "global_avgpool", {"input_size": size if size and None not in size else None}
        if cls.startswith(("GlobalMaxPooling", "GlobalMaxPool")):
            return "global_maxpool", {}
        if cls == "Add":
            return "add", {}
        if cls == "Subtract":
            return "sub", {}
        if cls == "Concatenate":
            return "concat", {"axis": int(cfg.get("axis", -1))}
        if cls.startswith("UpSampling") and str(cfg.get("interpolation", "nearest")) == "nearest":
            return "resize_nearest", {"factor": tup(cfg.get("size", 2), nd_of(cls))}
        if cls == "Rescaling" and isinstance(cfg.get("scale"), (int, float)):
            return "mul_const", {"value": float(cfg["scale"])}
        if cls.startswith(_IDENTITY_PREFIXES):
            return "identity", {}
        return "unknown", {"reason": f"no rule for Keras layer class {cls}"}


def build_graph(
    model: KModel,
    shapes: Mapping[str, Shape],
    conv_names: Mapping[str, list[str]],
    bn_scales: Mapping[str, np.ndarray],
    bn_folded: Mapping[str, str],
    prelu_slopes: Mapping[str, np.ndarray],
) -> Graph:
    builder = GraphBuilder(model, shapes, conv_names, bn_scales, bn_folded, prelu_slopes)
    for call in model.calls:
        builder.call(call)
    return Graph(model.inputs, model.outputs, tuple(builder.nodes))
