"""σ_max of a layer whose operator is not the exact circular one (MATH.md §2).

Zero, reflect and replicate padding, and circular padding outside the exact geometry.

- **Certified upper bound.** Zeros: σ_circ(N) on the grid N >= H + max(t, E - H + 1), s | N.
  Other modes: the padded-then-valid factorisation A = C_valid·P, where P copies input entries
  into the padded tensor, so ‖A‖ <= σ_circ(N')·‖P‖ with N' >= the padded length and
  ‖P‖ = Π_axes √(most copies of one input entry) (P is a 0/1 matrix with one 1 per row, so
  PᵀP is the diagonal of copy counts). Reflect/replicate CAN amplify beyond the circular value:
  this factor is the honest price of certainty.
- **Exact value.** The top eigenvalue of AᵀA for the real operator and its adjoint
  (``lanczos.py``: dense LAPACK for small operators, else ARPACK tracking the top few Ritz values
  so a near-degenerate top pair is resolved), started from the circular top singular vector mixed
  with a seeded random vector; lower = ‖Ay‖ (certified).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convaudit.engine.conv import LayerOperator
from convaudit.engine.geometry import ConvGeometry, forward_geometry
from convaudit.engine.operator import PaddedConv, most_reads
from convaudit.engine.results import NormResult, Quantity
from convaudit.engine.runtime import Runtime
from convaudit.engine.sigma.circular import CircularNorm
from convaudit.engine.sigma.continuous import circular_upper
from convaudit.engine.sigma.lanczos import lanczos_sigma_max
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


def warm_start(norm: CircularNorm, big_grid: tuple[int, ...], op: LayerOperator) -> torch.Tensor:
    """The circular top right singular vector on ``big_grid`` as a real image on the layer's
    grid: x[c, p] = Re Σ_l conj(v[c, l])·exp(2πi·u_l·(p + t)/N). Both bounding operators
    (zeros: data at 0..H-1 read with shift t; others: padded tensor read with shift 0, data at
    t..t+H-1) put input p at phase position p + t."""
    geometry, stride, c_in = op.geometry, op.conv.stride, op.conv.c_in
    alias = tuple(n // s for n, s in zip(big_grid, stride, strict=True))
    c_in_g = op.conv.shape[1]
    n_alias = math.prod(stride)
    v = norm.vector.reshape(c_in_g, n_alias)
    ls = np.stack(np.meshgrid(*[np.arange(s) for s in stride], indexing="ij"), -1).reshape(
        n_alias, -1
    )
    u = np.asarray(norm.frequency)[None, :] + ls * np.asarray(alias)[None, :]  # (L, nd)
    coords = np.meshgrid(
        *[np.arange(n) + t for n, t in zip(geometry.grid, geometry.before, strict=True)],
        indexing="ij",
    )
    phase_arg = sum(
        u[:, ax, None] * coords[ax].reshape(1, -1) / big_grid[ax] for ax in range(len(big_grid))
    )
    waves = np.exp(2j * np.pi * phase_arg)  # (L, P)
    image = np.real(np.conj(v) @ waves)  # (c_in_g, P)
    x = np.zeros((c_in, image.shape[1]))
    x[norm.group * c_in_g : (norm.group + 1) * c_in_g] = image
    return torch.from_numpy(x.reshape(1, c_in, *geometry.grid))


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


def _too_large_for_lanczos(op: LayerOperator, upper: float, method: str, rt: Runtime) -> NormResult:
    """An operator too large for Lanczos: the certified upper bound, and (zero padding) a
    Lanczos lower bound on a sub-grid, where the operator is a compression of this one."""
    lower, how = 0.0, "no lower bound"
    geometry, mode = op.geometry, op.mode
    if mode == "zeros":
        scale = (LANCZOS_MAX_ENTRIES / 4 / smaller_side(op)) ** (1 / len(geometry.grid))
        small = sub_geometry(geometry, scale)
        if small is not None and smaller_side(op.on(small)) <= LANCZOS_MAX_ENTRIES:
            sub = padded_sigma_max(op.on(small), rt, lower_only=True)
            lower = min(sub.lower, upper)
            how = f"lower: Lanczos on the {'x'.join(map(str, small.grid))} sub-grid"
    closed = upper <= lower * (1 + rt.tol)
    quantity: Quantity = "exact" if closed else "upper-bound"
    return NormResult(
        upper,
        lower,
        upper,
        closed,
        quantity,
        mode,
        geometry.grid,
        f"{method}; {how} (the operator is too large for Lanczos)",
    )


def padded_sigma_max(
    layer_op: LayerOperator, rt: Runtime, *, exact: bool = True, lower_only: bool = False
) -> NormResult:
    """Certified bracket (and, with ``exact``, the converged value) of σ_max of the real operator.
    ``lower_only``: one Lanczos run for a good certified lower bound, no convergence work."""
    geometry, mode, tol = layer_op.geometry, layer_op.mode, rt.tol
    grid_n, gain = bound_grid(geometry, mode)
    circ, factor, grid_n, method = circular_upper(layer_op.conv, grid_n, rt)
    upper = circ.upper * math.sqrt(factor) * gain
    if gain != 1:
        method += f" x padding gain {gain:.4g}"
    if not exact:
        return NormResult(upper, 0.0, upper, False, "upper-bound", mode, geometry.grid, method)
    if smaller_side(layer_op) > LANCZOS_MAX_ENTRIES:
        return _too_large_for_lanczos(layer_op, upper, method, rt)
    op = PaddedConv(layer_op.to(torch.float64))
    start = warm_start(circ, grid_n, layer_op).to(op.kernel.device)
    # float32 products for the bulk of the Lanczos on CPU (3-5x cheaper; accepted only after a
    # float64 check). Not on CUDA, where float32 convs may run in TF32.
    op32 = None
    if layer_op.conv.kernel.device.type == "cpu":
        op32 = PaddedConv(layer_op.to(torch.float32))
    with torch.no_grad():
        if math.prod(op.out_shape) < math.prod(op.in_shape):
            # Lanczos on the smaller side (strided layers: AAᵀ is s^d times smaller), from the
            # warm start's image; ‖Aᵀu‖/‖u‖ is the lower bound there.
            res = lanczos_sigma_max(
                op.adjoint, op.cogram, op.apply(start), tol=tol,
                fast_gram=op32.cogram if op32 is not None else None, max_bytes=rt.max_memory // 4,
                lower_only=lower_only,
            )  # fmt: skip
        else:
            res = lanczos_sigma_max(
                op.apply, op.gram, start, tol=tol,
                fast_gram=op32.gram if op32 is not None else None, max_bytes=rt.max_memory // 4,
                lower_only=lower_only,
            )  # fmt: skip
    lower = min(res.lower, upper)
    converged = res.converged or upper <= lower * (1 + tol)
    value = min(res.sigma, upper) if converged else upper
    quantity: Quantity = "exact" if converged else "upper-bound"
    return NormResult(
        value,
        lower,
        upper,
        converged,
        quantity,
        mode,
        geometry.grid,
        f"lanczos ({res.products} products); upper: {method}",
        iterations=res.products,
    )
