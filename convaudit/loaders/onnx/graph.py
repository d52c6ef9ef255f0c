"""The ONNX node graph as an ir.Graph, for the whole-network Lipschitz bound.

Edges are tensor names; ``Graph.inputs`` are the real (fed) inputs, ``Graph.outputs`` the
graph outputs; nodes are in topological order. Constant tensors carry no signal (their
Lipschitz constant is 0), so they are left out: nodes that only compute constants (weights,
``Shape``-derived sizes; the input shapes are fixed) are omitted, and ``GraphNode.inputs`` lists
only the data inputs (a repeated input is repeated: Add(x, x) has inputs (x, x)). An ``add``
with one data input is a shift (L unchanged).

Kinds and attributes emitted (``GraphNode.op`` keeps the ONNX op, or ``"pattern:<ops>"`` for a
fused activation):

- ``conv`` / ``dense``: ``layer`` = the layer name in ModelIR.layers. onnxruntime's FusedConv
  becomes a ``conv`` node (output ``<out>/conv``), an ``add`` when it sums a Z input, then its
  ``activation``.
- ``batchnorm``: ``folded_into`` = conv name (that ConvLayer has the BN in ``bn``), or
  ``scale`` = float64 array gamma / sqrt(var + eps) per channel.
- ``activation``: ``fn`` in relu, leaky_relu (``alpha``), prelu (``slope`` array), sigmoid,
  tanh, gelu (``approximate``: "none"/"tanh"), silu, mish, hardswish, hardsigmoid (``alpha``,
  ``beta``), elu (``alpha``), selu (``alpha``, ``gamma``), celu (``alpha``), softplus, softsign,
  clip (``min``, ``max``, None when absent or not a scalar; also Max / Min with a constant),
  softmax / log_softmax (``axis``), abs.
  silu, mish, gelu and hardswish are also recognised in their decomposed forms
  (x*Sigmoid(x), x*Tanh(Softplus(x)), the erf form of GELU, x*HardSigmoid(x) and
  x*Clip(x+3, 0, 6)/6).
- ``add`` (Add, Sum), ``sub``, ``concat`` (``axis``). Add / Sub / Mul that broadcast a data input
  to a larger shape (copying it) are ``unknown``.
- ``mul_const``: ``value`` = max|c| for Mul by c (and Neg, value 1), 1/min|c| for Div by c.
- ``maxpool``: ``kernel``, ``stride``, ``dilation``, ``padding`` ((before, after) per axis),
  ``ceil_mode``, ``input_size`` (spatial, or None).
- ``avgpool``: ``kernel``, ``stride``, ``dilation``, ``padding``, ``count_include_pad``,
  ``ceil_mode``, ``input_size``.
- ``global_avgpool`` / ``global_maxpool`` (also ReduceMean / ReduceMax over all spatial axes):
  ``input_size`` (spatial, or None).
- ``identity``: Reshape, Flatten, Transpose, Identity, Dropout (eval), Squeeze, Unsqueeze, Slice,
  Split, DepthToSpace, SpaceToDepth, float Cast, constant-zero Pad: each is a permutation,
  selection or zero-extension of its input, so norm-nonincreasing.
- ``resize_nearest``: ``factor`` = per spatial axis, the most times one input element is copied
  (the integer scale for the usual modes); the operator norm is sqrt(prod(factor)).
- ``unknown``: anything else (``reason`` says why where it is a recognised op): a node of a
  domain convaudit does not know, a Loop or Scan.

An ``If`` is replaced by its branches' nodes (their tensors renamed ``<branch path>/<name>``,
so no name of one scope can stand for another's). When its condition is constant (given the
input shapes and ``--input-value`` values), only the live branch is kept, and an ``identity``
maps its outputs to the If's. Otherwise both are kept and a ``select`` node per output takes
``(condition, then output, else output)``: the larger of the two branches' bounds, sound when the
condition does not depend on the float inputs. ``Graph.parameters`` lists the integer / bool
inputs without a given value: the bound treats them as fixed (it holds for each of their values).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx

from convaudit.ir import Graph, GraphNode
from convaudit.loaders.onnx.graph_ops import NodeClassifier
from convaudit.loaders.onnx.inputs import real_inputs
from convaudit.loaders.onnx.layers import Extracted
from convaudit.loaders.onnx.model import OnnxFile
from convaudit.loaders.onnx.patterns import expand_fused_conv, find_patterns
from convaudit.loaders.onnx.subgraphs import Scope, defined_names, live_branch
from convaudit.loaders.onnx.topology import node_inputs
from convaudit.loaders.onnx.weights import RANDOM_OPS

#: ops whose output is a constant once the input shapes are fixed
_SHAPE_OPS = frozenset({"Shape", "Size"})
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}

Shapes = Mapping[str, tuple[int | None, ...]]


def static_tensors(
    graph: onnx.GraphProto,
    order: list[int],
    outer: set[str] | frozenset[str] = frozenset(),
    values: Mapping[str, object] | None = None,
) -> set[str]:
    """Tensors whose value does not depend on the input data (input shapes being fixed).

    ``outer``: the static names of the enclosing scopes; ``values``: inputs given a value.
    """
    static = {t.name for t in graph.initializer} | {""} | set(outer)
    static -= {i.name for i in real_inputs(graph)}
    static |= set(values or ())
    for idx in order:
        node = graph.node[idx]
        if node.op_type in RANDOM_OPS:
            continue
        if node.op_type in _SHAPE_OPS or all(i in static for i in node_inputs(node)):
            static.update(node.output)
    return static


class _Names:
    """Tensor names of one scope as the ir.Graph spells them: the main graph's as they are, a
    subgraph's own as ``<path>/<name>``; a name read from an enclosing scope is that scope's."""

    def __init__(self, scope: Scope, parent: _Names | None = None) -> None:
        self.scope = scope
        self.parent = parent
        self.local = defined_names(scope.graph)

    def __call__(self, name: str) -> str:
        found: _Names | None = self
        while found is not None:
            if name in found.local:
                return found.scope.prefix + name
            found = found.parent
        return self.scope.prefix + name  # defined nowhere: a tensor of this scope's own making


class _Builder:
    def __init__(self, onnx_file: OnnxFile, extracted: Extracted) -> None:
        self.file = onnx_file
        self.extracted = extracted
        self.notes: list[str] = []

    def scope_nodes(self, scope: Scope, names: _Names, static: set[str]) -> list[GraphNode]:
        graph = scope.graph
        extracted = self.extracted.of(scope.path)
        fused, absorbed = find_patterns(graph, scope.order, scope.resolver, static)
        classify = NodeClassifier(self.file, scope.resolver, scope.shapes, extracted, static)
        nodes: list[GraphNode] = []
        for idx in scope.order:
            node = graph.node[idx]
            if idx in absorbed or all(o in static for o in node.output if o):
                continue
            if idx in fused:
                nodes.append(self._renamed(fused[idx], scope, names))
                continue
            if node.op_type == "FusedConv" and idx in extracted.node_layer:
                expanded = expand_fused_conv(node, extracted.node_layer[idx], static)
                nodes.extend(self._renamed(n, scope, names) for n in expanded)
                continue
            if node.op_type == "If" and node.domain in ("", "ai.onnx"):
                branched = self._if_nodes(scope, idx, node, names, static)
                if branched is not None:
                    nodes.extend(branched)
                    continue
            data_in = tuple(i for i in node_inputs(node) if i not in static)
            try:
                kind, extra = classify(idx, node, data_in)
            except (TypeError, ValueError, KeyError, IndexError) as exc:  # malformed attributes
                kind, extra = "unknown", {"reason": f"malformed attributes ({exc})"}
            outputs = tuple(o for o in node.output if o)
            if node.op_type in ("Dropout", "MaxPool", "BatchNormalization"):
                outputs = outputs[:1]  # mask / indices / training statistics carry no signal
            name = extracted.node_layer.get(idx) or scope.name(node, idx)
            nodes.append(
                GraphNode(
                    name,
                    kind,
                    node.op_type,
                    tuple(map(names, data_in)),
                    tuple(map(names, outputs)),
                    extra,
                )
            )
        return nodes

    def _renamed(self, node: GraphNode, scope: Scope, names: _Names) -> GraphNode:
        if scope.parent is None:
            return node
        name = node.name if node.name.startswith(scope.prefix) else scope.prefix + node.name
        return dataclasses.replace(
            node,
            name=name,
            inputs=tuple(map(names, node.inputs)),
            outputs=tuple(map(names, node.outputs)),
        )

    def _if_nodes(
        self, scope: Scope, idx: int, node: onnx.NodeProto, names: _Names, static: set[str]
    ) -> list[GraphNode] | None:
        """The If's branches, inlined (see the module docstring); None for a malformed If."""
        branches = {
            attr: scope.children.get((idx, attr)) for attr in ("then_branch", "else_branch")
        }
        then, other = branches["then_branch"], branches["else_branch"]
        if then is None or other is None or not node.input:
            return None
        live = live_branch(scope.resolver, node)
        name = scope.name(node, idx)
        outs: dict[str, list[str]] = {}
        nodes: list[GraphNode] = []
        for attr, child in branches.items():
            if live is not None and attr != live:
                continue
            assert child is not None
            inner = _Names(child, names)
            child_static = static_tensors(child.graph, child.order, static)
            nodes.extend(self.scope_nodes(child, inner, child_static))
            outs[attr] = [inner(o.name) for o in child.graph.output]
        if live is not None:
            self.notes.append(
                f"{name}: its condition is constant for these inputs, so the graph bound "
                f"follows its {live} only"
            )
        for i, out in enumerate(node.output):
            if not out:
                continue
            if any(i >= len(o) for o in outs.values()):
                return None
            if live is not None:
                inputs: tuple[str, ...] = (outs[live][i],)
                nodes.append(GraphNode(name, "identity", "If", inputs, (names(out),), {}))
            else:
                inputs = (names(node.input[0]), outs["then_branch"][i], outs["else_branch"][i])
                nodes.append(GraphNode(name, "select", "If", inputs, (names(out),), {}))
        return nodes


def build_graph(
    onnx_file: OnnxFile,
    main: Scope,
    extracted: Extracted,
    values: Mapping[str, np.ndarray] | None = None,
) -> tuple[Graph, list[str]]:
    """The model's ir.Graph, and notes about the branches it follows."""
    graph = onnx_file.graph
    static = static_tensors(graph, main.order, values=values)
    builder = _Builder(onnx_file, extracted)
    nodes = builder.scope_nodes(main, _Names(main), static)
    inputs = real_inputs(graph)
    parameters = tuple(
        i.name
        for i in inputs
        if i.name not in (values or {}) and i.type.tensor_type.elem_type not in _FLOAT_TYPES
    )
    result = Graph(
        inputs=tuple(i.name for i in inputs),
        outputs=tuple(o.name for o in graph.output),
        nodes=tuple(nodes),
        parameters=parameters,
    )
    return result, builder.notes
