"""Turn ONNX nodes into IR layers: Conv / ConvTranspose / QLinearConv / ConvInteger -> ConvLayer,
Gemm / MatMul with a constant weight -> DenseLayer, a BatchNormalization that is a conv's only
consumer -> that conv's ``bn``. What cannot be analysed becomes a SkippedLayer with the reason.

Layers inside If / Loop / Scan bodies are read the same way, scope by scope (:mod:`.subgraphs`):
named by their branch path, with the shapes and constants of their scope (outer scopes
included), and a note when the branch is not the one the given inputs take."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import onnx

from convaudit.errors import InputShapeError, ModelFileError
from convaudit.ir import BatchNormParams, ConvLayer, Layer, SkippedLayer
from convaudit.loaders.onnx.dense import QUANTISED_DENSE_OPS, dense_layer, quantised_dense
from convaudit.loaders.onnx.nodes import as_float, attrs, provenance, text
from convaudit.loaders.onnx.padding import conv_padding
from convaudit.loaders.onnx.subgraphs import Scope, live_branch
from convaudit.loaders.onnx.weights import Resolved, Source

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "FusedConv")
DENSE_OPS = ("Gemm", "MatMul")
# where the weight / bias sit in each conv op's inputs
_WEIGHT_INDEX = {"Conv": 1, "ConvTranspose": 1, "QLinearConv": 3, "ConvInteger": 1, "FusedConv": 1}
_BIAS_INDEX = {"Conv": 2, "ConvTranspose": 2, "QLinearConv": 8, "FusedConv": 2}


@dataclass
class Extracted:
    """What one scope's nodes became. ``node_layer`` / ``folded_bn`` are by node index in that
    scope's graph; ``scopes`` holds the same for each subgraph, by path. ``layers``, ``skipped``
    and ``notes`` are the whole model's, shared by every scope's Extracted."""

    layers: list[Layer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    node_layer: dict[int, str] = field(default_factory=dict)  # node index -> layer name
    folded_bn: dict[int, str] = field(default_factory=dict)  # BN node index -> conv name
    notes: list[str] = field(default_factory=list)
    scopes: dict[str, Extracted] = field(default_factory=dict)

    def of(self, path: str) -> Extracted:
        """The Extracted of the scope at ``path`` ("" is this one)."""
        return (
            self
            if not path
            else self.scopes.setdefault(
                path, Extracted(self.layers, self.skipped, notes=self.notes)
            )
        )


class LayerExtractor:
    def __init__(
        self,
        scope: Scope,
        shapes_given: bool = False,
        source: str = "the model",
        *,
        root: Extracted | None = None,
        names: set[str] | None = None,
        branch_note: str = "",
    ):
        self.shapes_given = shapes_given
        self.source = source
        self.scope = scope
        self.graph = scope.graph
        self.resolver = scope.resolver
        self.shapes = scope.shapes
        self.consumers = scope.consumers
        self.graph_outputs = scope.outputs
        self.root = root if root is not None else Extracted()
        self.out = self.root.of(scope.path)
        self._names: set[str] = names if names is not None else set()
        self.branch_note = branch_note

    def run(self) -> Extracted:
        bodies: dict[int, list[tuple[str, Scope]]] = {}
        for (owner, attr), child in self.scope.children.items():
            bodies.setdefault(owner, []).append((attr, child))
        for idx in self.scope.order:
            node = self.graph.node[idx]
            self._read(idx, node)
            for attr, child in bodies.get(idx, ()):
                LayerExtractor(
                    child,
                    self.shapes_given,
                    self.source,
                    root=self.root,
                    names=self._names,
                    branch_note=self.branch_note or self._dead_branch(node, attr),
                ).run()
        return self.root

    def _dead_branch(self, node: onnx.NodeProto, attr: str) -> str:
        live = live_branch(self.resolver, node)
        if live is None or live == attr:
            return ""
        owner = f"{self.scope.prefix}{node.name or node.op_type}"
        return f"in the {attr} of {owner}, which these inputs do not take ({live} is live)"

    def _read(self, idx: int, node: onnx.NodeProto) -> None:
        if node.domain not in ("", "ai.onnx", "com.microsoft"):
            return
        if node.op_type in CONV_OPS:
            name = self._unique(self.scope.name(node, idx), idx)
            try:
                self._add(idx, self._conv(node, name))
            except (TypeError, ValueError, IndexError) as exc:  # wrong attribute type/size
                reason = f"malformed attributes ({exc})"
                self._add(idx, SkippedLayer(name, reason, node.op_type))
        elif node.op_type in DENSE_OPS:
            layer = self._dense(node, idx)
            if layer is not None:
                self._add(idx, layer)
        elif node.op_type in QUANTISED_DENSE_OPS:
            weight = next((r for r in map(self.resolver.resolve, node.input[1:4]) if r), None)
            if weight is not None:
                name = self._unique(self.scope.name(node, idx), idx)
                self._add(idx, quantised_dense(node, name, weight.source))

    def _unique(self, name: str, idx: int) -> str:
        if name in self._names:
            name = f"{name}_{idx}"
        self._names.add(name)
        return name

    def _add(self, idx: int, layer: Layer | SkippedLayer) -> None:
        if isinstance(layer, SkippedLayer):
            self.out.skipped.append(layer)
            return
        if self.branch_note:
            layer = dataclasses.replace(layer, notes=(*layer.notes, self.branch_note))
        self.out.layers.append(layer)
        self.out.node_layer[idx] = layer.name

    # --- convolutions ------------------------------------------------------------------------
    def _conv(self, node: onnx.NodeProto, name: str) -> Layer | SkippedLayer:
        op = node.op_type
        weight = self._input(node, _WEIGHT_INDEX[op])
        if weight is None:
            index = _WEIGHT_INDEX[op]
            why = (
                self.resolver.why_not(node.input[index])
                if index < len(node.input)
                else "none given"
            )
            return SkippedLayer(name, f"the weight is not a constant: {why}", op)
        kernel = weight.value
        source = weight.source
        if op in ("QLinearConv", "ConvInteger"):
            kernel, source = self._dequantise(node, kernel, source)
        kernel = as_float(kernel)
        nd = kernel.ndim - 2
        if nd not in (1, 2, 3):
            return SkippedLayer(
                name, f"{nd}-D convolution (only 1-D, 2-D and 3-D are analysed)", op
            )
        a = attrs(node)
        stride = tuple(a.get("strides", [1] * nd))
        dilation = tuple(a.get("dilations", [1] * nd))
        groups = int(a.get("group", 1))
        ksize = kernel.shape[2:]
        if "kernel_shape" in a and tuple(a["kernel_shape"]) != ksize:
            return SkippedLayer(
                name,
                f"kernel_shape {a['kernel_shape']} does not match the weight {kernel.shape}",
                op,
            )
        bad = _bad_geometry(kernel, stride, dilation, groups, op == "ConvTranspose")
        if bad:
            return SkippedLayer(name, f"malformed attributes: {bad}", op)
        in_shape = self.shapes.get(node.input[0])
        input_size = None
        if (
            in_shape is not None
            and len(in_shape) == nd + 2
            and all(d is not None for d in in_shape[2:])
        ):
            input_size = tuple(int(d) for d in in_shape[2:] if d is not None)
        transposed = op == "ConvTranspose"
        notes: list[str] = []
        if op == "ConvInteger":
            notes.append(
                "integer kernel (w - zero point): no scale, so sigma is in quantised units"
            )
        if op == "FusedConv":  # onnxruntime's conv (+ Z) + activation, saved optimised models
            notes.append(f"onnxruntime FusedConv with activation {text(a.get('activation', ''))}")
        if a.get("channels_last"):
            return SkippedLayer(name, "channels-last (NHWC) layout is not read", op)
        try:
            padding, spec, out_pad = conv_padding(
                a, ksize, stride, dilation, input_size, transposed
            )
        except ValueError as exc:
            return SkippedLayer(name, str(exc), op)
        bias = self._input(node, _BIAS_INDEX.get(op, -1))
        bn = self._attached_bn(node) if op != "FusedConv" else None  # its output is activated
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
            bias=as_float(bias.value) if bias is not None else None,
            bn=bn[1] if bn else None,
            provenance=provenance(source, "oihw", op=op),
            kind="depthwise" if groups > 1 and kernel.shape[1] == 1 and not transposed else "conv",
            notes=tuple(notes),
        )
        in_channels = in_shape[1] if in_shape is not None and len(in_shape) > 1 else None
        if in_channels is not None and in_channels != layer.in_channels:
            message = (
                f"conv {name} expects {layer.in_channels} input channels, but gets {in_channels}"
            )
            if self.scope.parent is not None:  # one body's inconsistency spoils only its layers
                return SkippedLayer(name, message, op)
            if self.shapes_given:
                raise InputShapeError(f"the input shape contradicts the model: {message}")
            raise ModelFileError(f"cannot read {self.source}: {message}")
        if bn is not None:
            self.out.folded_bn[bn[0]] = name
        return layer

    def _dequantise(
        self, node: onnx.NodeProto, kernel: np.ndarray, source: Source
    ) -> tuple[np.ndarray, Source]:
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
        return k.astype(np.float32), Source(
            "quantized", source.name, source.dtype, source.external, reason, source.scope
        )

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
        if a.get("training_mode", 0) or (len(bn.output) > 1 and any(bn.output[1:])):
            return None
        params = [self._input(bn, i) for i in range(1, 5)]
        if any(p is None for p in params):
            return None
        gamma, beta, mean, var = (np.asarray(p.value, np.float64) for p in params if p is not None)
        return bn_idx, BatchNormParams(
            gamma, beta, mean, var, float(a.get("epsilon", 1e-5)), name=bn.name
        )

    def _dense(self, node: onnx.NodeProto, idx: int) -> Layer | SkippedLayer | None:
        a, b = (self._input(node, i) for i in (0, 1))
        if (a is None) == (b is None):
            return None  # both constant (folded elsewhere) or both data (not a layer)
        name = self._unique(self.scope.name(node, idx), idx)
        try:
            return dense_layer(node, name, a, b, self._input(node, 2))
        except (TypeError, ValueError) as exc:  # attributes of the wrong type
            return SkippedLayer(name, f"malformed attributes ({exc})", node.op_type)

    # --- helpers -----------------------------------------------------------------------------
    def _input(self, node: onnx.NodeProto, index: int) -> Resolved | None:
        if index < 0 or index >= len(node.input) or not node.input[index]:
            return None
        return self.resolver.resolve(node.input[index])


def _bad_geometry(
    kernel: np.ndarray,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    transposed: bool,
) -> str | None:
    nd = kernel.ndim - 2
    if len(stride) != nd or len(dilation) != nd:
        return f"strides {stride} / dilations {dilation} do not match a {nd}-D kernel"
    if min(stride + dilation, default=1) < 1 or groups < 1:
        return f"strides {stride}, dilations {dilation} and group {groups} must be positive"
    grouped_dim = kernel.shape[0]  # c_out (forward) or c_in (transposed) must split into groups
    if grouped_dim % groups:
        return f"group {groups} does not divide the kernel's {grouped_dim} {'in' if transposed else 'out'}put channels"
    return None
