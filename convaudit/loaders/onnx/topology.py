"""Dependency order of an ONNX graph: topological sort, cycle and dangling-input checks.

If / Loop / Scan bodies may read names of the enclosing graph; those count as the owning
node's inputs.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from pathlib import Path

import onnx

from convaudit.errors import ModelFileError
from convaudit.loaders.onnx.model import subgraphs_of


def outer_references(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from its enclosing scope."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for attr in node.attribute:
            for sub in subgraphs_of(attr):
                used |= outer_references(sub)
        defined.update(node.output)
    return used - defined


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's explicit inputs (repeats kept: Add(x, x) reads x twice) plus the outer names its
    If/Loop/Scan bodies read that are not explicit inputs already."""
    names = [n for n in node.input if n]
    outer: set[str] = set()
    for attr in node.attribute:
        for sub in subgraphs_of(attr):
            outer |= outer_references(sub)
    return names + sorted(outer - set(names))


def topological_order(path: Path, graph: onnx.GraphProto, outer: Collection[str] = ()) -> list[int]:
    """Node indices in a dependency order (stable); ModelFileError on cycles or dangling inputs.

    ``outer``: the names a subgraph may read from its enclosing scopes.
    """
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | set(outer)
    producer: dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = idx
    deps: list[set[int]] = []
    for node in graph.node:
        mine: set[int] = set()
        for name in node_inputs(node):
            if name in producer:
                mine.add(producer[name])
            elif name not in available:
                raise ModelFileError(
                    f"cannot read {path}: node {node.name or node.op_type!r} reads {name!r}, "
                    "which no node, input or initializer provides (dangling input)"
                )
        deps.append(mine)
    users: list[list[int]] = [[] for _ in graph.node]
    for idx, mine in enumerate(deps):
        for d in mine:
            users[d].append(idx)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    heapq.heapify(ready)
    while ready:
        idx = heapq.heappop(ready)
        order.append(idx)
        for user in users[idx]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(graph.node):
        stuck = next(i for i, w in enumerate(waiting) if w > 0)
        node = graph.node[stuck]
        raise ModelFileError(
            f"cannot read {path}: the graph has a cycle (through node {node.name or node.op_type!r})"
        )
    return order
