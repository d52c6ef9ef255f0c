"""The size-independent bound S = sup over continuous frequencies of σ_max(B(ν)) (MATH.md §2),
and its use on large grids.

S bounds σ_max of the layer's zero-padded (and circular) operator on EVERY input size, and
σ_circ(N) <= S on every grid N. :func:`size_independent_bound` (:mod:`torus`: branch and bound
over cells of the frequency torus) certifies it to ``rt.tol`` at a cost that does not depend on
any grid.

**Large grids** (:func:`circular_upper`). σ_circ(N) is the maximum of σ_max(B) over the grid's
frequencies, one Cholesky certificate each (:mod:`circular`): its cost grows with N, S's does
not. Where S is the cheaper, the upper end comes from S (certified to tol/8) and the lower end
is σ_max(B(m)) at the grid frequency m nearest the maximiser ν*; when those are within ``tol``
of each other, the grid's σ_circ(N) is bracketed within tol. A fine grid always gets there: by
the cell lemma of :mod:`torus`, σ(m)² >= S²·cos²(Δ/2) with Δ = Σ D_ax·π/M_ax, so it closes once
cos(Δ/2)·(1 + tol) >= 1 + tol/8 (3×3 at tol 1e-4: M >= 512; in practice far coarser grids
close, the peak being flatter than the worst case). Where it does not close, the grid
certificate is run if affordable (GRID_WORK), else the bracket is reported as it is.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.runtime import Runtime
from convaudit.engine.sigma.circular import (
    UNIT,
    CircularNorm,
    _lambda_max,
    _top_eigenpair,
    certificate_work,
    circular_sigma_max,
)
from convaudit.engine.sigma.torus import S_WORK, SupBound, estimated_work, size_independent_bound
from convaudit.engine.spectrum.frequencies import frequency_block

__all__ = ["S_WORK", "SupBound", "circular_upper", "size_independent_bound"]

#: S replaces the grid certificate when its estimated work is at most this share of the grid's
#: (the estimate is for a random-weight layer, the hardest case)
SUP_SHARE = 0.5
#: the grid certificate is run (where S did not close) up to this many multiply-adds
GRID_WORK = 5e11
#: S is certified to this share of the tolerance when it bounds a grid: its search ends with
#: upper ≈ lower·(1 + tol), so the grid's nearest frequency needs room below S's lower end
SUP_TOL_SHARE = 1 / 8


def circular_upper(
    conv: Conv, grid: tuple[int, ...], rt: Runtime
) -> tuple[CircularNorm, float, tuple[int, ...], str]:
    """A certified upper bound on σ_circ(grid): (norm, factor C, the grid norm was computed on,
    description), with σ_circ(grid) <= norm.upper·√C. C is 1 and the grid is ``grid``; where
    ``norm.continuous`` is set, ``norm.upper`` is S and ``norm.lower`` σ at the grid frequency
    nearest S's maximiser (see the module doc)."""
    where = "x".join(map(str, grid))
    grid_work = certificate_work(conv, grid)
    sup_norm = None
    if estimated_work(conv, rt.tol) <= SUP_SHARE * grid_work or grid_work > GRID_WORK:
        # S never spends more than the grid certificate would (unless that is unaffordable)
        budget = S_WORK if grid_work > GRID_WORK else min(S_WORK, grid_work)
        tight = dataclasses.replace(rt, tol=rt.tol * SUP_TOL_SHARE)
        sup = size_independent_bound(conv, tight, work=budget)
        sup_norm = nearest_grid_norm(conv, grid, sup)
        if sup_norm.upper <= sup_norm.lower * (1 + rt.tol) or grid_work > GRID_WORK:
            closed = "certified to tol" if sup.closed else "work budget reached"
            return (
                sup_norm,
                1.0,
                grid,
                f"sup over frequencies ({sup.tests} cell tests, {closed}); lower: the "
                f"{where} grid frequency nearest its maximiser",
            )
    return circular_sigma_max(conv, grid, rt), 1.0, grid, f"circular bound on {where}"


def nearest_grid_norm(conv: Conv, grid: tuple[int, ...], sup: SupBound) -> CircularNorm:
    """S's bracket as a bound on σ_circ(grid): upper S, lower σ_max(B(m)) (certified) at the
    alias frequency m of ``grid`` nearest S's maximiser, with its right singular vector."""
    conv = conv.to(torch.float64)
    alias = np.array([n // s for n, s in zip(grid, conv.stride, strict=True)])
    m = np.mod(np.rint(np.asarray(sup.frequency) * alias / (2 * math.pi)), alias).astype(np.int64)
    blocks = frequency_block(conv, m[None], grid)[0]  # (groups, rows, cols)
    output_side = blocks.shape[-2] <= blocks.shape[-1]
    grams = blocks @ blocks.mH if output_side else blocks.mH @ blocks
    group = int(_lambda_max(grams).argmax())
    value, vec = _top_eigenpair(grams[group])
    block = blocks[group]
    v = block.mH @ vec.to(block.dtype) if output_side else vec.to(block.dtype)
    if not bool(v.any()):  # B = 0: any unit vector
        v = torch.zeros(block.shape[-1], dtype=block.dtype, device=block.device)
        v[0] = 1
    v = v / v.norm()
    # ‖B̃v‖ vs ‖Bv‖: the block's rounding (as in :mod:`circular`) and the norms' own
    per_group = conv.kernel.reshape(conv.groups, conv.rows, conv.shape[1], -1)
    mass = float(torch.linalg.matrix_norm(per_group.permute(3, 0, 1, 2)).sum(0).max())
    b_error = 1.01 * (math.prod(conv.kernel_size) + 8) * UNIT * mass
    rel = 2 * (max(block.shape) + 2) * UNIT
    lower = max((float((block @ v).norm()) - b_error) * (1 - rel), 0.0)
    upper = max(sup.upper, lower)
    return CircularNorm(
        lower=lower,
        upper=upper,
        value=min(max(math.sqrt(max(value, 0.0)), lower), upper),
        frequency=tuple(int(f) for f in m),
        group=group,
        vector=v.resolve_conj().cpu().numpy(),
        continuous=sup.frequency,
    )
