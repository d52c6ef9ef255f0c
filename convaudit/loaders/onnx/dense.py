"""Gemm / MatMul with one constant 2-D operand -> DenseLayer with weight (out, in).

Gemm computes alpha * A' B' + beta * C with A' = A or A^T (transA) and B' = B or B^T (transB):
the weight is alpha * B'^T, stored "oi" (transB=1) or "io" (transB=0). MatMul x @ W stores "io";
W @ x (constant on the left) stores "oi". Quantised matrix products are reported, not read.
"""

from __future__ import annotations

import numpy as np
import onnx

from convaudit.ir import DenseLayer, SkippedLayer
from convaudit.loaders.onnx.nodes import as_float, attrs, provenance
from convaudit.loaders.onnx.weights import Resolved, Source

QUANTISED_DENSE_OPS = ("MatMulInteger", "QLinearMatMul", "QGemm")


def dense_layer(
    node: onnx.NodeProto,
    name: str,
    a: Resolved | None,
    b: Resolved | None,
    c: Resolved | None,
) -> DenseLayer | SkippedLayer:
    """The layer for a Gemm / MatMul whose operand ``a`` or ``b`` (not both) is constant."""
    op = node.op_type
    weight = a if a is not None else b
    assert weight is not None
    if np.ndim(weight.value) != 2:
        rank = np.ndim(weight.value)
        return SkippedLayer(name, f"{op} with a {rank}-D constant operand is not a dense layer", op)
    w = as_float(weight.value)
    extra: dict[str, str] = {"op": op}
    notes: tuple[str, ...] = ()
    bias = None
    if op == "Gemm":
        at = attrs(node)
        if a is not None:
            return SkippedLayer(name, "Gemm whose constant operand is A (weight on the left)", op)
        trans_b = bool(at.get("transB", 0))
        layout, matrix = ("oi", w) if trans_b else ("io", w.T)
        alpha = float(at.get("alpha", 1.0))
        if alpha != 1.0:
            matrix = matrix * np.float32(alpha)
            extra["alpha"] = repr(alpha)
        if c is not None and np.size(c.value) == matrix.shape[0]:
            bias = as_float(c.value).ravel() * np.float32(at.get("beta", 1.0))
    elif a is not None:
        layout, matrix = "oi", w
        notes = ("weight applied on the left (W @ x)",)
    else:
        layout, matrix = "io", w.T
    prov = provenance(weight.source, layout, **extra)
    return DenseLayer(name=name, weight=matrix, bias=bias, provenance=prov, notes=notes)


def quantised_dense(node: onnx.NodeProto, name: str, weight: Source) -> SkippedLayer:
    return SkippedLayer(
        name,
        f"quantised matrix product ({node.op_type}, weight {weight.name!r}) is not read",
        node.op_type,
    )
