"""Graph rewrites for the bound: activations that exporters write as several nodes, recognised
so the bound sees one function, and onnxruntime's FusedConv split into conv [+ add] + activation.

x*Sigmoid(x) -> silu, x*HardSigmoid(x; 1/6, 1/2) -> hardswish, x*Tanh(Softplus(x)) -> mish,
x*Clip(x+3, 0, 6)/6 -> hardswish (Paddle), 0.5*x*(1+Erf(x/sqrt 2)) -> gelu (torch, opset < 20).
Each inner node must feed only the pattern, so nothing else reads an absorbed tensor.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import onnx

from convaudit.ir import GraphNode
from convaudit.loaders.onnx.nodes import attrs, layer_name, text
from convaudit.loaders.onnx.topology import node_inputs
from convaudit.loaders.onnx.weights import ConstantResolver


class _Matcher:
    def __init__(self, graph: onnx.GraphProto, resolver: ConstantResolver, static: set[str]):
        self.graph = graph
        self.resolver = resolver
        self.static = static
        self.producer: dict[str, int] = {}
        self.users: dict[str, list[int]] = defaultdict(list)
        for idx, node in enumerate(graph.node):
            for out in node.output:
                self.producer[out] = idx
            for name in dict.fromkeys(node_inputs(node)):
                self.users[name].append(idx)
        self.outputs = {o.name for o in graph.output}

    def made_by(self, tensor: str, op: str, user: int) -> int | None:
        """Index of the ``op`` node producing ``tensor`` if ``user`` is its only reader."""
        idx = self.producer.get(tensor)
        if idx is None or self.graph.node[idx].op_type != op or tensor in self.outputs:
            return None
        return idx if self.users.get(tensor) == [user] else None

    def split(self, node: onnx.NodeProto) -> tuple[str, float] | None:
        """(data input, scalar constant) of a binary node with one constant scalar operand."""
        if len(node.input) != 2:
            return None
        for data, const in ((0, 1), (1, 0)):
            if node.input[data] not in self.static and node.input[const] in self.static:
                found = self.resolver.resolve(node.input[const])
                if found is not None and np.size(found.value) == 1:
                    return node.input[data], float(np.asarray(found.value).ravel()[0])
        return None

    def pairs(self, node: onnx.NodeProto) -> list[tuple[str, str]]:
        if len(node.input) != 2:
            return []
        return [(node.input[0], node.input[1]), (node.input[1], node.input[0])]

    # --- the patterns: each returns (fn, x, absorbed node indices) ----------------------------
    def gated(self, idx: int) -> tuple[str, str, set[int]] | None:
        """x * g(x) with g one of Sigmoid, HardSigmoid(1/6, 1/2), Tanh(Softplus)."""
        for x, gate in self.pairs(self.graph.node[idx]):
            for op in ("Sigmoid", "HardSigmoid", "Tanh"):
                inner = self.made_by(gate, op, idx)
                if inner is None:
                    continue
                node = self.graph.node[inner]
                if op == "Sigmoid" and node.input[0] == x:
                    return "silu", x, {inner}
                a = attrs(node)
                if (
                    op == "HardSigmoid"
                    and node.input[0] == x
                    and _near(a.get("alpha", 0.2), 1 / 6)
                    and _near(a.get("beta", 0.5), 0.5)
                ):
                    return "hardswish", x, {inner}
                soft = self.made_by(node.input[0], "Softplus", inner) if op == "Tanh" else None
                if soft is not None and self.graph.node[soft].input[0] == x:
                    return "mish", x, {inner, soft}
        return None

    def clip_hardswish(self, idx: int) -> tuple[str, str, set[int]] | None:
        """Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6), or Mul(..., 1/6)."""
        root = self.graph.node[idx]
        found = self.split(root)
        if found is None:
            return None
        prod_name, c = found
        if not (
            (root.op_type == "Div" and _near(c, 6)) or (root.op_type == "Mul" and _near(c, 1 / 6))
        ):
            return None
        prod = self.made_by(prod_name, "Mul", idx)
        if prod is None:
            return None
        for x, gate in self.pairs(self.graph.node[prod]):
            clip = self.made_by(gate, "Clip", prod)
            if clip is None or not self._clip_0_6(self.graph.node[clip]):
                continue
            add = self.made_by(self.graph.node[clip].input[0], "Add", clip)
            shifted = self.split(self.graph.node[add]) if add is not None else None
            if add is not None and shifted == (x, 3.0):
                return "hardswish", x, {prod, clip, add}
        return None

    def _clip_0_6(self, node: onnx.NodeProto) -> bool:
        a = attrs(node)
        bounds = [a.get("min"), a.get("max")]
        for i in (1, 2):
            if i < len(node.input) and node.input[i]:
                found = self.resolver.resolve(node.input[i])
                bounds[i - 1] = None if found is None else float(np.asarray(found.value).ravel()[0])
        return (
            bounds[0] is not None
            and bounds[1] is not None
            and _near(bounds[0], 0)
            and _near(bounds[1], 6)
        )

    def erf_gelu(self, idx: int) -> tuple[str, str, set[int]] | None:
        """Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)."""
        found = self.split(self.graph.node[idx])
        if self.graph.node[idx].op_type != "Mul" or found is None or not _near(found[1], 0.5):
            return None
        prod = self.made_by(found[0], "Mul", idx)
        if prod is None:
            return None
        for x, gate in self.pairs(self.graph.node[prod]):
            add = self.made_by(gate, "Add", prod)
            one = self.split(self.graph.node[add]) if add is not None else None
            if add is None or one is None or not _near(one[1], 1.0):
                continue
            erf = self.made_by(one[0], "Erf", add)
            div = (
                self.made_by(self.graph.node[erf].input[0], "Div", erf) if erf is not None else None
            )
            scaled = self.split(self.graph.node[div]) if div is not None else None
            if (
                div is not None
                and erf is not None
                and scaled is not None
                and scaled[0] == x
                and _near(scaled[1], math.sqrt(2))
            ):
                return "gelu", x, {prod, add, erf, div}
        return None


def find_patterns(
    graph: onnx.GraphProto, order: list[int], resolver: ConstantResolver, static: set[str]
) -> tuple[dict[int, GraphNode], set[int]]:
    """Fused activation nodes by root node index, and the node indices they absorb."""
    match = _Matcher(graph, resolver, static)
    fused: dict[int, GraphNode] = {}
    absorbed: set[int] = set()
    for idx in reversed(order):  # outermost patterns first
        node = graph.node[idx]
        if (
            idx in absorbed
            or node.op_type not in ("Mul", "Div")
            or node.domain not in ("", "ai.onnx")
        ):
            continue
        found = match.erf_gelu(idx) or match.clip_hardswish(idx) or match.gated(idx)
        if found is None or found[2] & absorbed:
            continue
        fn, x, inner = found
        ops = "*".join(graph.node[i].op_type for i in sorted(inner)) + "*" + node.op_type
        extra = {"fn": fn, "approximate": "none"} if fn == "gelu" else {"fn": fn}
        fused[idx] = GraphNode(
            layer_name(node, idx),
            "activation",
            f"pattern:{ops}",
            (x,),
            tuple(o for o in node.output if o),
            extra,
        )
        absorbed |= inner
    return fused, absorbed


def _near(value: float | None, target: float) -> bool:
    return value is not None and abs(float(value) - target) <= 1e-3 * max(1.0, abs(target))


_FUSED_ACTIVATIONS = {
    "Relu": ("relu", ()),
    "Tanh": ("tanh", ()),
    "Sigmoid": ("sigmoid", ()),
    "LeakyRelu": ("leaky_relu", ("alpha",)),
    "Clip": ("clip", ("min", "max")),
    "HardSigmoid": ("hardsigmoid", ("alpha", "beta")),
}


def expand_fused_conv(node: onnx.NodeProto, layer: str, static: set[str]) -> list[GraphNode]:
    """onnxruntime's FusedConv = activation(conv(X, W, B) + Z) as conv [-> add] -> activation."""
    a = attrs(node)
    out = node.output[0]
    conv_out = f"{out}/conv"
    nodes = [
        GraphNode(
            node.name or layer, "conv", "FusedConv", (node.input[0],), (conv_out,), {"layer": layer}
        )
    ]
    last = conv_out
    if len(node.input) > 3 and node.input[3] and node.input[3] not in static:
        nodes.append(
            GraphNode(
                f"{layer}/add", "add", "FusedConv", (last, node.input[3]), (f"{out}/sum",), {}
            )
        )
        last = f"{out}/sum"
    fn, names = _FUSED_ACTIVATIONS.get(text(a.get("activation", "")), ("", ()))
    if not fn:
        extra: dict[str, Any] = {
            "reason": f"FusedConv activation {text(a.get('activation', ''))!r}"
        }
        nodes.append(
            GraphNode(f"{layer}/activation", "unknown", "FusedConv", (last,), (out,), extra)
        )
        return nodes
    params = [float(p) for p in a.get("activation_params", [])]
    extra = {"fn": fn, **{k: v for k, v in zip(names, params, strict=False)}}
    nodes.append(
        GraphNode(f"{layer}/activation", "activation", "FusedConv", (last,), (out,), extra)
    )
    return nodes
