"""Turn op calls (pytorch_calls) into IR layers and the dataflow ir.Graph.

Conv layers are named by their weight's state_dict key without ``.weight`` (``layer1.0.conv1``);
a weight used by several calls gives ``name#2``, ``name#3``, ... A circular / reflect / replicate
``pad`` feeding only a conv is folded into that conv (``padding_mode``), as nn.Conv*d does it. An
eval-mode BatchNorm whose input is a conv output used by nothing else is attached to that conv
(``ConvLayer.bn``; graph node ``batchnorm`` with ``folded_into``); any other BatchNorm becomes a
``batchnorm`` node with the per-channel ``scale`` gamma/sqrt(var+eps).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convaudit.ir import ConvLayer, DenseLayer, Graph, GraphNode, Layer, SkippedLayer
from convaudit.loaders.pytorch.calls import UNKNOWN, CallGraph, Data, OpCall, Param
from convaudit.loaders.pytorch.modules import (
    bn_params,
    conv_from_module,
    provenance,
    to_numpy,
    torch_same_padding,
)
from convaudit.loaders.pytorch.ops import classify

CONV_OPS = {"convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}  # fmt: skip
DENSE_OPS = {"linear", "addmm", "mm", "matmul"}
BN_OPS = {
    "batch_norm",
    "_native_batch_norm_legit_no_training",
    "native_batch_norm",
    "_native_batch_norm_legit",
}
FOLDABLE_PADS = ("circular", "reflect", "replicate")


@dataclass
class Built:
    layers: list[Layer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    nodes: list[GraphNode] = field(default_factory=list)
    graph: Graph | None = None


def layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _pairs(value: Any, nd: int) -> tuple[int, ...]:
    items = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
    return tuple(items) if len(items) == nd else (items[0],) * nd


def _geometry(call: OpCall, nd: int, kernel: tuple[int, ...]) -> dict[str, Any] | None:
    """Conv geometry from the call's constant arguments; None if any is computed."""
    a = call.args
    transposed = call.op.startswith("conv_transpose") or bool(a.get("transposed", False))
    names = ["stride", "padding", "dilation", "groups"] + (["output_padding"] if transposed else [])
    if any(a.get(n) is UNKNOWN or isinstance(a.get(n), Data) for n in names):
        return None
    dilation = _pairs(a.get("dilation") or 1, nd)
    padding = a.get("padding") or 0
    if isinstance(padding, str):
        pads = torch_same_padding(kernel, dilation) if padding == "same" else ((0, 0),) * nd
        spec = padding
    else:
        pads, spec = tuple((p, p) for p in _pairs(padding, nd)), "explicit"
    return {
        "stride": _pairs(a.get("stride") or 1, nd),
        "dilation": dilation,
        "padding": pads,
        "padding_spec": spec,
        "groups": int(a.get("groups") or 1),
        "transposed": transposed,
        "output_padding": _pairs(a.get("output_padding") or 0, nd) if transposed else (),
    }


class GraphBuilder:
    def __init__(
        self,
        cg: CallGraph,
        tensors: Mapping[str, Any],
        *,
        container: str,
        module_of: Callable[[str], Any] | None = None,
        conv_inputs: Mapping[str, list[tuple[int, ...]]] | None = None,
    ) -> None:
        self.cg, self.tensors, self.container = cg, tensors, container
        self.module_of = module_of or (lambda _name: None)
        self.conv_inputs = {k: list(v) for k, v in (conv_inputs or {}).items()}
        self.consumers: Counter[str] = Counter(d.name for c in cg.calls for d in c.data_inputs())
        self.consumers.update(d.name for d in cg.outputs)
        self.producer = {o.name: c for c in cg.calls for o in c.outputs}
        self.alias: dict[str, str] = {}  # folded pad output -> pad input
        self.conv_of_output: dict[str, str] = {}  # conv output tensor -> layer name
        self.uses: Counter[str] = Counter()
        self.out = Built()

    def build(self) -> Built:
        folded = {id(c) for c in self.cg.calls if self._foldable_pad(c)}
        for call in self.cg.calls:
            if id(call) in folded:
                self.alias[call.outputs[0].name] = self._name(call.data_inputs()[0])
            elif call.op in CONV_OPS:
                self._conv(call)
            elif call.op in DENSE_OPS and self._dense(call):
                pass
            elif call.op in BN_OPS:
                self._batchnorm(call)
            else:
                kind, attrs = classify(call, self.tensors)
                self._node(call, kind, attrs)
        self.out.graph = Graph(
            inputs=tuple(d.name for d in self.cg.inputs),
            outputs=tuple(self._name(d) for d in self.cg.outputs),
            nodes=tuple(self.out.nodes),
        )
        return self.out

    def _name(self, d: Data) -> str:
        return self.alias.get(d.name, d.name)

    def _node(self, call: OpCall, kind: str, attrs: dict[str, Any]) -> None:
        inputs = tuple(self._name(d) for d in call.data_inputs())
        outputs = tuple(d.name for d in call.outputs)
        self.out.nodes.append(GraphNode(call.name, kind, call.target, inputs, outputs, attrs))

    def _foldable_pad(self, call: OpCall) -> bool:
        """A circular/reflect/replicate pad read only by a conv whose padding we can tell."""
        if call.op != "pad" or call.args.get("mode") not in FOLDABLE_PADS:
            return False
        out = call.outputs[0].name
        users = [c for c in self.cg.calls if any(d.name == out for d in c.data_inputs())]
        if self.consumers[out] != 1 or len(users) != 1 or users[0].op not in CONV_OPS:
            return False
        pads = call.args.get("pad")
        if isinstance(pads, list) and all(isinstance(p, int) for p in pads):
            return True
        weight = users[0].args.get("weight")  # scripted modules keep the pads as an attribute
        module = self.module_of(layer_name(weight.key)) if isinstance(weight, Param) else None
        return hasattr(module, "padding_mode")

    def _unique(self, key: str) -> str:
        self.uses[key] += 1
        base = layer_name(key)
        return base if self.uses[key] == 1 else f"{base}#{self.uses[key]}"

    def _input_size(
        self, x: Data, key: str, pad: OpCall | None, layer: ConvLayer
    ) -> tuple[int, ...] | None:
        recorded = self.conv_inputs.get(key)
        if recorded:
            # recorded at aten.convolution: after a folded pad, so take the pad off again
            shape: tuple[int | None, ...] | None = recorded.pop(0)
            folded = (
                [b + a for b, a in layer.padding] if pad is not None else [0] * layer.spatial_dims
            )
            if shape is not None and None not in shape:
                shape = (*shape[:2], *(int(n) - t for n, t in zip(shape[2:], folded, strict=True)))  # type: ignore[arg-type]
        else:
            shape = (self.producer[x.name].data_inputs()[0] if pad is not None else x).shape
        if shape is None or len(shape) != layer.spatial_dims + 2 or any(s is None for s in shape):
            return None
        return tuple(int(s) for s in shape[2:])  # type: ignore[arg-type]

    def _conv(self, call: OpCall) -> None:
        weight, x = call.args.get("weight"), call.args.get("input")
        if (
            not isinstance(weight, Param)
            or weight.key not in self.tensors
            or not isinstance(x, Data)
        ):
            reason = "the conv weight is computed in the graph, not a stored parameter"
            self.out.skipped.append(SkippedLayer(call.name, reason, call.target))
            self._node(call, "unknown", {"reason": reason})
            return
        key = weight.key
        name = self._unique(key)
        tensor = self.tensors[key]
        pad = self.producer.get(x.name)
        pad = pad if pad is not None and x.name in self.alias else None
        module = self.module_of(layer_name(key))
        geometry = _geometry(call, tensor.dim() - 2, tuple(int(k) for k in tensor.shape[2:]))
        if module is not None and hasattr(module, "padding_mode"):
            layer = conv_from_module(name, module, container=self.container)
        elif geometry is None:
            reason = "conv geometry (stride/padding/...) is computed at run time, not constant in the graph"
            self.out.skipped.append(SkippedLayer(name, reason, call.target))
            self._node(call, "unknown", {"reason": reason})
            return
        else:
            if pad is not None:
                nd = tensor.dim() - 2
                flat = _pairs(pad.args.get("pad"), 2 * nd)  # F.pad order: last axis first
                geometry["padding"] = tuple(
                    (flat[2 * (nd - 1 - i)], flat[2 * (nd - 1 - i) + 1]) for i in range(nd)
                )
            bias = call.args.get("bias")
            layer = ConvLayer(
                name=name,
                kernel=to_numpy(tensor),
                padding_mode=pad.args["mode"] if pad is not None else "zeros",
                bias=to_numpy(self.tensors[bias.key])
                if isinstance(bias, Param) and bias.key in self.tensors
                else None,
                provenance=provenance(key, tensor, self.container),
                **geometry,
            )
        layer = dataclasses.replace(layer, input_size=self._input_size(x, key, pad, layer))
        self.out.layers.append(layer)
        self.conv_of_output[call.outputs[0].name] = name
        self._node(call, "conv", {"layer": name})

    def _dense(self, call: OpCall) -> bool:
        a = call.args
        weight = a.get("weight") if call.op == "linear" else a.get("mat2", a.get("other"))
        data = call.data_inputs()
        if not isinstance(weight, Param) or weight.key not in self.tensors or len(data) != 1:
            return False
        if call.op != "linear" and not weight.transposed:
            return False  # x @ W with W stored (in, out): not a torch Linear; leave it unknown
        tensor = self.tensors[weight.key]
        if tensor.dim() != 2:
            return False
        name = self._unique(weight.key)
        bias = a.get("bias", a.get("self")) if call.op in ("linear", "addmm") else None
        layer = DenseLayer(
            name=name,
            weight=to_numpy(tensor),
            bias=to_numpy(self.tensors[bias.key])
            if isinstance(bias, Param) and bias.key in self.tensors
            else None,
            provenance=provenance(weight.key, tensor, self.container, "oi"),
        )
        self.out.layers.append(layer)
        self._node(call, "dense", {"layer": name})
        return True

    def _batchnorm(self, call: OpCall) -> None:
        a = call.args
        stats = [a.get(k) for k in ("running_mean", "running_var")]
        if a.get("training") is True or call.op == "_native_batch_norm_legit":
            self._node(call, "unknown", {"reason": "BatchNorm in training mode (batch statistics)"})
            return
        if not all(isinstance(s, Param) and s.key in self.tensors for s in stats):
            self._node(
                call,
                "unknown",
                {"reason": "BatchNorm without running statistics (batch statistics)"},
            )
            return
        t = self.tensors

        def get(v: Any) -> Any:
            return t.get(v.key) if isinstance(v, Param) else None

        mean, var = (s.key for s in stats if isinstance(s, Param))
        bn = bn_params(
            mean.rsplit(".", 1)[0],
            get(a.get("weight")),
            get(a.get("bias")),
            t[mean],
            t[var],
            a.get("eps", 1e-5),
        )
        x = call.data_inputs()[0]
        conv = self.conv_of_output.get(self._name(x))
        if conv is not None and self.consumers[x.name] == 1:
            i = next(i for i, layer in enumerate(self.out.layers) if layer.name == conv)
            layer = self.out.layers[i]
            assert isinstance(layer, ConvLayer)
            self.out.layers[i] = dataclasses.replace(layer, bn=bn)
            self._node(call, "batchnorm", {"folded_into": conv})
        else:
            self._node(call, "batchnorm", {"scale": bn.scale})
