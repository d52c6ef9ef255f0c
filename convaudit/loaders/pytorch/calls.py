"""Flatten a torch.export (FX) graph or a TorchScript graph into one list of op calls.

Both graph kinds become the same ``OpCall`` records, with every argument bound by name through
the op's schema, so one builder (pytorch_graph) turns either into IR layers and an ir.Graph.
An argument is a ``Data`` (a tensor on the path from the network input), a ``Param`` (a stored
parameter or buffer, by state_dict key), a Python constant, or ``UNKNOWN`` (computed from
something that is neither).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Data:
    name: str
    shape: tuple[int | None, ...] | None = None


@dataclass(frozen=True)
class Param:
    key: str
    transposed: bool = False  # a 2-D parameter seen through .t() / permute([1, 0])


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
#: ops that, applied to a 2-D parameter, hand it on transposed (addmm(b, x, w.t()))
_TRANSPOSES = ("t", "numpy_T", "permute", "transpose")


@dataclass(frozen=True)
class OpCall:
    name: str  # node name in the source graph
    op: str  # aten base name, e.g. "conv2d", "relu"; "unknown" for non-aten data nodes
    target: str  # full op name, for reports (e.g. "aten.conv2d.default", "prim::If")
    args: Mapping[str, Any]
    outputs: tuple[Data, ...]

    def data_inputs(self) -> list[Data]:
        """Data arguments in order, repeats kept (x + x reads x twice)."""
        found: list[Data] = []
        for value in self.args.values():
            items = value if isinstance(value, (list, tuple)) else [value]
            found.extend(v for v in items if isinstance(v, Data))
        return found


@dataclass
class CallGraph:
    calls: list[OpCall] = field(default_factory=list)
    inputs: list[Data] = field(default_factory=list)
    outputs: list[Data] = field(default_factory=list)


def _shape(val: Any) -> tuple[int | None, ...] | None:
    if isinstance(val, (tuple, list)):
        val = val[0] if val else None
    shape = getattr(val, "shape", None)
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in shape)


def _bind(schema: Any, args: list[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    bound: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
        else:
            bound[arg.name] = None
    return bound


def _transposed(op: str, params: list[Any], args: Mapping[str, Any]) -> Param | None:
    """``w.t()`` of a 2-D parameter -> Param(transposed=True)."""
    if op not in _TRANSPOSES or not params or not isinstance(params[0], Param):
        return None
    dims = args.get("dims")
    if op == "permute" and list(dims or []) != [1, 0]:
        return None
    return Param(params[0].key, not params[0].transposed)


def calls_from_exported(ep: Any) -> CallGraph:
    """OpCalls of a ``torch.export.ExportedProgram`` (pre- or post-decomposition aten)."""
    import torch

    sig = ep.graph_signature
    param_of: dict[str, str] = {
        **sig.inputs_to_parameters,
        **sig.inputs_to_buffers,
        **sig.inputs_to_lifted_tensor_constants,
    }
    user_inputs = set(sig.user_inputs)
    values: dict[str, Any] = {}
    out = CallGraph()

    def conv(value: Any) -> Any:
        if isinstance(value, torch.fx.Node):
            return values.get(value.name, UNKNOWN)
        if isinstance(value, (list, tuple)):
            return [conv(v) for v in value]
        return value

    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in param_of:
                values[node.name] = Param(param_of[node.name])
            elif node.name in user_inputs:
                values[node.name] = Data(node.name, _shape(node.meta.get("val")))
                out.inputs.append(values[node.name])
            continue
        if node.op == "output":
            results = node.args[0] if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
            out.outputs = [v for v in (conv(r) for r in results) if isinstance(v, Data)]
            continue
        if node.op != "call_function":
            continue
        args = [conv(a) for a in node.args]
        kwargs = {k: conv(v) for k, v in node.kwargs.items()}
        target = node.target
        if target is operator.getitem:
            # one piece of a multi-output op (split, max_pool2d_with_indices, native BN)
            src = args[0]
            values[node.name] = Data(node.name, _shape(node.meta.get("val")))
            if not isinstance(src, Data):
                values[node.name] = UNKNOWN
                continue
            out.calls.append(
                OpCall(node.name, "getitem", "getitem", {"self": src}, (values[node.name],))
            )
            continue
        schema = getattr(target, "_schema", None)
        op = str(schema.name).split("::")[-1] if schema is not None else "unknown"
        bound = (
            _bind(schema, args, kwargs)
            if schema is not None
            else {f"arg{i}": a for i, a in enumerate(args)}
        )
        call = OpCall(
            node.name, op, str(target), bound, (Data(node.name, _shape(node.meta.get("val"))),)
        )
        if call.data_inputs():
            values[node.name] = call.outputs[0]
            out.calls.append(call)
        else:
            params = [v for v in bound.values() if isinstance(v, Param)]
            values[node.name] = _transposed(op, params, bound) or UNKNOWN
    return out


#: TorchScript container nodes: unpacking hands on pieces of its input, packing concatenates
_CONTAINERS = {
    "prim::ListUnpack": "getitem",
    "prim::TupleUnpack": "getitem",
    "prim::TupleConstruct": "cat",
}


def _carries_tensor(kind: Any) -> bool:
    """Tensor, Optional[Tensor], List[Tensor] or a tuple holding one."""
    import torch

    if kind.isSubtypeOf(torch._C.TensorType.get()):
        return True
    return any(_carries_tensor(inner) for inner in kind.containedTypes())


def _attr_path(value: Any) -> str | None:
    """State-dict key of a ``prim::GetAttr`` chain starting at ``self``."""
    parts: list[str] = []
    while value.node().kind() == "prim::GetAttr":
        parts.append(value.node().s("name"))
        value = next(iter(value.node().inputs()))
    if value.node().kind() != "prim::Param":
        return None
    return ".".join(reversed(parts))


def _block_data_inputs(node: Any, data: Mapping[Any, Data]) -> list[Data]:
    """Data values a control-flow node's blocks use from outside (captured, not passed)."""
    found: list[Data] = []
    for block in node.blocks():
        for inner in block.nodes():
            found += [data[v] for v in inner.inputs() if v in data and data[v] not in found]
            found += [d for d in _block_data_inputs(inner, data) if d not in found]
    return found


def calls_from_torchscript(module: Any) -> CallGraph:
    """OpCalls of a TorchScript module's inlined top-level graph (control flow -> "unknown")."""
    import torch

    graph = module.inlined_graph
    data: dict[Any, Data] = {}
    out = CallGraph()
    for value in list(graph.inputs())[1:]:
        data[value] = Data(value.debugName())
        out.inputs.append(data[value])

    def resolve(value: Any) -> Any:
        if value in data:
            return data[value]
        kind = value.node().kind()
        if kind == "prim::Constant":
            return value.toIValue()
        if kind == "prim::ListConstruct":
            return [resolve(v) for v in value.node().inputs()]
        if kind == "prim::GetAttr":
            key = _attr_path(value)
            return (
                Param(key)
                if key is not None and value.type().isSubtypeOf(torch._C.TensorType.get())
                else UNKNOWN
            )
        if kind.startswith("aten::") and kind.split("::")[1] in _TRANSPOSES:
            inputs = [resolve(v) for v in value.node().inputs()]
            return (
                _transposed(
                    kind.split("::")[1],
                    inputs[:1],
                    {"dims": inputs[1] if len(inputs) > 1 else None},
                )
                or UNKNOWN
            )
        return UNKNOWN

    for node in graph.nodes():
        kind = node.kind()
        if kind in ("prim::Constant", "prim::GetAttr", "prim::ListConstruct"):
            continue
        args = [resolve(v) for v in node.inputs()]
        is_tensor = [_carries_tensor(o.type()) for o in node.outputs()]
        extra = _block_data_inputs(node, data) if kind in ("prim::If", "prim::Loop") else []
        call_args: dict[str, Any]
        schema = node.schema() if kind.startswith("aten::") else "(no schema)"
        if schema != "(no schema)":
            names = [a.name for a in torch._C.parse_schema(schema).arguments]
            call_args = dict(zip(names, args, strict=False))
            op = kind.split("::")[1]
        else:
            call_args = {f"arg{i}": a for i, a in enumerate(args)}
            call_args.update({f"captured{i}": d for i, d in enumerate(extra)})
            op = _CONTAINERS.get(kind, "unknown")
        outs = tuple(
            Data(o.debugName()) for o, t in zip(node.outputs(), is_tensor, strict=True) if t
        )
        name = outs[0].name if outs else kind
        call = OpCall(name, op, kind, call_args, outs)
        if outs and call.data_inputs():
            for o, t in zip(node.outputs(), is_tensor, strict=True):
                if t:
                    data[o] = Data(o.debugName())
            out.calls.append(call)
    returned = list(graph.return_node().inputs())
    while len(returned) == 1 and returned[0].node().kind() in (
        "prim::TupleConstruct",
        "prim::ListConstruct",
    ):
        returned = list(returned[0].node().inputs())
    out.outputs = [data[v] for v in returned if v in data]
    return out
