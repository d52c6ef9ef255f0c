"""One run of a subgraph as main-graph nodes, so that onnxruntime can measure its tensors.

onnxruntime returns graph outputs only, and the tensors of an If / Loop / Scan body are none.
To measure them, each node on the way down to the body is replaced by one run of its own body:
an If by the branch on the way (whatever its condition says), a Loop by its first iteration
(iteration 0, the initial loop-carried values), a Scan by its first step (the first slice of each
scan input). Nodes the measured tensors do not need are then dropped. The sizes measured are
those of that run: a Loop whose carried shapes change between iterations gets its first
iteration's.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convaudit.loaders.onnx.subgraphs import defined_names, scope_graphs, subgraph_attrs
from convaudit.loaders.onnx.topology import node_inputs


def inline_chain(
    model: onnx.ModelProto, chain: list[tuple[int, str]], wanted: Collection[str]
) -> onnx.ModelProto | None:
    """A copy of ``model`` in which the subgraph reached by ``chain`` ((owner index, attribute)
    per level, as :meth:`Scope.chain` gives it) runs once as part of the main graph, pruned to
    what ``wanted`` needs; its outputs are left for the caller to set. None when this cannot be
    done exactly (a name the body shares with the rest of the model, an op other than If / Loop /
    Scan, an opset-8 Scan)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    opset = next((i.version for i in copy.opset_import if i.domain in ("", "ai.onnx")), 1)
    nodes = list(graph.node)
    position = -1
    offset = 0
    for level, (index, attr) in enumerate(chain):
        position = index if level == 0 else offset + index
        if not 0 <= position < len(nodes):
            return None
        owner = nodes[position]
        body = dict(subgraph_attrs(owner)).get(attr)
        if body is None or owner.domain not in ("", "ai.onnx"):
            return None
        taken = _names_outside(graph, nodes, position)
        if owner.op_type == "If":
            taken -= set(owner.output)  # redefined below from the branch's outputs
        if defined_names(body) & taken:
            return None
        bindings = _bindings(owner, body, opset, level)
        if bindings is None:
            return None
        results = []
        if owner.op_type == "If":
            results = [
                helper.make_node("Identity", [src.name], [dst])
                for src, dst in zip(body.output, owner.output, strict=False)
                if dst
            ]
        graph.initializer.extend(body.initializer)
        nodes = [
            *nodes[:position],
            *bindings,
            *body.node,
            *results,
            *nodes[position + 1 :],
        ]
        offset = position + len(bindings)
    kept = [_copy(node) for node in _needed(nodes, set(wanted))]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.output[:]
    return copy


def _names_outside(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], skip: int) -> set[str]:
    """Every name defined in the model except inside node ``skip`` (its own outputs included)."""
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for i, node in enumerate(nodes):
        if i == skip:
            names.update(o for o in node.output if o)
            continue
        names.update(o for o in node.output if o)
        for _, sub in subgraph_attrs(node):
            for _, inner in scope_graphs(sub):
                names |= defined_names(inner)
    return names


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    """A detached copy: the originals live in the repeated field about to be cleared."""
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))


def _bindings(
    owner: onnx.NodeProto, body: onnx.GraphProto, opset: int, level: int
) -> list[onnx.NodeProto] | None:
    """Nodes that give the body's inputs their first-run values."""
    inputs = [i.name for i in body.input]
    if owner.op_type == "If":
        return [] if not inputs else None
    if owner.op_type == "Loop":
        carried = list(owner.input[2:])
        if len(inputs) != 2 + len(carried):
            return None
        nodes = [
            _constant(inputs[0], np.array(0, np.int64)),
            _constant(inputs[1], np.array(True)),
        ]
        nodes += [
            helper.make_node("Identity", [src], [dst])
            for src, dst in zip(carried, inputs[2:], strict=True)
        ]
        return nodes
    if owner.op_type == "Scan" and opset >= 9:
        attrs = {a.name: helper.get_attribute_value(a) for a in owner.attribute}
        scanned = int(attrs.get("num_scan_inputs", 0))
        states = len(owner.input) - scanned
        if scanned < 1 or states < 0 or len(inputs) != len(owner.input):
            return None
        axes = list(attrs.get("scan_input_axes", [0] * scanned))
        directions = list(attrs.get("scan_input_directions", [0] * scanned))
        if len(axes) != scanned or len(directions) != scanned:
            return None
        nodes = [
            helper.make_node("Identity", [src], [dst])
            for src, dst in zip(owner.input[:states], inputs[:states], strict=True)
        ]
        for k in range(scanned):
            first = f"__convaudit_scan_index_{level}_{k}"
            nodes.append(_constant(first, np.array(-1 if directions[k] else 0, np.int64)))
            nodes.append(
                helper.make_node(
                    "Gather",
                    [owner.input[states + k], first],
                    [inputs[states + k]],
                    axis=int(axes[k]),
                )
            )
        return nodes
    return None


def _needed(nodes: list[onnx.NodeProto], wanted: set[str]) -> list[onnx.NodeProto]:
    """The nodes ``wanted`` depends on, in their order."""
    needed = set(wanted)
    keep: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(node_inputs(node))
    return keep[::-1]
