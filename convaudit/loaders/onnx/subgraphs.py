"""The graphs of an ONNX model as scopes: the main graph and every If / Loop / Scan body.

A :class:`Scope` is one graph with what the readers need to read it on its own: its nodes'
dependency order, the tensor shapes known in it (its own first, then its enclosing scopes'),
a constant resolver (its own initializers and Constant nodes, then the enclosing scope's), its
tensors' consumers and its outputs.

A scope's ``path`` names it by its branch path: ``<owner node>/<attribute>``, repeated at each
level, e.g. ``If_0/then_branch`` or ``If_0/else_branch/Loop_3/body``. Layers inside are named
``<path>/<node name>``. The main graph's path is "", so its layer names are the node names.
"""

from __future__ import annotations

from collections import ChainMap, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from convaudit.loaders.onnx.model import OnnxFile
from convaudit.loaders.onnx.nodes import layer_name
from convaudit.loaders.onnx.topology import node_inputs, topological_order
from convaudit.loaders.onnx.weights import ConstantResolver

Shape = tuple[int | None, ...]


def subgraph_attrs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) for each subgraph a node holds (``body[i]`` in a GRAPHS list),
    an If's then_branch before its else_branch (onnx stores attributes sorted by name)."""
    found: list[tuple[str, onnx.GraphProto]] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            found.append((attr.name, attr.g))
        elif attr.type == onnx.AttributeProto.GRAPHS:
            found.extend((f"{attr.name}[{i}]", g) for i, g in enumerate(attr.graphs))
    return sorted(found, key=lambda item: item[0] != "then_branch")


def child_path(parent: str, node: onnx.NodeProto, index: int, attr: str) -> str:
    owner = layer_name(node, index)
    return f"{parent}/{owner}/{attr}" if parent else f"{owner}/{attr}"


def scope_graphs(graph: onnx.GraphProto, path: str = "") -> Iterator[tuple[str, onnx.GraphProto]]:
    """(path, graph) of the graph and of every subgraph inside it, outermost first.

    Depth is bounded by the reader (MAX_SUBGRAPH_DEPTH), so the recursion is too.
    """
    yield path, graph
    for index, node in enumerate(graph.node):
        for attr, sub in subgraph_attrs(node):
            yield from scope_graphs(sub, child_path(path, node, index, attr))


def defined_names(graph: onnx.GraphProto) -> set[str]:
    """Names a graph defines itself: its inputs, initializers and node outputs."""
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(o for o in node.output if o)
    return names


@dataclass
class Scope:
    """One graph of the model, ready to read (see the module docstring)."""

    graph: onnx.GraphProto
    path: str
    order: list[int]
    shapes: ChainMap[str, Shape]
    types: ChainMap[str, int]
    resolver: ConstantResolver
    consumers: dict[str, list[int]]
    outputs: set[str]
    parent: Scope | None = None
    owner_index: int = -1  # the If / Loop / Scan node's index in the parent graph
    attr: str = ""  # then_branch / else_branch / body
    children: dict[tuple[int, str], Scope] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"{self.path}/" if self.path else ""

    @property
    def owner(self) -> onnx.NodeProto | None:
        return None if self.parent is None else self.parent.graph.node[self.owner_index]

    @property
    def local_shapes(self) -> dict[str, Shape]:
        return self.shapes.maps[0]  # type: ignore[return-value]

    def name(self, node: onnx.NodeProto, index: int) -> str:
        """The layer / graph-node name of ``node`` (index ``index`` in this scope's graph)."""
        return self.prefix + layer_name(node, index)

    def chain(self) -> list[tuple[int, str]]:
        """(owner index, attribute) of each level from the main graph down to this scope."""
        levels: list[tuple[int, str]] = []
        scope: Scope | None = self
        while scope is not None and scope.parent is not None:
            levels.append((scope.owner_index, scope.attr))
            scope = scope.parent
        return levels[::-1]

    def walk(self) -> Iterator[Scope]:
        """This scope and every scope inside it, outermost first, in node order."""
        yield self
        for child in self.children.values():
            yield from child.walk()


def consumers_of(graph: onnx.GraphProto) -> dict[str, list[int]]:
    users: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(graph.node):
        for name in dict.fromkeys(node_inputs(node)):
            users[name].append(index)
    return users


def open_scopes(
    onnx_file: OnnxFile,
    order: list[int],
    shapes: Mapping[str, dict[str, Shape]],
    types: Mapping[str, dict[str, int]],
    values: Mapping[str, np.ndarray],
) -> Scope:
    """The main graph's scope with every subgraph's scope below it.

    ``shapes`` / ``types``: the known shapes and element types by scope path (``shapes.Inferred``);
    the scopes keep these dicts, so sizes added to them later are seen by every reader.
    """
    graph = onnx_file.graph
    main_shapes = ChainMap(shapes.get("", {}))
    main = Scope(
        graph=graph,
        path="",
        order=order,
        shapes=main_shapes,
        types=ChainMap(types.get("", {})),
        resolver=ConstantResolver(onnx_file, main_shapes, values=values),
        consumers=consumers_of(graph),
        outputs={o.name for o in graph.output},
    )
    _open_children(onnx_file, main, shapes, types, defined_names(graph))
    return main


def _open_children(
    onnx_file: OnnxFile,
    scope: Scope,
    shapes: Mapping[str, dict[str, Shape]],
    types: Mapping[str, dict[str, int]],
    outer: set[str],
) -> None:
    for index, node in enumerate(scope.graph.node):
        for attr, sub in subgraph_attrs(node):
            path = child_path(scope.path, node, index, attr)
            local_shapes = scope.shapes.new_child(shapes.get(path, {}))
            child = Scope(
                graph=sub,
                path=path,
                order=topological_order(Path(onnx_file.path), sub, outer),
                shapes=local_shapes,
                types=scope.types.new_child(types.get(path, {})),
                resolver=ConstantResolver(
                    onnx_file, local_shapes, graph=sub, parent=scope.resolver, scope=path
                ),
                consumers=consumers_of(sub),
                outputs={o.name for o in sub.output},
                parent=scope,
                owner_index=index,
                attr=attr,
            )
            scope.children[(index, attr)] = child
            _open_children(onnx_file, child, shapes, types, outer | defined_names(sub))


def live_branch(resolver: ConstantResolver, node: onnx.NodeProto) -> str | None:
    """``then_branch`` or ``else_branch`` when an If's condition is a constant (given the input
    shapes and the input values), else None."""
    if node.op_type != "If" or node.domain not in ("", "ai.onnx") or not node.input:
        return None
    found = resolver.resolve(node.input[0])
    if found is None or np.size(found.value) != 1:
        return None
    return "then_branch" if bool(np.asarray(found.value).ravel()[0]) else "else_branch"
