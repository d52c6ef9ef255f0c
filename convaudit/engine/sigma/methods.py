"""σ_max of a conv's REAL operator, picking the right method for its padding and grid.

Shared by the public API (:mod:`convaudit.engine.api`) and the layer analysis
(:mod:`convaudit.engine.layer`). Every result is a :class:`NormResult` that says what it is.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from convaudit.engine.conv import Conv, LayerOperator
from convaudit.engine.geometry import Pads
from convaudit.engine.operator import most_reads
from convaudit.engine.results import NormResult, bracket_result
from convaudit.engine.runtime import Runtime
from convaudit.engine.sigma.circular import circular_sigma_max, rounding_margin
from convaudit.engine.sigma.continuous import circular_upper, size_independent_bound
from convaudit.engine.sigma.grouped import grouped_sigma_max
from convaudit.engine.sigma.padded import padded_sigma_max
from convaudit.engine.sigma.reduction import equivalent_operator
from convaudit.engine.spectrum.dense import dense_fits, dense_singular_values
from convaudit.engine.spectrum.frequencies import frequency_block
from convaudit.errors import UnsupportedLayerError

METHODS = ("exact", "upper-bound")


def check_weight(kernel: torch.Tensor) -> str:
    """ "ok", "non-finite" (NaN/Inf anywhere) or "zero" (all zeros)."""
    if not bool(torch.isfinite(kernel).all()):
        return "non-finite"
    if not bool(kernel.any()):
        return "zero"
    return "ok"


def worst_copy_gain(pads: Pads, mode: str, *, same_circular: bool) -> float:
    """‖P‖ of the padding map over EVERY input size (used when the size is unknown)."""
    if mode == "zeros" or same_circular:
        return 1.0
    gain = 1.0
    for t, a in pads:
        # reflect: at most one mirror copy per side; replicate/circular: a one-entry axis is
        # copied into every padded cell
        copies = 1 + int(t > 0) + int(a > 0) if mode == "reflect" else 1 + t + a
        gain *= math.sqrt(copies)
    return gain


def any_size_norm(conv: Conv, pads: Pads, mode: str, rt: Runtime) -> NormResult:
    """The size-independent bound S (times the padding gain for reflect/replicate/circular)."""
    same = (
        mode == "circular"
        and all(s == 1 for s in conv.stride)
        and all(
            b + a == d * (k - 1)
            for (b, a), d, k in zip(pads, conv.dilation, conv.kernel_size, strict=True)
        )
    )
    gain = worst_copy_gain(pads, mode, same_circular=same)
    sup = size_independent_bound(conv, rt)
    how = "certified to tol" if sup.closed else "work budget reached: a bound"
    method = f"sup over frequencies ({sup.tests} torus-cell tests, {how})"
    if gain != 1.0:
        method += f" x padding gain {gain:.4g}"
    # Always a bound: S is the sup over input sizes, not this layer's σ_max at its own size,
    # so a closed bracket of S is said in the method, never in the label.
    upper = sup.upper * gain
    return NormResult(
        upper, sup.lower, upper, False, "upper-bound", "any-size", None, method,
        tol=rt.tol, guarantee="bound",
    )  # fmt: skip


def circular_norm_result(op: LayerOperator, rt: Runtime) -> NormResult:
    """Exact geometry (out·s = N): the FFT bracket, exact when it closes within tol. On large
    grids, S's bracket, with σ at the grid frequency nearest S's maximiser as the lower end
    (:func:`circular_upper`)."""
    circ, factor, used, method = circular_upper(op.conv, op.grid, rt)
    upper = circ.upper * math.sqrt(factor)
    lower = circ.lower
    if used != op.grid:
        lower = nearest_grid_sigma(op, circ.frequency, used)
        method += "; lower: the layer's grid frequency nearest its maximiser"
    elif circ.continuous is None:
        method = "fft + lanczos-ranked cholesky certificate"
    return bracket_result(
        lower, upper, tol=rt.tol, operator="circular", grid=op.grid, method=method
    )


def nearest_grid_sigma(
    op: LayerOperator, frequency: tuple[int, ...], used: tuple[int, ...]
) -> float:
    """σ_max(B(m)) at the alias frequency of ``op.grid`` nearest to ``frequency`` (an alias
    index on the grid ``used``): a certified lower bound on σ_circ(op.grid)."""
    stride = op.conv.stride
    mine = [n // s for n, s in zip(op.grid, stride, strict=True)]
    theirs = [n // s for n, s in zip(used, stride, strict=True)]
    m = np.array([[round(f * a / b) % a for f, a, b in zip(frequency, mine, theirs, strict=True)]])
    block = frequency_block(op.conv.to(torch.float64), m, op.grid)
    top = float(torch.linalg.matrix_norm(block[0], ord=2).max())
    return top * (1 - rounding_margin(max(block.shape[-2:]), torch.float64))


def dense_norm_result(op: LayerOperator, why: str) -> NormResult:
    sv = dense_singular_values(op.to(torch.float64), why)
    top = float(sv[0]) if sv.size else 0.0
    margin = 16 * max(sv.size, 1) * float(np.finfo(np.float64).eps)
    return bracket_result(
        top * (1 - margin), top * (1 + margin), tol=0.0, operator=op.mode, grid=op.grid,
        method="dense SVD", converged_value=top,
    )  # fmt: skip


def pointwise_norm_result(op: LayerOperator, rt: Runtime) -> NormResult:
    """1×1 kernels, any stride and padding: each output reads ONE input position, so the
    operator is W ⊗ P with P a 0/1 matrix with one 1 per row (zeros: none on padded outputs).
    PᵀP is the diagonal of how often each input is read, hence exactly
    σ_max = σ_max(W) · √(most reads of one input) (0 if no input is read)."""
    geometry = op.geometry
    copies = 1
    for n, t, e, s in zip(
        geometry.grid, geometry.before, geometry.last_read, geometry.stride, strict=True
    ):
        # output j's one tap reads padded cell j·s; the last output reads cell t + e
        copies *= most_reads(n, t, t + e + 1, op.mode, step=s)
    conv = op.conv.unit_stride()
    res = circular_sigma_max(conv, (1,) * conv.nd, rt)
    gain = math.sqrt(copies)
    method = "1x1: sigma_max(W)" + (f" x read-count gain {gain:.4g}" if gain not in (0, 1) else "")
    return bracket_result(
        res.lower * gain, res.upper * gain, tol=rt.tol, operator=op.mode, grid=op.grid,
        method=method,
    )  # fmt: skip


def conv_norm(op: LayerOperator, method: str, rt: Runtime) -> NormResult:
    """σ_max of the layer's real operator ``op``, by the right method for its padding and grid."""
    if method not in METHODS:
        raise UnsupportedLayerError(
            f"unknown method {method!r}", hint="use 'exact' or 'upper-bound'"
        )
    if op.conv.pointwise:
        return pointwise_norm_result(op, rt)
    if op.mode == "circular":
        if op.geometry.is_circular_exact():
            return circular_norm_result(op, rt)
        if dense_fits(op):
            return dense_norm_result(op, why="circular padding outside the exact FFT geometry")
    reduced = equivalent_operator(op)
    if reduced is not None:
        smaller, what = reduced
        result = conv_norm(smaller, method, rt)
        return dataclasses.replace(result, grid=op.grid, method=f"{result.method}; on {what}")
    exact = method == "exact"
    if op.conv.groups > 1:
        grouped = grouped_sigma_max(op, rt, exact=exact)
        if grouped is not None:
            return grouped
    return padded_sigma_max(op, rt, exact=exact)
