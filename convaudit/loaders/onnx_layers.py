"""Turn ONNX nodes into IR layers: Conv / ConvTranspose / QLinearConv / ConvInteger -> ConvLayer,
Gemm / MatMul with a constant weight -> DenseLayer, a BatchNormalization that is a conv's only
consumer -> that conv's ``bn``. What cannot be analysed becomes a SkippedLayer with the reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from convaudit.errors import InputShapeError, ModelFileError
from convaudit.ir import BatchNormParams, ConvLayer, DenseLayer, Layer, Provenance, SkippedLayer, same_padding
from convaudit.loaders.onnx_weights import ConstantResolver, Resolved, Source

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
DENSE_OPS = ("Gemm", "MatMul")
# where the weight / bias sit in each conv op's inputs
_WEIGHT_INDEX = {"Conv": 1, "ConvTranspose": 1, "QLinearConv": 3, "ConvInteger": 1}
_BIAS_INDEX = {"Conv": 2, "ConvTranspose": 2, "QLinearConv": 8}


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def layer_name(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``<op>_<index in graph.node>`` when the exporter left it empty."""
    return node.name or f"{node.op_type}_{index}"


def provenance(src: Source, layout: str, **extra: str) -> Provenance:
    items = {"source": src.kind, **extra}
    if src.external:
        items["external"] = src.external
    if not src.writable:
        items["read_only"] = src.reason or f"a {src.kind} value"
    return Provenance(
        format="onnx", locator=src.name, layout=layout, dtype=src.dtype, extra=tuple(sorted(items.items()))
    )


def _float(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    return value if value.dtype in (np.float32, np.float64) else value.astype(np.float32)


@dataclass
class Extracted:
    layers: list[Layer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    node_layer: dict[int, str] = field(default_factory=dict)  # node index -> layer name
    folded_bn: dict[int, str] = field(default_factory=dict)  # BN node index -> conv name
    notes: list[str] = field(default_factory=list)


class LayerExtractor:
    def __init__(
        self,
        graph: onnx.GraphProto,
        resolver: ConstantResolver,
        shapes: Mapping[str, tuple[int | None, ...]],
        consumers: Mapping[str, list[int]],
        graph_outputs: set[str],
        shapes_given: bool = False,
    ):
        self.shapes_given = shapes_given
        self.graph = graph
        self.resolver = resolver
        self.shapes = shapes
        self.consumers = consumers
        self.graph_outputs = graph_outputs
        self.out = Extracted()
        self._names: set[str] = set()

    def run(self, order: list[int]) -> Extracted:
        for idx in order:
            node = self.graph.node[idx]
            if node.domain not in ("", "ai.onnx", "com.microsoft"):
                continue
            if node.op_type in CONV_OPS:
                self._add(idx, self._conv(node, idx))
            elif node.op_type in DENSE_OPS:
                layer = self._dense(node, idx)
                if layer is not None:
                    self._add(idx, layer)
            self._skip_subgraph_layers(node)
        return self.out

    def _unique(self, name: str, idx: int) -> str:
        if name in self._names:
            name = f"{name}_{idx}"
        self._names.add(name)
        return name

    def _add(self, idx: int, layer: Layer | SkippedLayer) -> None:
        if isinstance(layer, SkippedLayer):
            self.out.skipped.append(layer)
        else:
            self.out.layers.append(layer)
            self.out.node_layer[idx] = layer.name

    # --- convolutions ------------------------------------------------------------------------
    def _conv(self, node: onnx.NodeProto, idx: int) -> Layer | SkippedLayer:
        name = self._unique(layer_name(node, idx), idx)
        op = node.op_type
        weight = self._input(node, _WEIGHT_INDEX[op])
        if weight is None:
            return SkippedLayer(name, "the weight is not a constant (it is computed from the inputs)", op)
        kernel = weight.value
        source = weight.source
        if op in ("QLinearConv", "ConvInteger"):
            kernel, source = self._dequantise(node, kernel, source)
        kernel = _float(kernel)
        nd = kernel.ndim - 2
        if nd not in (1, 2, 3):
            return SkippedLayer(name, f"{nd}-D convolution (only 1-D, 2-D and 3-D are analysed)", op)
        a = attrs(node)
        stride = tuple(a.get("strides", [1] * nd))
        dilation = tuple(a.get("dilations", [1] * nd))
        groups = int(a.get("group", 1))
        ksize = kernel.shape[2:]
        if "kernel_shape" in a and tuple(a["kernel_shape"]) != ksize:
            return SkippedLayer(name, f"kernel_shape {a['kernel_shape']} does not match the weight {kernel.shape}", op)
        in_shape = self.shapes.get(node.input[0])
        input_size = None
        if in_shape is not None and len(in_shape) == nd + 2 and all(d is not None for d in in_shape[2:]):
            input_size = tuple(int(d) for d in in_shape[2:] if d is not None)
        transposed = op == "ConvTranspose"
        notes: list[str] = []
        if op == "ConvInteger":
            notes.append("integer kernel (w - zero point): no scale, so sigma is in quantised units")
        try:
            padding, spec, out_pad = self._padding(a, nd, ksize, stride, dilation, input_size, transposed)
        except ValueError as exc:
            return SkippedLayer(name, str(exc), op)
        bias = self._input(node, _BIAS_INDEX.get(op, -1))
        bn = self._attached_bn(node)
        layer = ConvLayer(
            name=name,
            kernel=kernel,
            stride=stride,
            dilation=dilation,
            padding=padding,
            groups=groups,
            padding_spec=spec,
            transposed=transposed,
            output_padding=out_pad,
            input_size=input_size,
            bias=_float(bias.value) if bias is not None else None,
            bn=bn[1] if bn else None,
            provenance=provenance(source, "oihw", op=op),
            kind="depthwise" if groups > 1 and groups == kernel.shape[0] and not transposed and kernel.shape[1] == 1 else "conv",
            notes=tuple(notes),
        )
        in_channels = in_shape[1] if in_shape is not None and len(in_shape) > 1 else None
        if in_channels is not None and in_channels != layer.in_channels:
            message = f"conv {name} expects {layer.in_channels} input channels, but gets {in_channels}"
            if self.shapes_given:
                raise InputShapeError(f"the input shape contradicts the model: {message}")
            raise ModelFileError(f"cannot read the model: {message}")
        if bn is not None:
            self.out.folded_bn[bn[0]] = name
        return layer

    def _padding(self, a, nd, ksize, stride, dilation, input_size, transposed):
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        out_pad = tuple(a.get("output_padding", [0] * nd)) if transposed else ()
        if transposed and ("output_shape" in a or auto_pad in ("SAME_UPPER", "SAME_LOWER")):
            return self._transposed_auto_pads(a, auto_pad, nd, ksize, stride, dilation, input_size, out_pad)
        if auto_pad in ("NOTSET", ""):
            pads = list(a.get("pads", [0] * 2 * nd))
            return tuple((int(pads[i]), int(pads[i + nd])) for i in range(nd)), "explicit", out_pad
        if auto_pad == "VALID":
            return ((0, 0),) * nd, "valid", out_pad
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            lower = auto_pad == "SAME_LOWER"
            spec = "same_lower" if lower else "same"
            if input_size is None:
                # Unknown size: the stride-1 pads (size-independent); the spec lets the engine redo it.
                return same_padding((1,) * nd, ksize, (1,) * nd, dilation, lower=lower), spec, out_pad
            return same_padding(input_size, ksize, stride, dilation, lower=lower), spec, out_pad
        raise ValueError(f"unknown auto_pad {auto_pad!r}")

    def _transposed_auto_pads(self, a, auto_pad, nd, ksize, stride, dilation, input_size, out_pad):
        if input_size is None:
            raise ValueError("ConvTranspose with output_shape/SAME padding needs a known input size")
        if "output_shape" in a:
            target = list(a["output_shape"])[-nd:]
        else:
            target = [n * s for n, s in zip(input_size, stride, strict=True)]
        pads = []
        for ax in range(nd):
            full = stride[ax] * (input_size[ax] - 1) + out_pad[ax] + (ksize[ax] - 1) * dilation[ax] + 1
            total = full - int(target[ax])
            if total < 0:
                raise ValueError("ConvTranspose output_shape larger than the full output")
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        return tuple(pads), "explicit", out_pad

    def _dequantise(self, node: onnx.NodeProto, kernel: np.ndarray, source: Source) -> tuple[np.ndarray, Source]:
        reason = f"a quantised weight ({node.op_type}): float kernels cannot be written back"
        if node.op_type == "QLinearConv":
            scale = self._input(node, 4)
            zero = self._input(node, 5)
        else:
            scale, zero = None, self._input(node, 3)
        k = kernel.astype(np.float64)
        shape = (-1,) + (1,) * (k.ndim - 1)
        if zero is not None:
            z = np.asarray(zero.value, np.float64)
            k = k - (z.reshape(shape) if z.size > 1 else z)
        if scale is not None:
            s = np.asarray(scale.value, np.float64)
            k = k * (s.reshape(shape) if s.size > 1 else s)
        return k.astype(np.float32), Source("quantized", source.name, source.dtype, source.external, reason)

    def _attached_bn(self, node: onnx.NodeProto) -> tuple[int, BatchNormParams] | None:
        out = node.output[0]
        users = self.consumers.get(out, [])
        if out in self.graph_outputs or len(users) != 1:
            return None
        bn_idx = users[0]
        bn = self.graph.node[bn_idx]
        if bn.op_type != "BatchNormalization" or bn.input[0] != out:
            return None
        a = attrs(bn)
        if a.get("training_mode", 0) or len(bn.output) > 1 and any(bn.output[1:]):
            return None
        params = [self._input(bn, i) for i in range(1, 5)]
        if any(p is None for p in params):
            return None
        gamma, beta, mean, var = (np.asarray(p.value, np.float64) for p in params if p is not None)
        return bn_idx, BatchNormParams(gamma, beta, mean, var, float(a.get("epsilon", 1e-5)), name=bn.name)

    # --- dense -------------------------------------------------------------------------------
    def _dense(self, node: onnx.NodeProto, idx: int) -> Layer | SkippedLayer | None:
        a, b = (self._input(node, i) for i in (0, 1))
        op = node.op_type
        if (a is None) == (b is None):
            return None  # both constant (folded elsewhere) or both data (not a layer)
        name = self._unique(layer_name(node, idx), idx)
        weight = a if a is not None else b
        assert weight is not None
        if np.ndim(weight.value) != 2:
            return SkippedLayer(name, f"{op} with a {np.ndim(weight.value)}-D constant operand is not a dense layer", op)
        w = _float(weight.value)
        extra: dict[str, str] = {"op": op}
        notes: tuple[str, ...] = ()
        if op == "Gemm":
            at = attrs(node)
            if a is not None:
                return SkippedLayer(name, "Gemm whose constant operand is A (weight on the left)", op)
            alpha = float(at.get("alpha", 1.0))
            trans_b = bool(at.get("transB", 0))
            layout = "oi" if trans_b else "io"
            matrix = w if trans_b else w.T
            if alpha != 1.0:
                matrix = matrix * np.float32(alpha)
                extra["alpha"] = repr(alpha)
            bias_r = self._input(node, 2)
            bias = None
            if bias_r is not None and np.size(bias_r.value) == matrix.shape[0]:
                bias = _float(bias_r.value).ravel() * np.float32(at.get("beta", 1.0))
        else:
            bias = None
            if a is not None:
                layout, matrix = "oi", w
                notes = ("weight applied on the left (W @ x)",)
            else:
                layout, matrix = "io", w.T
        return DenseLayer(
            name=name, weight=matrix, bias=bias, provenance=provenance(weight.source, layout, **extra), notes=notes
        )

    # --- helpers -----------------------------------------------------------------------------
    def _input(self, node: onnx.NodeProto, index: int) -> Resolved | None:
        if index < 0 or index >= len(node.input) or not node.input[index]:
            return None
        return self.resolver.resolve(node.input[index])

    def _skip_subgraph_layers(self, node: onnx.NodeProto) -> None:
        """Layers inside If/Loop/Scan bodies (at any depth) are reported, not analysed."""
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                for i, inner in enumerate(sub.node):
                    if inner.op_type in CONV_OPS or (inner.op_type in DENSE_OPS and _has_const(sub, inner)):
                        label = inner.name or f"{node.name or node.op_type}/{inner.op_type}_{i}"
                        reason = f"inside a {node.op_type} subgraph (control flow is not analysed)"
                        self.out.skipped.append(SkippedLayer(self._unique(label, i), reason, inner.op_type))
                    self._skip_subgraph_layers(inner)


def _has_const(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    inits = {t.name for t in graph.initializer}
    consts = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return any(i in inits or i in consts for i in node.input)
