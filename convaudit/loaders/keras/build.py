"""Assemble the IR (layers, skipped layers, BN attachment, input sizes, graph) of a Keras file."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from convaudit.errors import InputShapeError
from convaudit.ir import ConvLayer, DenseLayer, Graph, Layer, SkippedLayer
from convaudit.loaders.keras.config import KLayer, KModel, Shape
from convaudit.loaders.keras.graph import build_graph
from convaudit.loaders.keras.h5 import CONV_CLASSES, LayerWeights, roles_by_order
from convaudit.loaders.keras.layers import Context, build_bn, build_conv, build_dense
from convaudit.loaders.keras.shapes import channels_first, nd_of, propagate, spatial
from convaudit.loaders.keras.tree import class_key_to_name

QUANTIZED = "quantised (integer) kernel: dequantisation of Keras int8/int4 layers is not supported"
NO_CONFIG_NOTE = "weights-only file: no config, so stride 1, dilation 1, no padding assumed and input size unknown"


def merge_input_shapes(model: KModel, given: Mapping[str, tuple[int, ...]]) -> dict[str, Shape]:
    """The declared input shapes, completed (never contradicted) by --input-shape."""
    shapes: dict[str, Shape] = {t: model.declared.get(t, ()) for t in model.inputs}
    for key, full in given.items():
        if key == "" and len(model.inputs) == 1:
            key = model.inputs[0]
        if key not in shapes:
            raise InputShapeError(
                f"--input-shape names {key or '(unnamed)'}, but the model's inputs are {', '.join(model.inputs)}",
                hint="use NAME=DIMS with one of those names",
            )
        declared = shapes[key]
        if declared and (
            len(declared) != len(full)
            or any(d is not None and d != g for d, g in list(zip(declared, full, strict=True))[1:])
        ):
            shown = ",".join("?" if d is None else str(d) for d in declared)
            example = ",".join("1" if d is None else str(d) for d in declared)
            raise InputShapeError(
                f"--input-shape {key}={','.join(map(str, full))} contradicts the model, whose input {key} is ({shown})",
                hint=f"give the full shape as the model declares it (batch first), e.g. {key}={example}",
            )
        shapes[key] = tuple(full)
    return {t: s for t, s in shapes.items() if s}


def sized_input(model: KModel, size: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """(input, full shape) for ``--input-size``: the one input of rank len(size) + 2, batch 1,
    channels as the config declares them (last, Keras' default, or first)."""
    shown = "x".join(map(str, size))
    candidates = [t for t in model.inputs if len(model.declared.get(t, ()) or ()) == len(size) + 2]
    if len(candidates) != 1:
        raise InputShapeError(
            f"--input-size {shown} needs one input of rank {len(size) + 2}, but the model's "
            f"inputs are {', '.join(f'{t} {model.declared.get(t)}' for t in model.inputs)}",
            hint="give the full shape instead with --input-shape NAME=DIMS",
        )
    name = candidates[0]
    declared = model.declared[name]
    if declared[-1] is not None:
        shape, spatial = (1, *size, int(declared[-1])), declared[1:-1]
    elif declared[1] is not None:
        shape, spatial = (1, int(declared[1]), *size), declared[2:]
    else:
        raise InputShapeError(
            f"--input-size {shown}: input {name} {declared} declares no channel count",
            hint="give the full shape instead with --input-shape NAME=DIMS",
        )
    if any(d is not None and d != n for d, n in zip(spatial, size, strict=True)):
        raise InputShapeError(f"--input-size {shown} contradicts input {name} {declared}")
    return name, shape


def _input_size(
    layer: KLayer, model: KModel, shapes: Mapping[str, Shape]
) -> tuple[tuple[int, ...] | None, tuple[str, ...]]:
    sizes = []
    for call in model.calls_of(layer.name):
        shape = shapes.get(call.inputs[0]) if call.inputs else None
        sp = spatial(shape, layer.config, nd_of(layer.class_name)) if shape else None
        sizes.append(tuple(sp) if sp is not None and None not in sp else None)
    if not sizes or sizes[0] is None:
        return None, ("input size unknown (not propagated through the config; pass --input-shape)",)
    notes: tuple[str, ...] = ()
    if len(set(sizes)) > 1:
        notes = (f"layer is called {len(sizes)} times with input sizes {sizes}; the first is used",)
    return sizes[0], notes  # type: ignore[return-value]


def _bn_target(bn: KLayer, model: KModel, convs: Mapping[str, list[ConvLayer]]) -> str | None:
    """The Keras conv layer a BatchNorm directly follows (and alone reads), if any."""
    calls = model.calls_of(bn.name)
    if len(calls) != 1 or not calls[0].inputs:
        return None
    tensor = calls[0].inputs[0]
    producer = next((c for c in model.calls if tensor in c.outputs), None)
    if producer is None or producer.layer not in convs or len(model.calls_of(producer.layer)) != 1:
        return None
    conv = model.layers[producer.layer]
    act = conv.config.get("activation", "linear")
    if (
        (act or "linear") != "linear"
        or len(model.consumers(tensor)) != 1
        or tensor in model.outputs
    ):
        return None
    axis = bn.config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    rank = nd_of(conv.class_name) + 2
    want = 1 if channels_first(conv.config) else rank - 1
    if not isinstance(axis, int) or axis % rank != want:
        return None
    return producer.layer


def build_with_config(
    model: KModel,
    weights: Mapping[str, LayerWeights],
    ctx: Context,
    given: Mapping[str, tuple[int, ...]],
    size: tuple[int, ...] | None = None,
) -> tuple[list[Layer], list[SkippedLayer], dict[str, Shape], Graph, list[str]]:
    """IR layers, skipped layers, input shapes, graph and notes of a model with a config.

    ``size``: --input-size, the spatial size of the one image-like input."""
    if size is not None:
        name, shape = sized_input(model, size)
        if name in given and tuple(given[name]) != shape:
            raise InputShapeError(f"--input-size and --input-shape {name} disagree")
        given = {**given, name: shape}
    inputs = merge_input_shapes(model, given)
    shapes = propagate(model, inputs)
    convs: dict[str, list[ConvLayer]] = {}
    denses: dict[str, DenseLayer] = {}
    skipped: list[SkippedLayer] = []
    bns, prelu = {}, {}
    for layer in model.layers.values():
        cls, w = layer.class_name, weights.get(layer.name)
        if layer.is_model or cls == "InputLayer":
            continue
        if cls in CONV_CLASSES:
            if w is None or not (w.path("kernel") or w.path("depthwise_kernel")):
                skipped.append(SkippedLayer(layer.name, "its weights are not in the file", cls))
                continue
            if not all(ctx.is_float(p) for r, p in w.slots if r.endswith("kernel")):
                skipped.append(SkippedLayer(layer.name, QUANTIZED, cls))
                continue
            size, size_notes = _input_size(layer, model, shapes)
            convs[layer.name] = build_conv(layer.name, cls, layer.config, w, size, ctx, size_notes)
        elif cls == "Dense" and w is not None and w.path("kernel"):
            if not ctx.is_float(w.path("kernel")):  # type: ignore[arg-type]
                skipped.append(SkippedLayer(layer.name, QUANTIZED, cls))
                continue
            denses[layer.name] = build_dense(layer.name, w, ctx)
        elif cls == "BatchNormalization" and w is not None:
            bns[layer.name] = build_bn(layer.name, layer.config, w, ctx)
        elif cls == "PReLU" and w is not None and w.path("alpha"):
            prelu[layer.name] = ctx.read(w.path("alpha"))  # type: ignore[arg-type]
        elif w is not None and any(ctx.ndim(p) >= 3 for _, p in w.slots):
            skipped.append(
                SkippedLayer(
                    layer.name, f"unsupported Keras layer class {cls} holds conv-like weights", cls
                )
            )
    folded: dict[str, str] = {}
    for name, params in bns.items():
        target = _bn_target(model.layers[name], model, convs)
        last = convs[target][-1] if target else None
        if last is not None and last.bn is None and len(params.gamma) == last.out_channels:
            convs[target][-1] = dataclasses.replace(last, bn=params)  # type: ignore[index]
            folded[name] = last.name
    layers: list[Layer] = []
    order = dict.fromkeys([c.layer for c in model.calls] + list(model.layers))  # execution order
    for name in order:
        layers.extend(convs.get(name, []))
        if name in denses:
            layers.append(denses[name])
    conv_names = {k: [c.name for c in v] for k, v in convs.items()} | {k: [k] for k in denses}
    scales = {k: np.asarray(v.scale) for k, v in bns.items()}
    graph = build_graph(model, shapes, conv_names, scales, folded, prelu)
    notes: list[str] = []
    unknown = [c.name for v in convs.values() for c in v if c.input_size is None]
    if unknown:
        notes.append(
            f"input size unknown for {len(unknown)} conv layer(s) ({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}): pass --input-shape"
        )
    return layers, skipped, {t: shapes[t] for t in model.inputs if t in shapes}, graph, notes


def infer_class(w: LayerWeights, ndim: int) -> str:
    """Class of a layer in a file without config, from its weights' roles / tree key."""
    roles = {r for r, _ in w.slots}
    nd = ndim - 2
    if {"depthwise_kernel", "pointwise_kernel"} <= roles:
        return f"SeparableConv{nd}D"
    if "depthwise_kernel" in roles:
        return f"DepthwiseConv{nd}D"
    if "kernel" in roles and "depthwise" in w.name.lower() and 1 <= nd <= 2:
        return f"DepthwiseConv{nd}D"  # Keras 3 calls a depthwise kernel plain "kernel"
    if "kernel" in roles and ndim == 2:
        return "Dense"
    if "kernel" in roles and 1 <= nd <= 3:
        return f"Conv{nd}DTranspose" if "transpose" in w.name.lower() else f"Conv{nd}D"
    return ""


def build_without_config(
    weights: Mapping[str, LayerWeights], ctx: Context
) -> tuple[list[Layer], list[SkippedLayer]]:
    """Kernel shapes only: every conv at stride 1, unknown input size, labelled in its notes."""
    layers: list[Layer] = []
    skipped: list[SkippedLayer] = []
    for name, w in weights.items():
        cls = class_key_to_name(w.class_key) if w.class_key else ""
        if cls:  # object tree keyed by class: roles follow from the class
            bias = {"use_bias": len(w.slots) > (2 if cls.startswith("SeparableConv") else 1)}
            roles = roles_by_order(cls, bias, len(w.slots))
            w = LayerWeights(
                name, tuple(zip(roles, (p for _, p in w.slots), strict=True)), w.class_key
            )
        else:
            if w.class_key and len(w.slots) <= 2:  # a subclassed model's attribute: kernel, bias
                roles = ["kernel", "bias"][: len(w.slots)]
                w = LayerWeights(name, tuple(zip(roles, (p for _, p in w.slots), strict=True)))
            first = w.path("kernel") or w.path("depthwise_kernel")
            cls = infer_class(w, ctx.ndim(first)) if first else ""
        kernels = [p for r, p in w.slots if r.endswith("kernel")]
        if cls in CONV_CLASSES | {"Dense"} and not all(ctx.is_float(p) for p in kernels):
            skipped.append(SkippedLayer(name, QUANTIZED, cls))
        elif cls in CONV_CLASSES:
            notes: tuple[str, ...] = (NO_CONFIG_NOTE,)
            if not class_key_to_name(w.class_key):
                notes += (f"read as {cls}: the class is guessed from weight and layer names",)
            if cls.startswith("Depthwise") and w.path("kernel"):
                w = LayerWeights(
                    name, tuple(("depthwise_kernel" if r == "kernel" else r, p) for r, p in w.slots)
                )
            layers.extend(build_conv(name, cls, {"padding": "valid"}, w, None, ctx, notes))
        elif cls == "Dense":
            layers.append(build_dense(name, w, ctx, ("weights-only file: no config",)))
        elif any(ctx.ndim(p) >= 3 for _, p in w.slots) and cls not in ("BatchNormalization",):
            skipped.append(
                SkippedLayer(
                    name,
                    f"layer {w.class_key or name} with conv-like weights of an unknown class",
                    cls,
                )
            )
    return layers, skipped
