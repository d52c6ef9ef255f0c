"""σ_max of a layer whose operator is not the exact circular one (MATH.md §2).

Zero, reflect and replicate padding, and circular padding outside the exact geometry.

- **Certified upper bound.** Zeros: σ_circ(N) on the grid N >= H + max(t, E - H + 1), s | N.
  Other modes: the padded-then-valid factorisation A = C_valid·P, where P copies input entries
  into the padded tensor, so ‖A‖ <= σ_circ(N')·‖P‖ with N' >= the padded length and
  ‖P‖ = Π_axes √(most copies of one input entry) (P is a 0/1 matrix with one 1 per row, so
  PᵀP is the diagonal of copy counts). Reflect/replicate CAN amplify beyond the circular value:
  this factor is the honest price of certainty.
- **Certified lower bound, one product.** The windowed wave packet around the circular
  maximiser (:mod:`window`): ‖Ax‖ for a unit x; only where it can close the bracket at tol
  and its channel eigenproblems cost less than a few products (:func:`window_pays`).
- **To the precision asked for** (``rt.tol``): when upper <= lower·(1 + tol)² the bracket
  itself pins σ_max to tol (its midpoint, :func:`results.pins`) and nothing more runs (large
  grids, where the circular bound is within O((k/n)²) of the truth). Otherwise Lanczos on
  AᵀA for the real operator and its adjoint (``lanczos.py``: dense LAPACK for small
  operators, else a thick-restart Lanczos tracking the top few Ritz values) from the best
  candidate, until either its lower bound closes the bracket or its float64 residual says it
  converged to tol. With a gate's limit (``rt.limit``) it also stops once the bracket lies on
  one side of the limit.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convaudit.engine.conv import LayerOperator
from convaudit.engine.geometry import ConvGeometry, forward_geometry
from convaudit.engine.operator import PaddedConv, most_reads
from convaudit.engine.results import NormResult, bracket_result, pin_level, pins
from convaudit.engine.runtime import Runtime
from convaudit.engine.sigma.circular import CircularNorm
from convaudit.engine.sigma.continuous import circular_upper
from convaudit.engine.sigma.lanczos import lanczos_sigma_max
from convaudit.engine.sigma.window import plane_wave_start, window_lower
from convaudit.engine.spectrum.fourier import alias_grid
from convaudit.errors import UnsupportedLayerError


def copy_gain(geometry: ConvGeometry, mode: str) -> float:
    """‖P‖ of the padding map: Π over axes of √(max number of copies of one input entry)."""
    gain = 1.0
    for n, t, e in zip(geometry.grid, geometry.before, geometry.last_read, strict=True):
        gain *= math.sqrt(most_reads(n, t, t + e + 1, mode) or 1)
    return gain


def bound_grid(geometry: ConvGeometry, mode: str) -> tuple[tuple[int, ...], float]:
    """(grid N of the circular operator that bounds this one, multiplicative gain)."""
    if mode == "zeros":
        return geometry.zero_pad_bound_grid(), 1.0
    padded = tuple(t + e + 1 for t, e in zip(geometry.before, geometry.last_read, strict=True))
    grid = tuple(-(-p // s) * s for p, s in zip(padded, geometry.stride, strict=True))
    return grid, copy_gain(geometry, mode)


#: Lanczos on the real operator only while its smaller side has at most this many entries
#: (its Krylov basis holds ~40 such vectors); beyond it the exact value is bracketed instead
LANCZOS_MAX_ENTRIES = 1 << 22


def smaller_side(op: LayerOperator) -> int:
    """Entries of the operator's smaller side (inputs or outputs): Lanczos' vector length."""
    return min(op.sides)


def sub_geometry(geometry: ConvGeometry, scale: float) -> ConvGeometry | None:
    """The same conv (padding, stride, dilation) on a smaller grid, about ``scale`` per axis.

    For zero padding its operator is a compression of the full one: an input supported on the
    first h entries of each axis gives the same first outputs on both grids (reads past h are
    zeros either way), and the full grid only adds outputs. So σ_max(sub) <= σ_max(full)."""
    pads = tuple((t, max(a, 0)) for t, a in zip(geometry.before, geometry.after, strict=True))
    grid = []
    for n, k, s, d, (t, a), after in zip(
        geometry.grid, geometry.kernel_size, geometry.stride, geometry.dilation, pads,
        geometry.after, strict=True,
    ):  # fmt: skip
        reach = d * (k - 1) + 1
        h = max(reach - t - a, int(n * scale) // s * s, s, 1)
        grid.append(max(1, min(n + min(after, 0), h)))  # no more outputs than the full grid
    try:
        small = forward_geometry(
            tuple(grid), geometry.kernel_size, geometry.stride, geometry.dilation, pads
        )
    except UnsupportedLayerError:
        return None
    if any(o > f for o, f in zip(small.out_size, geometry.out_size, strict=True)):
        return None
    return small


#: the windowed packet is skipped where its channel eigenproblems cost more than this many
#: products of the operator: many channels on a small grid (a 512-channel 3x3 layer at 7x7:
#: 1 s, more than its whole Lanczos), where the bracket stays far wider than any tol anyway
WINDOW_MAX_PRODUCTS = 10


#: the packet is built only where Σ_ax (reach_ax/n_ax)² <= WINDOW_REACH·tol: where the bracket
#: can close. Its width (the circular bound on the enlarged grid above, the packet below) is
#: about a tenth of that sum (a 64-channel 3x3 layer: 1.9e-4 at 64x64, 4.6e-5 at 128x128);
#: elsewhere the packet only seeds Lanczos, and on ResNet-50's layers the plain plane wave of
#: the circular top vector seeds as well for less (256 channels at 14x14: 1.16 -> 0.73 s)
WINDOW_REACH = 50


def window_pays(op: LayerOperator, tol: float) -> bool:
    """Can the windowed packet close the bracket at ``tol`` (the grid is fine enough for the
    kernel's reach), and is it cheaper than WINDOW_MAX_PRODUCTS products of ``op``? It solves
    about 16 top eigenproblems of one group's smaller channel Gram matrix (refining the peak,
    one per shifted wave): ~8·m³ multiply-adds each."""
    conv, geometry = op.conv, op.geometry
    coarse = sum(
        ((k - 1) * d / n) ** 2
        for k, d, n in zip(conv.kernel_size, conv.dilation, geometry.grid, strict=True)
    )
    if coarse > WINDOW_REACH * tol:
        return False
    m = min(conv.rows, conv.cols)
    pixels = math.prod(geometry.out_size)
    product = 2 * conv.c_out * conv.shape[1] * math.prod(conv.kernel_size) * pixels
    return 16 * 8 * m**3 <= WINDOW_MAX_PRODUCTS * product


def _cheap_lower(
    op: LayerOperator, circ: CircularNorm, used: tuple[int, ...], rt: Runtime
) -> tuple[float, torch.Tensor | None, int]:
    """The windowed wave packet's certified lower bound around the circular maximiser (a
    frequency of the grid ``used``), and its unit vector; where it does not pay
    (:func:`window_pays`), no lower bound and the plane wave of the circular top vector as the
    Lanczos seed."""
    alias = np.asarray(alias_grid(used, op.conv.stride), dtype=np.float64)
    phi = np.asarray(circ.frequency, dtype=np.float64) / alias
    if not window_pays(op, rt.tol):
        return 0.0, plane_wave_start(op, phi, circ.group, circ.vector), 0
    return window_lower(op, phi, circ.group, 0.5 / alias, rt.max_memory // 4)


def _decided(lower: float, upper: float, rt: Runtime) -> bool:
    """Nothing more is needed: the bracket pins σ_max to tol, or lies on one side of the gate's
    limit."""
    if pins(lower, upper, rt.tol):
        return True
    return rt.limit is not None and (upper <= rt.limit or lower > rt.limit)


def _stop_level(upper: float, rt: Runtime) -> float:
    """The lower bound at which refinement can stop: the bracket closes, or the limit is passed."""
    level = pin_level(upper, rt.tol)
    if rt.limit is not None and rt.limit < upper:
        level = min(level, math.nextafter(rt.limit, math.inf))
    return level


def _too_large_for_lanczos(
    op: LayerOperator, lower: float, upper: float, method: str, rt: Runtime
) -> NormResult:
    """An operator too large for Lanczos: the certified upper bound, and as the lower end the
    better of the windowed packet and (zero padding) a Lanczos run on a sub-grid, where the
    operator is a compression of this one."""
    how = "lower: windowed wave packet" if lower > 0 else "no lower bound"
    geometry, mode = op.geometry, op.mode
    if mode == "zeros" and not _decided(lower, upper, rt):
        scale = (LANCZOS_MAX_ENTRIES / 4 / smaller_side(op)) ** (1 / len(geometry.grid))
        small = sub_geometry(geometry, scale)
        if small is not None and smaller_side(op.on(small)) <= LANCZOS_MAX_ENTRIES:
            sub = padded_sigma_max(op.on(small), rt, lower_only=True)
            if sub.lower > lower:
                lower = sub.lower
                how = f"lower: Lanczos on the {'x'.join(map(str, small.grid))} sub-grid"
    return bracket_result(
        lower, upper, tol=rt.tol, operator=mode, grid=geometry.grid,
        method=f"{method}; {how} (the operator is too large for Lanczos)",
    )  # fmt: skip


def padded_sigma_max(
    layer_op: LayerOperator, rt: Runtime, *, exact: bool = True, lower_only: bool = False
) -> NormResult:
    """Certified bracket of σ_max of the real operator, refined (with ``exact``) until it is
    within ``rt.tol``, Lanczos has converged to it, or the gate's ``rt.limit`` is decided.
    ``lower_only``: one Lanczos run for a good certified lower bound, no convergence work."""
    geometry, mode, tol = layer_op.geometry, layer_op.mode, rt.tol
    grid_n, gain = bound_grid(geometry, mode)
    circ, factor, grid_n, method = circular_upper(layer_op.conv, grid_n, rt)
    upper = circ.upper * math.sqrt(factor) * gain
    if gain != 1:
        method += f" x padding gain {gain:.4g}"
    lower, start, packet = _cheap_lower(layer_op, circ, grid_n, rt)
    lower = min(lower, upper)
    if not exact or (_decided(lower, upper, rt) and not lower_only):
        return bracket_result(
            lower, upper, tol=tol, operator=mode, grid=geometry.grid, iterations=packet,
            method=(
                f"windowed wave packet ({packet} products)" if packet else "no lower bound"
            ) + f"; upper: {method}",
        )  # fmt: skip
    if smaller_side(layer_op) > LANCZOS_MAX_ENTRIES:
        return _too_large_for_lanczos(layer_op, lower, upper, method, rt)
    op = PaddedConv(layer_op.to(torch.float64))
    # no candidate (too large to build): Lanczos from its seeded random vector alone
    start = torch.zeros(1, *op.in_shape) if start is None else start
    start = start.to(op.kernel)
    # float32 products for the bulk of the Lanczos on CPU (3-5x cheaper; accepted only after a
    # float64 check). Not on CUDA, where float32 convs may run in TF32.
    op32 = None
    if layer_op.conv.kernel.device.type == "cpu":
        op32 = PaddedConv(layer_op.to(torch.float32))
    stop_at = None if lower_only else _stop_level(upper, rt)
    with torch.no_grad():
        if math.prod(op.out_shape) < math.prod(op.in_shape):
            # Lanczos on the smaller side (strided layers: AAᵀ is s^d times smaller), from the
            # start's image; ‖Aᵀu‖/‖u‖ is the lower bound there.
            res = lanczos_sigma_max(
                op.adjoint, op.cogram, op.apply(start), tol=tol,
                fast_gram=op32.cogram if op32 is not None else None, max_bytes=rt.max_memory // 4,
                lower_only=lower_only, stop_at=stop_at, adjoint=op.apply,
            )  # fmt: skip
        else:
            res = lanczos_sigma_max(
                op.apply, op.gram, start, tol=tol,
                fast_gram=op32.gram if op32 is not None else None, max_bytes=rt.max_memory // 4,
                lower_only=lower_only, stop_at=stop_at, adjoint=op.adjoint,
            )  # fmt: skip
    lower = max(lower, min(res.lower, upper))
    if res.dense:  # λ_max of the formed AᵀA: exact up to its rounding
        margin = 16 * max(res.products, 1) * float(np.finfo(np.float64).eps)
        lower, upper = max(lower, res.lower * (1 - margin)), min(upper, res.lower * (1 + margin))
    how = "dense" if res.dense else "lanczos"
    return bracket_result(
        lower, upper, tol=tol, operator=mode, grid=geometry.grid,
        converged_value=res.sigma if res.converged else None,
        method=f"{how} ({packet + res.products} products); upper: {method}",
        iterations=packet + res.products,
    )  # fmt: skip
