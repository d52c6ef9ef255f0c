"""Map an aten op call onto ir.NODE_KINDS (everything but conv / dense / batchnorm).

Attributes emitted, per kind (see ir.NODE_KINDS):
- activation: ``fn`` (relu, leaky_relu, prelu, sigmoid, tanh, gelu, silu, hardswish, hardsigmoid,
  elu, celu, selu, softplus, softsign, abs, relu6, clip, softmax, log_softmax, mish); ``alpha``
  for leaky_relu / elu;
  ``slope`` = max |weight| for prelu.
- mul_const: ``value`` = |c| (max |c| for a tensor constant; 1/|c| for a division).
- maxpool / avgpool: ``kernel``, ``stride``, ``padding``, ``dilation`` (max), ``count_include_pad``
  (avg), per-axis tuples (``padding`` symmetric per axis, as in torch); ``ceil_mode``; the
  spatial ``input_size`` when the graph knows it.
- global_avgpool / global_maxpool: ``input_size`` when known. ``mean`` over other or unknown
  dims is also a global_avgpool without ``input_size`` (averaging is <= 1-Lipschitz).
- resize_nearest: ``factor`` per axis (integer factors only; otherwise the node is unknown).
- identity, add, sub, concat: no attributes. An add / mul whose output has more elements than
  a computed input (broadcasting replicates it) is unknown; TorchScript graphs carry no shapes,
  so there an add of two computed tensors is assumed not to broadcast.
- unknown: ``reason``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from convaudit.loaders.pytorch.calls import UNKNOWN, Data, OpCall, Param

Kind = tuple[str, dict[str, Any]]

ACTIVATIONS = {
    "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "gelu": "gelu", "silu": "silu",
    "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "selu": "selu", "softplus": "softplus",
    "relu6": "relu6", "hardtanh": "clip", "clamp": "clip", "clip": "clip", "softmax": "softmax",
    "_softmax": "softmax", "log_softmax": "log_softmax", "mish": "mish", "celu": "celu",
    "abs": "abs", "softsign": "softsign",
}  # fmt: skip
IDENTITY = {
    "view", "reshape", "_reshape_alias", "_unsafe_view", "flatten", "unflatten", "permute",
    "transpose", "t", "contiguous", "clone", "detach", "alias", "squeeze", "unsqueeze", "dropout",
    "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout", "slice", "select",
    "narrow", "getitem", "to", "_to_copy", "type_as", "view_as", "reshape_as", "lift_fresh_copy",
    "movedim", "swapaxes", "_assert_tensor_metadata", "split", "split_with_sizes", "chunk",
    "unbind", "tensor_split", "flip", "roll", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "neg",
}  # fmt: skip


def _value(x: Any, tensors: Mapping[str, Any]) -> float | None:
    """max |x| of a Python number, tensor constant or stored parameter; None if unknown."""
    if isinstance(x, Param):
        x = tensors.get(x.key)
    if isinstance(x, bool) or x is None or x is UNKNOWN or isinstance(x, Data):
        return None
    if isinstance(x, (int, float)):
        return abs(float(x))
    try:
        return float(np.max(np.abs(x.detach().cpu().double().numpy())))
    except (AttributeError, ValueError, TypeError):
        return None


def _nd(call: OpCall) -> int:
    digits = [c for c in call.op if c.isdigit()]
    return int(digits[-1]) if digits else 2


def _tuple(value: Any, nd: int, default: int) -> tuple[int, ...]:
    if value is None or value == []:
        return (default,) * nd
    if isinstance(value, int):
        return (value,) * nd
    items = [int(v) for v in value]
    return tuple(items) if len(items) == nd else (items[0],) * nd


def _pool(call: OpCall) -> Kind:
    a, nd = call.args, _nd(call)
    kernel = _tuple(a.get("kernel_size"), nd, 1)
    attrs: dict[str, Any] = {
        "kernel": kernel,
        "stride": _tuple(a.get("stride"), nd, 0) if a.get("stride") else kernel,
        "padding": _tuple(a.get("padding"), nd, 0),
        "ceil_mode": bool(a.get("ceil_mode", False)),
    }
    size = _spatial(call)
    if size is not None:
        attrs["input_size"] = size
    if "max_pool" in call.op:
        attrs["dilation"] = _tuple(a.get("dilation"), nd, 1)
        return "maxpool", attrs
    attrs["count_include_pad"] = bool(a.get("count_include_pad", True))
    return "avgpool", attrs


def _spatial(call: OpCall) -> tuple[int, ...] | None:
    """Spatial input size of the call's data input, when fully known."""
    shape = call.data_inputs()[0].shape
    if shape is None or len(shape) < 3 or any(s is None for s in shape):
        return None
    return tuple(int(s) for s in shape[2:])  # type: ignore[arg-type]


def _global(kind: str, call: OpCall) -> Kind:
    size = _spatial(call)
    return kind, ({"input_size": size} if size is not None else {})


def _adaptive(call: OpCall) -> Kind:
    size = call.args.get("output_size")
    if size is not None and all(int(s) == 1 for s in size):
        return _global("global_maxpool" if "max" in call.op else "global_avgpool", call)
    return "unknown", {"reason": f"adaptive pooling to {list(size or [])} has no Lipschitz rule"}


def _resize(call: OpCall) -> Kind:
    x, y = _spatial(call), call.outputs[0].shape
    if x is not None and y is not None and None not in y and len(y) == len(x) + 2:
        out = [int(n) for n in y[2:] if n is not None]
        factors = [o // i for i, o in zip(x, out, strict=True)]
        if all(f >= 1 and f * i == o for f, i, o in zip(factors, x, out, strict=True)):
            return "resize_nearest", {"factor": tuple(factors)}
    scales = call.args.get("scale_factors") or [
        call.args.get(k) for k in ("scales_d", "scales_h", "scales_w", "scales")
    ]
    scales = [s for s in (scales or []) if isinstance(s, (int, float))]
    if scales and all(float(s).is_integer() and s >= 1 for s in scales):
        return "resize_nearest", {"factor": tuple(int(s) for s in scales)}
    return "unknown", {"reason": "nearest upsampling by an unknown or non-integer factor"}


def _broadcasts(call: OpCall) -> bool | None:
    """Whether the output has more elements than a data input (the input is replicated, which
    multiplies its Lipschitz constant); None when the shapes are unknown."""
    out = call.outputs[0].shape if call.outputs else None
    shapes = [d.shape for d in call.data_inputs()]
    if out is None or None in out or any(s is None or None in s for s in shapes):
        return None
    return any(math.prod(s) < math.prod(out) for s in shapes)  # type: ignore[arg-type]


def _arith(call: OpCall, tensors: Mapping[str, Any]) -> Kind:
    data = call.data_inputs()
    others = [v for k, v in call.args.items() if k in ("self", "other") and not isinstance(v, Data)]
    if _broadcasts(call):
        return "unknown", {"reason": f"{call.op} broadcasts a computed tensor (replicates it)"}
    if call.op in ("add", "sub"):
        alpha = call.args.get("alpha", 1)
        if len(data) == 2 and alpha == 1:
            return call.op, {}
        if len(data) == 1 and others:
            return "identity", {}  # adding a constant shifts the output: same Lipschitz constant
        return "unknown", {"reason": f"{call.op} with alpha={alpha}"}
    if len(data) == 1 and len(others) == 1:
        c = _value(others[0], tensors)
        if c is not None and call.op == "div":
            return ("mul_const", {"value": 1.0 / c}) if c else ("unknown", {"reason": "x / 0"})
        if c is not None:
            return "mul_const", {"value": c}
    return "unknown", {"reason": f"{call.op} of two computed tensors has no Lipschitz rule"}


def _pad(call: OpCall) -> Kind:
    mode, value = call.args.get("mode", "constant"), call.args.get("value")
    if call.op in ("constant_pad_nd",) or (mode == "constant" and not value):
        return (
            ("identity", {})
            if not value
            else ("unknown", {"reason": "padding with a non-zero constant"})
        )
    return "unknown", {"reason": f"{mode} padding not folded into a conv"}


def _activation(call: OpCall, tensors: Mapping[str, Any]) -> Kind:
    op = call.op.rstrip("_")
    if op == "leaky_relu":
        return "activation", {
            "fn": "leaky_relu",
            "alpha": float(call.args.get("negative_slope", 0.01)),
        }
    if op == "elu":
        return "activation", {"fn": "elu", "alpha": float(call.args.get("alpha", 1.0))}
    if op in ("prelu", "_prelu_kernel"):
        slope = _value(call.args.get("weight"), tensors)
        return (
            ("activation", {"fn": "prelu", "slope": slope})
            if slope is not None
            else ("unknown", {"reason": "PReLU slope unknown"})
        )
    return "activation", {"fn": ACTIVATIONS[op]}


def _guarded(rule: Callable[[], Kind], call: OpCall) -> Kind:
    """Arguments computed at run time (not constants) make the node unknown, not a crash."""
    try:
        return rule()
    except (TypeError, ValueError, IndexError) as exc:
        return "unknown", {"reason": f"{call.target}: arguments not constant ({exc})"}


_RULES: dict[str, Callable[[OpCall, Mapping[str, Any]], Kind]] = {
    **dict.fromkeys(("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"),
                    lambda c, t: _arith(OpCall(c.name, c.op.rstrip("_"), c.target, c.args, c.outputs), t)),
    **dict.fromkeys(("cat", "concat", "concatenate", "stack"), lambda c, t: ("concat", {})),
    **dict.fromkeys(("pad", "constant_pad_nd"), lambda c, t: _pad(c)),
}  # fmt: skip


def _spatial_mean(call: OpCall) -> bool:
    """x.mean(dim=(2, 3)) on an N, C, *spatial tensor of known rank."""
    shape = call.data_inputs()[0].shape
    dims = call.args.get("dim")
    if not shape or not isinstance(dims, (list, tuple)) or len(shape) < 3:
        return False
    return {int(d) % len(shape) for d in dims} == set(range(2, len(shape)))


def classify(call: OpCall, tensors: Mapping[str, Any]) -> Kind:
    """(kind, attrs) for an op call that is not a conv, dense or batchnorm."""
    return _guarded(lambda: _classify(call, tensors), call)


def _classify(call: OpCall, tensors: Mapping[str, Any]) -> Kind:
    op = call.op
    base = op.rstrip("_")
    if op in _RULES:
        return _RULES[op](call, tensors)
    if base in ACTIVATIONS or base in ("leaky_relu", "elu", "prelu", "_prelu_kernel"):
        return _activation(call, tensors)
    if base in IDENTITY:
        return "identity", {}
    if "max_pool" in op or "avg_pool" in op:
        return _adaptive(call) if op.startswith("adaptive") else _pool(call)
    if op == "mean":
        # averaging over any dims is <= 1-Lipschitz, which is what global_avgpool gives without
        # an input size; over exactly the spatial dims of a known shape it is 1/sqrt(n)
        return _global("global_avgpool", call) if _spatial_mean(call) else ("global_avgpool", {})
    if op.startswith("upsample_nearest") or op.startswith("_upsample_nearest_exact"):
        return _resize(call)
    return "unknown", {"reason": f"no Lipschitz rule for {call.target}"}
