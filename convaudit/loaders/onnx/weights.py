"""Resolve a tensor name to a constant value, and remember where that value is stored.

A weight may be an initializer, a ``Constant`` node (Paddle exports), reached through
``Identity`` / ``Cast`` / ``DequantizeLinear``, or computed by a constant subgraph (e.g.
``ConstantOfShape``), which is folded with onnx's reference evaluator. Only the first two,
optionally behind Identity/Cast, can be written back in place; the rest are marked read-only.

Once the input shapes are fixed, ``Shape`` / ``Size`` of a tensor whose shape is known are
constants too, and so is a model input given a value (``--input-value``). A resolver for an
If / Loop / Scan body looks in its own graph first, then in the enclosing graph's resolver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from convaudit.loaders.onnx.model import OnnxFile

#: a folded constant may not be larger than this (ConstantOfShape can ask for anything)
MAX_COMPUTED_BYTES = 2 * 1024**3
#: ops whose result is not a function of their inputs
RANDOM_OPS = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)
#: ... plus ops that hide a subgraph
_NOT_FOLDABLE = RANDOM_OPS | {"If", "Loop", "Scan", "SequenceMap"}
_PASS_THROUGH = frozenset({"Identity", "Cast", "CastLike"})
_SHAPE_OPS = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class Source:
    """Where a constant is stored, for the writer.

    ``kind``: "initializer" | "constant" (a Constant node's ``value`` tensor) when the value can be
    written back; "computed" | "quantized" when it cannot (``reason`` says why).
    ``name``: the initializer name, or the Constant node's output tensor name.
    ``dtype``: the stored numpy dtype name. ``external``: external-data location or "".
    """

    kind: str
    name: str
    dtype: str
    external: str = ""
    reason: str = ""
    scope: str = ""  # the subgraph path holding it ("" for the main graph)

    @property
    def writable(self) -> bool:
        return self.kind in ("initializer", "constant")


@dataclass(frozen=True)
class Resolved:
    value: np.ndarray
    source: Source


class ConstantResolver:
    """Find constant values in one graph (memoised): the main graph, or a subgraph whose
    resolver falls back on ``parent`` for the names it reads from the enclosing scope.

    ``values``: model inputs given a value (main graph only).
    """

    def __init__(
        self,
        onnx_file: OnnxFile,
        shapes: Mapping[str, tuple[int | None, ...]],
        *,
        graph: onnx.GraphProto | None = None,
        parent: ConstantResolver | None = None,
        values: Mapping[str, np.ndarray] | None = None,
        scope: str = "",
    ):
        self.file = onnx_file
        graph = onnx_file.graph if graph is None else graph
        self.initializers = {t.name: t for t in graph.initializer}
        # names fed at run time: the model's inputs, or a Loop / Scan body's own inputs
        self.data_inputs = {i.name for i in graph.input} - set(self.initializers)
        self.producers: dict[str, onnx.NodeProto] = {}
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producers[out] = node
        self.shapes = shapes
        self.parent = parent
        self.values = dict(values or {})
        self.scope = scope
        self._cache: dict[str, Resolved | None] = {}
        self._why: dict[str, str] = {}
        self._opsets = list(onnx_file.model.opset_import)

    def is_constant(self, name: str) -> bool:
        return self.resolve(name) is not None

    def resolve(self, name: str) -> Resolved | None:
        """The constant value of tensor ``name``, or None when it depends on the inputs."""
        if name in self._cache:
            return self._cache[name]
        self._cache[name] = None  # guards against cycles while resolving
        result = self._resolve(name)
        self._cache[name] = result
        return result

    def why_not(self, name: str) -> str:
        """Why ``name`` has no constant value (after resolve returned None)."""
        return self._why.get(name, "it depends on the model's input")

    def _resolve(self, name: str) -> Resolved | None:
        if name in self.initializers:
            tensor = self.initializers[name]
            value = self.file.array(tensor)
            ref = self.file.external.get(id(tensor))
            location = ref.location if ref else ""
            return Resolved(
                value, Source("initializer", name, _dtype_name(value), location, scope=self.scope)
            )
        if name in self.values:
            value = np.asarray(self.values[name])
            reason = "a model input given with --input-value"
            return Resolved(value, Source("input", name, _dtype_name(value), reason=reason))
        node = self.producers.get(name)
        if node is None:
            if self.parent is not None and name not in self.data_inputs:
                found = self.parent.resolve(name)
                if found is None:
                    self._why[name] = self.parent.why_not(name)
                return found
            return None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constant = self._constant_node_value(node)
            if constant is None:
                return None
            src = Source("constant", name, _dtype_name(constant), scope=self.scope)
            if not _has_tensor_value(node):
                src = Source(
                    "computed",
                    name,
                    src.dtype,
                    reason="a Constant node without a tensor value",
                    scope=self.scope,
                )
            return Resolved(constant, src)
        if node.op_type in _SHAPE_OPS and node.domain in ("", "ai.onnx") and node.input:
            return self._shape_value(node, name)
        if node.op_type in _NOT_FOLDABLE or node.domain not in ("", "ai.onnx"):
            return None
        inputs = [self.resolve(i) if i else None for i in node.input]
        missing = next(
            (i for r, i in zip(inputs, node.input, strict=True) if i and r is None), None
        )
        if missing is not None:
            self._why[name] = self.why_not(missing)
            return None
        if node.op_type in _PASS_THROUGH and len(node.output) == 1:
            return self._pass_through(node, inputs[0], inputs[1:])
        folded = self._fold(node, name, inputs)
        if folded is None:
            return None
        origin = inputs[0].source.name if inputs and inputs[0] else name
        if node.op_type == "DequantizeLinear":
            src = Source(
                "quantized",
                origin,
                _dtype_name(inputs[0].value) if inputs[0] else "",
                reason="a quantised weight (DequantizeLinear)",
            )
        else:
            src = Source(
                "computed",
                name,
                _dtype_name(folded),
                reason=f"computed by a constant {node.op_type} subgraph",
            )
        return Resolved(folded, src)

    def _shape_value(self, node: onnx.NodeProto, name: str) -> Resolved | None:
        """Shape / Size of a tensor whose shape is fully known (the input shapes are fixed)."""
        shape = self.shapes.get(node.input[0])
        if shape is None or any(d is None for d in shape):
            self._why[name] = f"the shape its {node.op_type} reads is not known"
            return None
        dims = np.array([int(d) for d in shape if d is not None], np.int64)
        if node.op_type == "Size":
            value = np.array(math.prod(int(d) for d in dims), np.int64)
        else:
            attributes = {a.name: a.i for a in node.attribute if a.name in ("start", "end")}
            value = dims[attributes.get("start", 0) : attributes.get("end", len(dims))]
        reason = f"computed from a tensor's {node.op_type.lower()}"
        return Resolved(value, Source("computed", name, "int64", reason=reason))

    def _pass_through(
        self, node: onnx.NodeProto, first: Resolved | None, rest: list[Resolved | None]
    ) -> Resolved | None:
        assert first is not None
        value = first.value
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to is None:
                return None
            value = value.astype(helper.tensor_dtype_to_np_dtype(to))
        elif node.op_type == "CastLike" and rest and rest[0] is not None:
            value = value.astype(rest[0].value.dtype)
        return Resolved(value, first.source)

    def _constant_node_value(self, node: onnx.NodeProto) -> np.ndarray | None:
        for attr in node.attribute:
            if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                return self.file.array(attr.t)
            if attr.name in ("value_float", "value_int"):
                return np.asarray(helper.get_attribute_value(attr))
            if attr.name in ("value_floats", "value_ints"):
                return np.asarray(list(helper.get_attribute_value(attr)))
        return None

    def _fold(
        self, node: onnx.NodeProto, name: str, inputs: list[Resolved | None]
    ) -> np.ndarray | None:
        if not self._small_enough(node, name, inputs):
            self._why.setdefault(name, f"its {node.op_type} is too large to fold (over 2 GiB)")
            return None
        from onnx.reference import ReferenceEvaluator

        feeds: dict[str, np.ndarray] = {
            i: r.value for i, r in zip(node.input, inputs, strict=True) if i and r is not None
        }
        graph = helper.make_graph(
            [node],
            "fold",
            [
                helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                for k, v in feeds.items()
            ],
            [helper.make_empty_tensor_value_info(o) for o in node.output if o],
        )
        model = helper.make_model(graph, opset_imports=self._opsets)
        try:
            outputs: list[Any] = list(ReferenceEvaluator(model).run(None, feeds))
        except Exception:  # an op the reference evaluator cannot run: treat as not constant
            self._why[name] = f"onnx's reference evaluator cannot fold its {node.op_type}"
            return None
        wanted = [o for o in node.output if o].index(name)
        return np.asarray(outputs[wanted])

    def _small_enough(self, node: onnx.NodeProto, name: str, inputs: list[Resolved | None]) -> bool:
        if node.op_type == "ConstantOfShape" and inputs and inputs[0] is not None:
            dims = [int(d) for d in np.asarray(inputs[0].value).ravel()]
            if any(d < 0 for d in dims):
                self._why[name] = f"its ConstantOfShape has a negative dimension {dims}"
                return False
            return math.prod(dims) * 8 <= MAX_COMPUTED_BYTES
        shape = self.shapes.get(name)
        if shape is not None and all(d is not None for d in shape):
            return math.prod(d for d in shape if d is not None) * 8 <= MAX_COMPUTED_BYTES
        return node.op_type not in ("Expand", "Tile", "Range", "Resize", "Upsample")


def _has_tensor_value(node: onnx.NodeProto) -> bool:
    return any(a.name == "value" and a.type == onnx.AttributeProto.TENSOR for a in node.attribute)


def _dtype_name(value: np.ndarray) -> str:
    return np.asarray(value).dtype.name
