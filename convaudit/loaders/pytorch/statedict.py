"""A bare state_dict (no --arch): every 3/4/5-D ``*.weight`` read as a plain conv, 2-D as dense.

A state_dict stores no stride, padding, dilation or groups and no input size, so this reading is
an ASSUMPTION (stride 1, padding 0, dilation 1, groups 1, input size unknown) and every layer
and the model say so. A BatchNorm is paired with the conv just before it in key order only when
the channel counts match; that pairing is an assumption too and is labelled. The graph is a
plain chain in key order (``chain_assumed``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from convaudit.ir import ConvLayer, DenseLayer, Graph, GraphNode, Layer, SkippedLayer
from convaudit.loaders.pytorch.archive import StateDict
from convaudit.loaders.pytorch.modules import bn_params, provenance, to_numpy

GEOMETRY_NOTE = (
    "geometry assumed: a state_dict stores no stride/padding/dilation/groups, so this layer is "
    "read as stride 1, padding 0, dilation 1, groups 1 with unknown input size"
)
MODEL_NOTE = (
    "bare state_dict: every 3/4/5-D '*.weight' is assumed to be a conv with stride 1, padding 0, "
    "dilation 1, groups 1 and unknown input size, and every 2-D '*.weight' a dense layer; the "
    "network is assumed to be a plain chain in key order. Pass --arch module:callable and "
    "--input-shape for the real geometry, input sizes and graph"
)
SORTED_NOTE = (
    "safetensors stores tensors sorted by name, so the layer order (and the assumed chain) is "
    "alphabetical, and no BatchNorm is attached"
)
BN_NOTE = "BatchNorm {bn!r} attached by key order (assumption: a state_dict has no graph)"


def _bn_prefixes(tensors: Mapping[str, Any]) -> list[str]:
    return [
        k[: -len(".running_mean")]
        for k in tensors
        if k.endswith(".running_mean") and k[: -len("running_mean")] + "running_var" in tensors
    ]


def _skip_reason(key: str, tensor: Any) -> str | None:
    """Why a kernel-like tensor cannot be read as a layer (None: it can, or it is no kernel)."""
    if tensor.dim() not in (2, 3, 4, 5):
        return None
    if key.endswith(("weight_v", "weight_orig", ".original", ".original1")):
        return (
            "parametrized weight (weight_norm / spectral_norm): the kernel is computed at run time"
        )
    if key.endswith("weight") and not tensor.is_floating_point():
        return (
            f"stored as {tensor.dtype} (quantized or integer): only floating-point kernels are read"
        )
    return None


def layers_from_state_dict(sd: StateDict) -> tuple[list[Layer], list[SkippedLayer], list[str]]:
    """Layers in key order, the kernel-like tensors that could not be read, and model notes."""
    tensors = sd.tensors
    extra = sd.provenance_extra()
    # safetensors sorts its keys by name: key order says nothing about the network there
    bn_prefixes = set(_bn_prefixes(tensors))
    pair_bn = sd.container != "safetensors"
    layers: list[Layer] = []
    skipped: list[SkippedLayer] = []
    last_conv: int | None = None  # index in layers of the conv before the current key
    for key, tensor in tensors.items():
        prefix = key.rsplit(".", 1)[0] if "." in key else ""
        if prefix in bn_prefixes:
            if key.endswith(".running_mean") and last_conv is not None and pair_bn:
                conv = layers[last_conv]
                assert isinstance(conv, ConvLayer)
                if conv.bn is None and conv.out_channels == tensor.numel():
                    bn = bn_params(
                        prefix,
                        tensors.get(prefix + ".weight"),
                        tensors.get(prefix + ".bias"),
                        tensor,
                        tensors[prefix + ".running_var"],
                        1e-5,
                    )
                    note = BN_NOTE.format(bn=prefix) + "; eps assumed 1e-5 (not stored)"
                    layers[last_conv] = dataclasses.replace(conv, bn=bn, notes=(*conv.notes, note))
            continue
        if last_conv is not None and prefix != layers[last_conv].name:
            last_conv = None  # something else sits between the conv and any later BN
        why = _skip_reason(key, tensor)
        if why is not None:
            skipped.append(SkippedLayer(key, why, "state_dict"))
        if why is not None or not key.endswith("weight"):
            continue
        name = key[: -len(".weight")] if key.endswith(".weight") else key
        if tensor.dim() in (3, 4, 5):
            nd = tensor.dim() - 2
            layers.append(ConvLayer(
                name=name, kernel=to_numpy(tensor), stride=(1,) * nd, dilation=(1,) * nd,
                padding=((0, 0),) * nd, bias=_bias(tensors, name),
                provenance=provenance(key, tensor, sd.container, **extra), notes=(GEOMETRY_NOTE,),
            ))  # fmt: skip
            last_conv = len(layers) - 1
        elif tensor.dim() == 2:
            layers.append(
                DenseLayer(
                    name,
                    to_numpy(tensor),
                    _bias(tensors, name),
                    provenance(key, tensor, sd.container, "oi", **extra),
                )
            )
    notes = [MODEL_NOTE]
    if not pair_bn:
        notes.append(SORTED_NOTE)
    return layers, skipped, notes


def _bias(tensors: Mapping[str, Any], name: str) -> Any:
    bias = tensors.get(f"{name}.bias")
    return to_numpy(bias) if bias is not None and bias.dim() == 1 else None


def chain_graph(layers: list[Layer]) -> Graph:
    """The layers as a plain chain, in order: an assumption, flagged ``chain_assumed``."""
    nodes: list[GraphNode] = []
    current = "input"
    for i, layer in enumerate(layers):
        kind = "conv" if isinstance(layer, ConvLayer) else "dense"
        out = f"{layer.name}:out"
        nodes.append(GraphNode(layer.name, kind, kind, (current,), (out,), {"layer": layer.name}))
        current = out
        if isinstance(layer, ConvLayer) and layer.bn is not None:
            out = f"{layer.bn.name}:out#{i}"
            nodes.append(
                GraphNode(
                    layer.bn.name,
                    "batchnorm",
                    "batchnorm",
                    (current,),
                    (out,),
                    {"folded_into": layer.name},
                )
            )
            current = out
    return Graph(inputs=("input",), outputs=(current,), nodes=tuple(nodes), chain_assumed=True)
