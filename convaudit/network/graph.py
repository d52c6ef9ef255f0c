"""Certified whole-network Lipschitz bound, propagated through the model's real graph.

For every tensor t we keep L(t), an upper bound on the Lipschitz constant (2-norm to 2-norm) of
the map network input -> t. Graph inputs get 1 (each is a slice of the concatenated input), tensors
nothing computes from the input (weights, shape constants) get 0, and each node maps the L of
its inputs to the L of its outputs by a rule that holds for EVERY input (see ``_RULES`` and
:mod:`convaudit.network.rules`). Because L is tracked per tensor from the input, shared
subexpressions and skip connections are sound by construction: a residual block x + f(x) gets
L(x) + L(f(x)) = (1 + L_f)·L(x), never the naive product.

The per-layer operator bounds are injected (``LayerBounds``) so this module never runs the engine:
the CLI passes the engine's certified sigma_max upper bounds, tests pass analytic values.
A node without a rule makes every tensor downstream of it unbounded, and the result names it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from convaudit.ir import ConvLayer, Graph, GraphNode, Layer
from convaudit.network.rules import (
    RuleError,
    activation_constant,
    avgpool_bound,
    global_avgpool_bound,
    maxpool_bound,
)

NAIVE_LABEL = (
    "naive product of per-layer sigma_max (not a bound when the graph has skip connections)"
)


@dataclass(frozen=True)
class LayerBounds:
    """Certified per-layer operator-norm upper bounds, keyed by layer name.

    ``plain``: sigma_max upper bound of the layer's real operator as stored (its padding, its
    input size). ``folded``: for a conv followed by an eval BatchNorm that the loader marked
    ``folded_into`` it, the bound of the conv with that BatchNorm folded into its kernel.
    ``bn_gain``: conv name -> max|gamma/sqrt(var+eps)| of its attached BatchNorm, the fallback
    when the folded bound is missing (||D A|| <= ||D||·||A||: sound, looser).
    """

    plain: Mapping[str, float]
    folded: Mapping[str, float] = field(default_factory=dict)
    bn_gain: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def with_bn_gains(
        cls, layers: Sequence[Layer], plain: Mapping[str, float], folded: Mapping[str, float]
    ) -> LayerBounds:
        """Fill ``bn_gain`` from the layers' attached BatchNorms."""
        gains = {
            layer.name: float(np.max(np.abs(layer.bn.scale))) if layer.bn.scale.size else 0.0
            for layer in layers
            if isinstance(layer, ConvLayer) and layer.bn is not None
        }
        return cls(plain, folded, gains)


@dataclass(frozen=True)
class Blocker:
    """A node that has no certified rule, so everything downstream of it is unbounded."""

    node: str
    op: str
    reason: str

    def describe(self) -> str:
        return f"op {self.op} at node {self.node}: {self.reason}"


@dataclass(frozen=True)
class NetworkBound:
    """The graph-aware Lipschitz upper bound of one model (2-norm, whole input -> whole output).

    ``value`` is ``math.inf`` when unbounded; ``blocked_by`` then lists the nodes whose op had no
    rule AND reach an output. ``assumed`` is True when the graph is a chain the loader assumed
    from module order: the bound then holds only if the model really is that chain.
    ``naive_product`` multiplies the per-layer sigma_max of the graph's layers: equal to the
    bound on a plain chain of 1-Lipschitz glue, NOT a bound once there are skip connections.
    """

    value: float
    naive_product: float
    per_output: Mapping[str, float]
    blocked_by: tuple[Blocker, ...] = ()
    assumed: bool = False
    layers_used: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.value)

    def describe(self) -> str:
        if not self.bounded:
            if self.blocked_by:
                return "unbounded (" + "; ".join(_grouped(self.blocked_by)) + ")"
            return "unbounded (the bound overflows the float range)"
        label = "certified upper bound"
        if self.assumed:
            label += ", assuming the layers form a plain chain in module order"
        return f"{self.value:.6g} ({label})"


def _grouped(blockers: tuple[Blocker, ...], shown: int = 3) -> list[str]:
    """One phrase per (op, reason): 'op Mul at nodes a, b, c (+7 more): why'."""
    groups: dict[tuple[str, str], list[str]] = {}
    for b in blockers:
        groups.setdefault((b.op, b.reason), []).append(b.node)
    out = []
    for (op, reason), nodes in groups.items():
        where = f"node {nodes[0]}" if len(nodes) == 1 else "nodes " + ", ".join(nodes[:shown])
        more = f" (+{len(nodes) - shown} more)" if len(nodes) > shown else ""
        out.append(f"op {op} at {where}{more}: {reason}")
    return out


def _product(values: list[float]) -> float:
    out = 1.0
    for v in values:
        out *= v
    return out


class _Propagation:
    """One pass over the nodes; keeps L per tensor and the blockers that reach each tensor."""

    def __init__(self, graph: Graph, bounds: LayerBounds) -> None:
        self.graph = graph
        self.bounds = bounds
        # integer / bool inputs are parameters, fixed like constants: L = 0
        self.lip: dict[str, float] = {
            name: 1.0 for name in graph.inputs if name not in graph.parameters
        }
        self.blockers: dict[str, frozenset[Blocker]] = {}
        self.producer: dict[str, GraphNode] = {}
        self.factors: list[float] = []  # per-layer sigma_max used, for the naive product
        self.layers_used: list[str] = []
        self.notes: list[str] = []
        self.readers: dict[str, list[GraphNode]] = {}
        for node in graph.nodes:
            for tensor in set(node.inputs):
                self.readers.setdefault(tensor, []).append(node)

    def L(self, tensor: str) -> float:
        # A tensor no node produces and that is not a graph input is a constant (a weight, a
        # shape): it does not depend on the input, so its Lipschitz constant is 0.
        return self.lip.get(tensor, 0.0)

    def run(self) -> None:
        for node in self.graph.nodes:
            inherited: frozenset[Blocker] = frozenset().union(
                *(self.blockers.get(t, frozenset()) for t in node.inputs)
            )
            try:
                value = self.rule(node)
                blocked = inherited
            except RuleError as exc:
                if all(self.L(t) == 0.0 for t in node.inputs):
                    value, blocked = 0.0, inherited  # any op on constants yields a constant
                else:
                    value = math.inf
                    blocked = inherited | {Blocker(node.name, node.op or node.kind, str(exc))}
            for out in node.outputs:
                self.lip[out] = value
                self.producer[out] = node
                if blocked:
                    self.blockers[out] = blocked

    # --- rules -------------------------------------------------------------------------------
    def data_input(self, node: GraphNode) -> float:
        """L of the one input that carries data; every other input must be constant."""
        if not node.inputs:
            raise RuleError("node has no input")
        if any(self.L(t) != 0.0 for t in node.inputs[1:]):
            raise RuleError("a parameter input depends on the network input")
        return self.L(node.inputs[0])

    def scale(self, lip: float, factor: float) -> float:
        # a constant in gives a constant out, and x * 0 is constant whatever x (no inf * 0 = nan)
        return 0.0 if lip == 0.0 or factor == 0.0 else lip * factor

    def layer_bound(self, node: GraphNode, *, folded: bool = False) -> float:
        name = node.attrs.get("layer")
        if not name:
            raise RuleError("the loader gave no layer name")
        table = self.bounds.folded if folded else self.bounds.plain
        if name not in table:
            raise RuleError(f"no certified sigma_max for layer {name}")
        value = float(table[name])
        if not value >= 0.0:
            raise RuleError(f"layer {name} has no finite sigma_max ({value})")
        return value

    def rule(self, node: GraphNode) -> float:
        kind, attrs = node.kind, node.attrs
        if kind in ("conv", "dense"):
            bound = self.layer_bound(node)
            if not self._feeds_only_folded_bn(node):
                self.factors.append(bound)
                self.layers_used.append(str(attrs["layer"]))
            return self.scale(self.data_input(node), bound)
        if kind == "batchnorm":
            return self.batchnorm(node)
        if kind in ("add", "sub"):
            return sum(self.L(t) for t in node.inputs)
        if kind == "concat":
            return math.sqrt(sum(self.L(t) ** 2 for t in node.inputs))
        if kind == "activation":
            return self.scale(self.data_input(node), activation_constant(attrs))
        if kind == "mul_const":
            if "value" not in attrs:
                raise RuleError("the loader gave no constant")
            variable = [t for t in node.inputs if self.L(t) != 0.0]
            if len(variable) > 1:
                raise RuleError("both factors depend on the network input")
            return self.scale(
                max((self.L(t) for t in variable), default=0.0), abs(float(attrs["value"]))
            )
        if kind == "maxpool":
            return self.scale(self.data_input(node), maxpool_bound(attrs))
        if kind == "avgpool":
            return self.scale(self.data_input(node), avgpool_bound(attrs))
        if kind == "global_avgpool":
            return self.scale(self.data_input(node), global_avgpool_bound(attrs))
        if kind in ("global_maxpool", "identity"):
            return self.data_input(node)
        if kind == "select":
            # the output is one branch's, chosen by the condition: the larger bound holds while
            # the condition is fixed; one that moves with the input makes the output jump
            if not node.inputs:
                raise RuleError("the loader gave no condition")
            if self.L(node.inputs[0]) != 0.0:
                raise RuleError(
                    "its condition depends on the network input: the output can jump from one "
                    "branch to the other"
                )
            return max((self.L(t) for t in node.inputs[1:]), default=0.0)
        if kind == "resize_nearest":
            factor = attrs.get("factor")
            if not factor or any(int(f) != f or f < 1 for f in factor):
                raise RuleError("not an integer nearest-neighbour upsampling")
            return self.scale(self.data_input(node), math.sqrt(math.prod(int(f) for f in factor)))
        raise RuleError(str(attrs.get("reason") or "no Lipschitz rule for this op"))

    def batchnorm(self, node: GraphNode) -> float:
        attrs = node.attrs
        target = attrs.get("folded_into")
        if target:
            conv = self.producer.get(node.inputs[0]) if node.inputs else None
            adjacent = (
                conv is not None and conv.kind == "conv" and conv.attrs.get("layer") == target
            )
            if adjacent and target in self.bounds.folded:
                assert conv is not None
                self.factors.append(float(self.bounds.folded[target]))
                self.layers_used.append(str(target))
                return self.scale(self.data_input(conv), self.layer_bound(conv, folded=True))
            if adjacent:
                self.notes.append(
                    f"batchnorm {node.name}: no folded bound for {target}, used max|scale|"
                )
        if "scale" in attrs:
            scale = np.abs(np.asarray(attrs["scale"], np.float64))
            factor = float(np.max(scale)) if scale.size else 0.0
        elif target and target in self.bounds.bn_gain:
            factor = float(self.bounds.bn_gain[target])
        else:
            raise RuleError("eval BatchNorm without its per-channel scale")
        self.factors.append(factor)
        return self.scale(self.data_input(node), factor)

    def _feeds_only_folded_bn(self, node: GraphNode) -> bool:
        """True if the conv's output is read only by BatchNorms that fold it (counted there)."""
        name = node.attrs.get("layer")
        if name not in self.bounds.folded:
            return False
        readers = [n for t in node.outputs for n in self.readers.get(t, ())]
        return (
            bool(readers)
            and all(n.kind == "batchnorm" and n.attrs.get("folded_into") == name for n in readers)
            and not set(node.outputs) & set(self.graph.outputs)
        )


def network_bound(graph: Graph, bounds: LayerBounds | Mapping[str, float]) -> NetworkBound:
    """Propagate certified Lipschitz bounds through ``graph`` (nodes in topological order).

    ``bounds``: per-layer certified sigma_max upper bounds (a plain mapping means no folded BN).
    The network bound is for the map (all inputs, concatenated) -> (all outputs, concatenated):
    sqrt(sum over outputs of L(output)^2).
    """
    if not isinstance(bounds, LayerBounds):
        bounds = LayerBounds(plain=dict(bounds))
    prop = _Propagation(graph, bounds)
    prop.run()
    if graph.parameters:
        prop.notes.append(
            f"integer/bool inputs ({', '.join(graph.parameters)}) are held fixed: the bound "
            "holds for each of their values"
        )
    per_output = {name: prop.L(name) for name in graph.outputs}
    value = math.sqrt(sum(v * v for v in per_output.values())) if per_output else 0.0
    reaching: set[Blocker] = set()
    for name in graph.outputs:
        reaching |= prop.blockers.get(name, frozenset())
    order = {node.name: i for i, node in enumerate(graph.nodes)}
    blocked = tuple(sorted(reaching, key=lambda b: (order.get(b.node, 0), b.node)))
    if blocked:
        value = math.inf
    return NetworkBound(
        value=value,
        naive_product=_product(prop.factors),
        per_output=per_output,
        blocked_by=blocked,
        assumed=graph.chain_assumed,
        layers_used=tuple(prop.layers_used),
        notes=tuple(prop.notes),
    )


__all__ = ["NAIVE_LABEL", "Blocker", "LayerBounds", "NetworkBound", "network_bound"]
