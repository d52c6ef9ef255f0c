"""The common intermediate representation every loader produces and every engine consumes.

numpy-only, frozen dataclasses. No framework imports here.

Kernel layout (canonical, like PyTorch/ONNX): ``(c_out, c_in/groups, *spatial)``.
For a *transposed* conv the stored kernel is the weight exactly as PyTorch/ONNX store it,
``(c_in, c_out/groups, *spatial)``: that is the kernel of the forward conv whose adjoint the
layer is, so the engine analyses that forward conv (same singular values, MATH.md §1) on the
transposed layer's *output* grid (see :meth:`ConvLayer.operator_grid`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

PaddingMode = Literal["zeros", "circular", "reflect", "replicate"]
PADDING_MODES: tuple[str, ...] = ("zeros", "circular", "reflect", "replicate")


@dataclass(frozen=True)
class Provenance:
    """Where a tensor came from, precise enough for the same loader to write a new one back.

    ``format``: the loader's format name (e.g. ``"onnx"``).
    ``locator``: format-specific address (an ONNX initializer / Constant-node name, a state_dict
    key, an HDF5 dataset path, ...).
    ``layout``: how the stored tensor maps to the canonical layout (e.g. ``"oihw"`` for
    canonical, ``"keras-conv"``, ``"keras-depthwise"``, ...); only the owning loader interprets it.
    ``dtype``: the stored dtype (``"float32"``, ``"float16"``, ...), to write back the same.
    ``extra``: anything else the writer needs (sorted (key, value) pairs so the object stays
    hashable).
    """

    format: str
    locator: str
    layout: str = "oihw"
    dtype: str = "float32"
    extra: tuple[tuple[str, str], ...] = ()

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.extra).get(key, default)


@dataclass(frozen=True)
class BatchNormParams:
    """An eval-mode BatchNorm: y = gamma * (x - mean) / sqrt(var + eps) + beta."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float
    name: str = ""

    @property
    def scale(self) -> np.ndarray:
        """Per-channel multiplier gamma / sqrt(var + eps) (float64)."""
        return np.asarray(self.gamma, np.float64) / np.sqrt(
            np.asarray(self.var, np.float64) + self.eps
        )


@dataclass(frozen=True)
class ConvLayer:
    """One convolution (1-D, 2-D or 3-D), possibly transposed.

    ``padding`` holds explicit ``(before, after)`` pairs per spatial axis, already resolved from
    "same"/auto_pad by the loader when the input size is known. ``padding_spec`` keeps the
    unresolved spec ("same", "valid", or "explicit") so the engine can re-resolve it for
    another grid (e.g. when the input size is unknown and the size-independent bound is used).
    ``input_size`` is the spatial size of the layer's input tensor, or None when unknown.
    """

    name: str
    kernel: np.ndarray
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    groups: int = 1
    padding_mode: PaddingMode = "zeros"
    padding_spec: str = "explicit"
    transposed: bool = False
    output_padding: tuple[int, ...] = ()
    input_size: tuple[int, ...] | None = None
    bias: np.ndarray | None = None
    bn: BatchNormParams | None = None
    provenance: Provenance | None = None
    kind: str = "conv"  # e.g. "conv", "depthwise", "separable-depthwise", "separable-pointwise"
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        nd = self.kernel.ndim - 2
        if nd not in (1, 2, 3):
            raise ValueError(f"{self.name}: kernel must have 3 to 5 dims, got {self.kernel.shape}")
        for label, value in (
            ("stride", self.stride),
            ("dilation", self.dilation),
            ("padding", self.padding),
        ):
            if len(value) != nd:
                raise ValueError(f"{self.name}: {label} {value} does not match {nd} spatial dims")
        if self.input_size is not None and len(self.input_size) != nd:
            raise ValueError(
                f"{self.name}: input_size {self.input_size} does not match {nd} spatial dims"
            )

    @property
    def spatial_dims(self) -> int:
        return self.kernel.ndim - 2

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(int(k) for k in self.kernel.shape[2:])

    @property
    def in_channels(self) -> int:
        """Channels of the layer's input tensor."""
        if self.transposed:
            return int(self.kernel.shape[0])
        return int(self.kernel.shape[1]) * self.groups

    @property
    def out_channels(self) -> int:
        """Channels of the layer's output tensor."""
        if self.transposed:
            return int(self.kernel.shape[1]) * self.groups
        return int(self.kernel.shape[0])

    def output_size(self, input_size: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
        """Spatial output size for the given (default: the layer's own) input size."""
        size = self.input_size if input_size is None else input_size
        if size is None:
            return None
        out = []
        for ax, n in enumerate(size):
            k, s, d = self.kernel_size[ax], self.stride[ax], self.dilation[ax]
            before, after = self.padding[ax]
            if self.transposed:
                op = self.output_padding[ax] if self.output_padding else 0
                out.append((n - 1) * s - before - after + d * (k - 1) + op + 1)
            else:
                out.append((n + before + after - d * (k - 1) - 1) // s + 1)
        return tuple(out)

    def operator_grid(self) -> tuple[int, ...] | None:
        """Input grid of the forward conv the engine analyses (output grid if transposed)."""
        return self.output_size() if self.transposed else self.input_size

    def folded_kernel(self) -> np.ndarray:
        """Kernel with the attached eval-mode BatchNorm folded in (MATH.md §4)."""
        if self.bn is None:
            return self.kernel
        scale = self.bn.scale
        k = np.asarray(self.kernel, np.float64)
        if self.transposed:
            # Output channel o of a transposed conv is (group g, column j) of dim 1.
            g = self.groups
            per = k.shape[1]
            idx = np.arange(k.shape[0]) // (k.shape[0] // g)
            cols = idx[:, None] * per + np.arange(per)[None, :]
            return k * scale[cols].reshape(k.shape[0], per, *([1] * (k.ndim - 2)))
        return k * scale.reshape(-1, *([1] * (k.ndim - 1)))


@dataclass(frozen=True)
class DenseLayer:
    """A fully connected layer y = W x + b with ``weight`` of shape (out, in)."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None = None
    provenance: Provenance | None = None
    kind: str = "dense"
    notes: tuple[str, ...] = ()


Layer = ConvLayer | DenseLayer


@dataclass(frozen=True)
class SkippedLayer:
    """Something recognised as a layer that cannot be analysed; always reported."""

    name: str
    reason: str
    op: str = ""


# --- Graph, for the whole-network Lipschitz bound ---------------------------------------------

# The fixed vocabulary of node kinds network.py understands. Loaders map their own ops onto it
# and keep the original op name in ``GraphNode.op``; anything else is "unknown".
NODE_KINDS: tuple[str, ...] = (
    "conv",  # attrs: layer=<ConvLayer name>
    "dense",  # attrs: layer=<DenseLayer name>
    "batchnorm",  # attrs: folded_into=<conv name> | scale=np.ndarray (per channel)
    "activation",  # attrs: fn=relu|leaky_relu|prelu|sigmoid|tanh|gelu|silu|hardswish|hardsigmoid|elu|selu|softplus|relu6|clip|softmax..., alpha/slope where relevant
    "add",
    "sub",
    "concat",
    "mul_const",  # attrs: value=float (max |c| for a tensor constant)
    "maxpool",  # attrs: kernel, stride, dilation, padding (per axis tuples)
    "avgpool",  # attrs: kernel, stride, padding, count_include_pad
    "global_avgpool",
    "global_maxpool",
    "identity",  # reshape, flatten, transpose, dropout (eval), squeeze, zero pad, slice ...
    "resize_nearest",  # attrs: factor=tuple[int, ...]
    "select",  # inputs: (condition, one tensor per branch): the output is one of the branches'
    "unknown",
)


@dataclass(frozen=True)
class GraphNode:
    name: str
    kind: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    """Dataflow graph over tensor names, nodes in topological order.

    ``chain_assumed`` is True when the loader had no graph and laid the layers out as a plain
    chain in module order: any bound built on it is an assumption, and says so.
    ``parameters``: the inputs (of ``inputs``) that are integers or booleans, such as a sample
    rate: not variables of a Lipschitz bound, which then holds for each of their values.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[GraphNode, ...]
    chain_assumed: bool = False
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelIR:
    path: str
    format: str
    layers: tuple[Layer, ...]
    skipped: tuple[SkippedLayer, ...] = ()
    input_shapes: Mapping[str, tuple[int | None, ...]] = field(default_factory=dict)
    graph: Graph | None = None
    notes: tuple[str, ...] = ()

    @property
    def convs(self) -> tuple[ConvLayer, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, ConvLayer))

    @property
    def denses(self) -> tuple[DenseLayer, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, DenseLayer))

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def normalize_tuple(
    value: int | tuple[int, ...] | list[int], nd: int, label: str
) -> tuple[int, ...]:
    """Expand an int to nd copies; check a sequence has nd entries."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * nd
    out = tuple(int(v) for v in value)
    if len(out) != nd:
        raise ValueError(f"{label} {value!r} must have {nd} entries")
    return out


def same_padding(
    input_size: tuple[int, ...],
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    *,
    lower: bool = False,
) -> tuple[tuple[int, int], ...]:
    """Explicit pads for "same" (output = ceil(n / s)); extra pad goes after unless ``lower``.

    This is ONNX SAME_UPPER / Keras & TF "same" (lower=False) and ONNX SAME_LOWER (lower=True).
    """
    pads = []
    for n, k, s, d in zip(input_size, kernel_size, stride, dilation, strict=True):
        out = math.ceil(n / s)
        total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
        small, big = total // 2, total - total // 2
        pads.append((big, small) if lower else (small, big))
    return tuple(pads)
