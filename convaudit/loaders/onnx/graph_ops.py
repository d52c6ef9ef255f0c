"""What each ONNX node is for the Lipschitz bound: its ir.NODE_KINDS kind and attributes.

The vocabulary and the attributes are documented in :mod:`convaudit.loaders.onnx.graph`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from convaudit.ir import same_padding
from convaudit.loaders.onnx.layers import CONV_OPS, DENSE_OPS, Extracted
from convaudit.loaders.onnx.model import OnnxFile
from convaudit.loaders.onnx.nodes import attrs, text
from convaudit.loaders.onnx.resize import resize_factor
from convaudit.loaders.onnx.weights import ConstantResolver

Shapes = Mapping[str, tuple[int | None, ...]]

_ACTIVATIONS = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "HardSwish": "hardswish",
    "Softplus": "softplus",
    "Softsign": "softsign",
    "Mish": "mish",
    "Abs": "abs",
}
_ACTIVATION_ATTRS: dict[str, tuple[str, dict[str, float]]] = {
    "LeakyRelu": ("leaky_relu", {"alpha": 0.01}),
    "HardSigmoid": ("hardsigmoid", {"alpha": 0.2, "beta": 0.5}),
    "Elu": ("elu", {"alpha": 1.0}),
    "Celu": ("celu", {"alpha": 1.0}),
    "Selu": ("selu", {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
}
_IDENTITY = frozenset(
    {
        "Reshape",
        "Flatten",
        "Transpose",
        "Identity",
        "Dropout",
        "Squeeze",
        "Unsqueeze",
        "Slice",
        "Split",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


class NodeClassifier:
    def __init__(
        self,
        onnx_file: OnnxFile,
        resolver: ConstantResolver,
        shapes: Shapes,
        extracted: Extracted,
        static: set[str],
    ):
        self.file = onnx_file
        self.resolver = resolver
        self.shapes = shapes
        self.extracted = extracted
        self.static = static

    def __call__(
        self, idx: int, node: onnx.NodeProto, data_in: tuple[str, ...]
    ) -> tuple[str, dict[str, Any]]:
        op = node.op_type
        a = attrs(node)
        if node.domain not in ("", "ai.onnx"):
            return "unknown", {"reason": f"op from domain {node.domain!r}"}
        if op in ("Loop", "Scan"):
            return "unknown", {
                "reason": "no rule for a loop (the layers of its body are analysed, the loop "
                "as a whole is not bounded)"
            }
        if op in CONV_OPS or op in DENSE_OPS:
            if idx in self.extracted.node_layer:
                return ("conv" if op in CONV_OPS else "dense"), {
                    "layer": self.extracted.node_layer[idx]
                }
            return "unknown", {"reason": "not an analysable layer (see the skipped layers)"}
        if op == "BatchNormalization":
            return self._batchnorm(idx, node, a)
        if op in _ACTIVATIONS:
            return "activation", {"fn": _ACTIVATIONS[op]}
        if op in _ACTIVATION_ATTRS:
            fn, defaults = _ACTIVATION_ATTRS[op]
            return "activation", {"fn": fn, **{k: float(a.get(k, v)) for k, v in defaults.items()}}
        if op == "Gelu":
            approximate = a.get("approximate", b"none")
            return "activation", {"fn": "gelu", "approximate": text(approximate)}
        if op in ("Softmax", "LogSoftmax"):
            axis = int(a.get("axis", -1 if self.file.opset() >= 13 else 1))
            return "activation", {
                "fn": "softmax" if op == "Softmax" else "log_softmax",
                "axis": axis,
            }
        if op == "PRelu":
            slope = self._const(node, 1)
            if slope is None:
                return "unknown", {"reason": "PRelu slope is not a constant"}
            return "activation", {"fn": "prelu", "slope": np.asarray(slope, np.float64)}
        if op == "Clip":
            return self._clip(node, a)
        if op in ("Max", "Min") and len(data_in) == 1 and self._same_shapes(node, data_in):
            # max(x, c) / min(x, c) with a constant c: a clip, 1-Lipschitz elementwise
            c = next(
                (self._const(node, i) for i, n in enumerate(node.input) if n not in data_in), None
            )
            value = float(c.ravel()[0]) if c is not None and c.size == 1 else None
            return "activation", {
                "fn": "clip",
                "min": value if op == "Max" else None,
                "max": value if op == "Min" else None,
            }
        if op in ("Add", "Sum", "Sub"):
            if not self._same_shapes(node, data_in):
                return "unknown", {"reason": f"{op} broadcasts an input to a larger shape"}
            return ("sub" if op == "Sub" else "add"), {}
        if op == "Concat":
            return "concat", {"axis": int(a.get("axis", 1))}
        if op in ("Mul", "Div", "Neg"):
            return self._scale(node, data_in)
        if op in ("MaxPool", "AveragePool"):
            return self._pool(node, a)
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            kind = "global_avgpool" if op == "GlobalAveragePool" else "global_maxpool"
            return kind, {"input_size": self._spatial_size(node)}
        if op in ("ReduceMean", "ReduceMax"):
            return self._reduce(node, a)
        if op == "Dropout" and self._training_dropout(node, a):
            return "unknown", {"reason": "Dropout in training mode is random"}
        if op in _IDENTITY:
            return "identity", {}
        if op == "Cast":
            if int(a.get("to", 0)) in _FLOAT_TYPES:
                return "identity", {}
            return "unknown", {"reason": "Cast to a non-float type"}
        if op == "Pad":
            return self._pad(node, a)
        if op in ("Resize", "Upsample"):
            factor = resize_factor(node, a, self.file.opset(), self.shapes, self._const)
            if factor is None:
                return "unknown", {"reason": f"{op} is not a nearest resize with known sizes"}
            return "resize_nearest", {"factor": factor}
        return "unknown", {}

    def _const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        found = self.resolver.resolve(node.input[index])
        return None if found is None else np.asarray(found.value)

    def _batchnorm(
        self, idx: int, node: onnx.NodeProto, a: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if idx in self.extracted.folded_bn:
            return "batchnorm", {"folded_into": self.extracted.folded_bn[idx]}
        params = [self._const(node, i) for i in (1, 4)]
        if a.get("training_mode", 0) or params[0] is None or params[1] is None:
            return "unknown", {
                "reason": "BatchNormalization in training mode or with data statistics"
            }
        gamma, var = (np.asarray(p, np.float64) for p in params)
        return "batchnorm", {"scale": gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))}

    def _clip(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if "min" in a or "max" in a:  # opset < 11 keeps the bounds as attributes
            return "activation", {"fn": "clip", "min": a.get("min"), "max": a.get("max")}
        bounds = []
        for i in (1, 2):
            value = self._const(node, i)
            bounds.append(None if value is None else float(np.asarray(value).ravel()[0]))
        return "activation", {"fn": "clip", "min": bounds[0], "max": bounds[1]}

    def _scale(self, node: onnx.NodeProto, data_in: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        if node.op_type == "Neg":
            return "mul_const", {"value": 1.0}
        if len(data_in) != 1 or not self._same_shapes(node, data_in):
            return "unknown", {"reason": f"{node.op_type} of two data tensors or with broadcasting"}
        data_index = list(node.input).index(data_in[0])
        const = self._const(node, 1 - data_index)
        if const is None or const.size == 0:
            return "unknown", {"reason": f"{node.op_type} by a value that is not constant"}
        magnitudes = np.abs(np.asarray(const, np.float64))
        if node.op_type == "Mul":
            return "mul_const", {"value": float(magnitudes.max())}
        if data_index != 0 or magnitudes.min() == 0:
            return "unknown", {"reason": "Div by the data, or by zero"}
        return "mul_const", {"value": float(1.0 / magnitudes.min())}

    def _same_shapes(self, node: onnx.NodeProto, data_in: tuple[str, ...]) -> bool:
        """False when broadcasting copies a data input into a larger output (L grows)."""
        out = self.shapes.get(node.output[0])
        if out is None:
            return True
        for name in data_in:
            shape = self.shapes.get(name)
            if shape is not None and (
                len(shape) != len(out)
                or any(
                    s is not None and o is not None and s != o
                    for s, o in zip(shape, out, strict=True)
                )
            ):
                return False
        return True

    def _pool(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kernel = tuple(int(k) for k in a.get("kernel_shape", ()))
        nd = len(kernel)
        stride = tuple(int(s) for s in a.get("strides", [1] * nd))
        dilation = tuple(int(d) for d in a.get("dilations", [1] * nd))
        shape = self.shapes.get(node.input[0])
        size = tuple(shape[2:]) if shape is not None and len(shape) == nd + 2 else None
        known = size if size is not None and all(d is not None for d in size) else None
        auto_pad = text(a.get("auto_pad", b"NOTSET"))
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if known is None:
                return "unknown", {"reason": "SAME-padded pooling with an unknown input size"}
            padding = same_padding(known, kernel, stride, dilation, lower=auto_pad == "SAME_LOWER")  # type: ignore[arg-type]
        elif auto_pad == "VALID":
            padding = ((0, 0),) * nd
        else:
            pads = [int(p) for p in a.get("pads", [0] * 2 * nd)]
            padding = tuple((pads[i], pads[i + nd]) for i in range(nd))
        out = {
            "kernel": kernel,
            "stride": stride,
            "dilation": dilation,
            "padding": padding,
            "ceil_mode": bool(a.get("ceil_mode", 0)),
            "input_size": known,
        }
        if node.op_type == "MaxPool":
            return "maxpool", out
        return "avgpool", {**out, "count_include_pad": bool(a.get("count_include_pad", 0))}

    def _reduce(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        shape = self.shapes.get(node.input[0])
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            value = self._const(node, 1)
            axes = None if value is None else [int(x) for x in value.ravel()]
        if shape is None or axes is None or len(shape) < 3:
            return "unknown", {"reason": f"{node.op_type} over axes that are not known"}
        rank = len(shape)
        if sorted(x % rank for x in axes) != list(range(2, rank)):
            return "unknown", {"reason": f"{node.op_type} not over exactly the spatial axes"}
        kind = "global_avgpool" if node.op_type == "ReduceMean" else "global_maxpool"
        return kind, {"input_size": self._spatial_size(node)}

    def _training_dropout(self, node: onnx.NodeProto, a: dict[str, Any]) -> bool:
        if "is_test" in a:  # opset < 7
            return not a["is_test"]
        mode = self._const(node, 2)
        return len(node.input) > 2 and bool(node.input[2]) and (mode is None or bool(mode.any()))

    def _spatial_size(self, node: onnx.NodeProto) -> tuple[int, ...] | None:
        shape = self.shapes.get(node.input[0])
        if shape is None or len(shape) < 3 or any(d is None for d in shape[2:]):
            return None
        return tuple(int(d) for d in shape[2:] if d is not None)

    def _pad(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if text(a.get("mode", b"constant")) != "constant":
            return "unknown", {"reason": "reflect/edge padding copies values"}
        value = a.get("value", 0.0)
        if len(node.input) > 2 and node.input[2]:
            found = self._const(node, 2)
            value = None if found is None else float(np.asarray(found).ravel()[0])
        pads = a.get("pads")
        if pads is None:
            found = self._const(node, 1)
            pads = None if found is None else [int(p) for p in found.ravel()]
        if value != 0 or pads is None:
            return "unknown", {"reason": "Pad with a non-zero or non-constant value"}
        return "identity", {}  # zero-extension (negative pads crop: still a selection)
