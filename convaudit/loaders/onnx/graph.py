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
- ``unknown``: anything else (``reason`` says why where it is a recognised op).
"""

from __future__ import annotations

from collections.abc import Mapping

from convaudit.ir import Graph, GraphNode
from convaudit.loaders.onnx.graph_ops import NodeClassifier
from convaudit.loaders.onnx.layers import Extracted
from convaudit.loaders.onnx.model import OnnxFile
from convaudit.loaders.onnx.nodes import layer_name
from convaudit.loaders.onnx.patterns import expand_fused_conv, find_patterns
from convaudit.loaders.onnx.shapes import real_inputs
from convaudit.loaders.onnx.topology import node_inputs
from convaudit.loaders.onnx.weights import RANDOM_OPS, ConstantResolver

#: ops whose output is a constant once the input shapes are fixed
_SHAPE_OPS = frozenset({"Shape", "Size"})

Shapes = Mapping[str, tuple[int | None, ...]]


def static_tensors(onnx_file: OnnxFile, order: list[int]) -> set[str]:
    """Tensors whose value does not depend on the input data (input shapes being fixed)."""
    graph = onnx_file.graph
    static = {t.name for t in graph.initializer} | {""}
    static -= {i.name for i in real_inputs(graph)}
    for idx in order:
        node = graph.node[idx]
        if node.op_type in RANDOM_OPS:
            continue
        if node.op_type in _SHAPE_OPS or all(i in static for i in node_inputs(node)):
            static.update(node.output)
    return static


def build_graph(
    onnx_file: OnnxFile,
    order: list[int],
    resolver: ConstantResolver,
    shapes: Shapes,
    extracted: Extracted,
) -> Graph:
    graph = onnx_file.graph
    static = static_tensors(onnx_file, order)
    fused, absorbed = find_patterns(graph, order, resolver, static)
    classify = NodeClassifier(onnx_file, resolver, shapes, extracted, static)
    nodes: list[GraphNode] = []
    for idx in order:
        node = graph.node[idx]
        if idx in absorbed or all(o in static for o in node.output if o):
            continue
        if idx in fused:
            nodes.append(fused[idx])
            continue
        if node.op_type == "FusedConv" and idx in extracted.node_layer:
            nodes.extend(expand_fused_conv(node, extracted.node_layer[idx], static))
            continue
        data_in = tuple(i for i in node_inputs(node) if i not in static)
        try:
            kind, extra = classify(idx, node, data_in)
        except (TypeError, ValueError, KeyError, IndexError) as exc:  # malformed attributes
            kind, extra = "unknown", {"reason": f"malformed attributes ({exc})"}
        outputs = tuple(o for o in node.output if o)
        if node.op_type in ("Dropout", "MaxPool", "BatchNormalization"):
            outputs = outputs[:1]  # mask / indices / training statistics carry no signal
        name = extracted.node_layer.get(idx) or layer_name(node, idx)
        nodes.append(GraphNode(name, kind, node.op_type, data_in, outputs, extra))
    return Graph(
        inputs=tuple(i.name for i in real_inputs(graph)),
        outputs=tuple(o.name for o in graph.output),
        nodes=tuple(nodes),
    )
