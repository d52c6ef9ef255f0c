"""σ_max of a grouped (or depthwise) padded conv, one group at a time (MATH.md §1, §2).

A grouped conv is the direct sum of its groups: σ_max is the largest group's. Every group
gets its own certified bracket, all at once: the circular bound of each group on the
enlarged grid (:func:`circular.group_bounds`), and each group's windowed wave packet, all
groups in ONE input, so one product of the grouped conv gives every ‖A_g x_g‖. Only groups
whose upper bound exceeds the best lower bound by more than ``tol`` (or, for a gate, exceeds
its limit) can still decide the answer; those alone are refined, by independent Lanczos
recurrences run side by side (one grouped conv applies all of them, the inner products are
per group). A depthwise Conv1d on 1000 samples is then 512 problems of 1000 entries, most
of them settled by their brackets, instead of one problem of 512 000.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convaudit.engine.conv import Conv, LayerOperator
from convaudit.engine.operator import PaddedConv
from convaudit.engine.results import NormResult, bracket_result, pin_level, pins
from convaudit.engine.runtime import Runtime
from convaudit.engine.sigma.circular import group_bounds
from convaudit.engine.sigma.lanczos import RESTART_BASIS, _thick_restart
from convaudit.engine.sigma.padded import bound_grid
from convaudit.engine.sigma.window import (
    group_kernels,
    group_rayleigh,
    refine_peak,
    windowed_candidates,
)
from convaudit.engine.spectrum.fourier import alias_grid

#: most batched Lanczos steps for the groups still open
MAX_STEPS = 3000


def grouped_sigma_max(op: LayerOperator, rt: Runtime, *, exact: bool) -> NormResult | None:
    """Certified bracket of σ_max of a grouped padded operator from per-group brackets, refined
    (with ``exact``) to ``rt.tol`` or until ``rt.limit`` is decided. None where per-group
    bounds are not available (blocks too large to solve at every frequency)."""
    conv, geometry, tol = op.conv.to(torch.float64), op.geometry, rt.tol
    grid_n, gain = bound_grid(geometry, op.mode)
    bounds = group_bounds(conv, grid_n, rt)
    if bounds is None:
        return None
    upper_g = bounds[0] * gain
    lower_g, starts, packet = _group_lowers(op.to(torch.float64), bounds[1], grid_n)
    upper = float(upper_g.max())
    lower = min(float(lower_g.max()), upper)
    where = "x".join(map(str, grid_n))
    method = f"per group ({conv.groups}): windowed wave packets; upper: circular bound on {where}"
    if gain != 1:
        method += f" x padding gain {gain:.4g}"
    decided = pins(lower, upper, tol) or (
        rt.limit is not None and (upper <= rt.limit or lower > rt.limit)
    )
    if not exact or decided:
        return bracket_result(
            lower,
            upper,
            tol=tol,
            operator=op.mode,
            grid=geometry.grid,
            method=method,
            iterations=packet,
        )
    # Groups that can still leave the bracket open (and, for a gate, pass its limit).
    still_open = ~pins(lower, upper_g, tol)
    if rt.limit is not None:
        still_open &= upper_g > rt.limit
    open_groups = np.flatnonzero(still_open)
    # each group stops once its own bracket closes (or it passes the limit)
    stop = pin_level(upper_g[open_groups], tol)
    if rt.limit is not None:
        stop = np.minimum(stop, math.nextafter(rt.limit, math.inf))
    lowers, converged, values, steps = _refine(op, open_groups, starts, stop, tol, rt)
    lower_g[open_groups] = np.maximum(lower_g[open_groups], lowers)
    lower = min(float(lower_g.max()), upper)
    # Converged: every group that could exceed the final lower bound by tol is settled.
    settled = converged | pins(lower_g[open_groups], upper_g[open_groups], tol)
    settled |= pins(lower, upper_g[open_groups], tol)
    value = None
    if bool(settled.all()):
        value = max(lower, float(values[converged].max()) if converged.any() else lower)
    return bracket_result(
        lower, upper, tol=tol, operator=op.mode, grid=geometry.grid, converged_value=value,
        method=f"{method}; lanczos on {open_groups.size} groups ({steps} batched products)",
        iterations=packet + steps,
    )  # fmt: skip


def _group_lowers(
    op: LayerOperator, peaks: np.ndarray, grid_n: tuple[int, ...]
) -> tuple[np.ndarray, torch.Tensor, int]:
    """Every group's windowed-packet lower bound ``(groups,)`` and its best candidate, all
    groups in one input ``(1, c_in, *grid)`` (each group's channels hold its own), and the
    products spent."""
    conv = op.conv
    groups = np.arange(conv.groups)
    alias = np.asarray(alias_grid(grid_n, conv.stride), dtype=np.float64)
    phi = refine_peak(conv, group_kernels(conv, groups), peaks / alias, 0.5 / alias)
    candidates = windowed_candidates(op, groups, phi).to(conv.kernel.device)
    ratio, _ = group_rayleigh(PaddedConv(op), candidates, conv.groups)
    best = ratio.argmax(dim=0)  # (groups,)
    per_group = candidates.reshape(len(candidates), conv.groups, -1)
    chosen = per_group[best, torch.arange(conv.groups)]
    lowers = ratio.max(dim=0).values.cpu().numpy()
    return lowers, chosen.reshape(1, *candidates.shape[1:]), len(candidates)


def _refine(
    op: LayerOperator,
    chosen: np.ndarray,
    starts: torch.Tensor,
    stop: np.ndarray,
    tol: float,
    rt: Runtime,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Lanczos on the groups ``chosen`` side by side (float64), in chunks that fit the memory
    budget: per group its certified lower bound, whether it converged to tol (float64
    residual), its value, and the batched products spent."""
    conv, geometry = op.conv.to(torch.float64), op.geometry
    c_in_g, rows = conv.shape[1], conv.rows
    n_in, n_out = c_in_g * math.prod(geometry.grid), rows * math.prod(geometry.out_size)
    per_group = 8 * (RESTART_BASIS + 8) * min(n_in, n_out)
    width = max(1, rt.max_memory // 4 // per_group)
    lowers = np.zeros(chosen.size)
    converged = np.zeros(chosen.size, dtype=bool)
    values = np.zeros(chosen.size)
    steps = 0
    start_groups = starts.reshape(conv.groups, c_in_g, *geometry.grid)
    for begin in range(0, chosen.size, width):
        part = slice(begin, min(chosen.size, begin + width))
        picked = chosen[part]
        sub = _sub_operator(op, picked)
        x0 = start_groups[torch.as_tensor(picked)]
        res = _batched_lanczos(sub, x0, stop[part], tol)
        lowers[part], converged[part], values[part] = res[:3]
        steps += res[3]
    return lowers, converged, values, steps


def _sub_operator(op: LayerOperator, picked: np.ndarray) -> PaddedConv:
    """The grouped conv of the groups ``picked`` alone (float64)."""
    conv = op.conv.to(torch.float64)
    per = conv.kernel.reshape(conv.groups, conv.rows, *conv.shape[1:])
    kernel = per[torch.as_tensor(picked, device=per.device)].reshape(-1, *conv.shape[1:])
    sub = Conv(kernel.contiguous(), conv.stride, conv.dilation, len(picked))
    return PaddedConv(LayerOperator(sub, op.geometry, op.mode))


def _batched_lanczos(
    sub: PaddedConv, x0: torch.Tensor, stop: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Independent Lanczos recurrences, one per group of ``sub`` (its groups side by side),
    from ``x0`` ``(B, c_in/g, *grid)``: per group ‖A_g y_g‖/‖y_g‖ (certified lower bound),
    converged (float64 residual ‖AᵀAy - θy‖ <= 2·tol·θ), the value, and the products."""
    batch = x0.shape[0]
    in_shape, out_shape = tuple(x0.shape[1:]), (sub.c_out // batch, *sub.geometry.out_size)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return sub.apply(x.reshape(1, -1, *in_shape[1:])).reshape(batch, *out_shape)

    def backward(y: torch.Tensor) -> torch.Tensor:
        return sub.adjoint(y.reshape(1, -1, *out_shape[1:])).reshape(batch, *in_shape)

    output_side = math.prod(out_shape) < math.prod(in_shape)
    with torch.no_grad():
        start = forward(x0) if output_side else x0
        shape = torch.Size((1, *start.shape[1:]))

        def gram(v: torch.Tensor) -> torch.Tensor:
            return forward(backward(v)) if output_side else backward(forward(v))

        level = torch.from_numpy(np.asarray(stop, dtype=np.float64) ** 2 * (1 + 1e-9))
        # Each start plus an equal-norm seeded random vector, as for one operator: a packet can
        # be an exact eigenvector of a lower eigenvalue (cosines under replicate padding), and
        # Lanczos from it alone would never leave that invariant subspace.
        flat = start.reshape(batch, -1)
        noise = torch.from_numpy(np.random.default_rng(0).standard_normal(flat.shape)).to(flat)
        unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-300)
        noise = noise / noise.norm(dim=1, keepdim=True)
        mixed = unit + noise
        # A tiny group (one entry) can cancel to zero exactly: then the noise alone.
        cancelled = mixed.norm(dim=1, keepdim=True) < 0.5
        mixed = torch.where(cancelled, noise, mixed)
        ritz, _, done, _, products = _thick_restart(
            gram, shape, mixed, tol=tol / 2, max_products=MAX_STEPS,
            stop_theta=level,
        )  # fmt: skip
        vec = ritz[:, 0].reshape(batch, *start.shape[1:])
        image = backward(vec) if output_side else forward(vec)
        back = gram(vec)
    norm = vec.reshape(batch, -1).norm(dim=1).clamp_min(1e-300)
    theta = (image.reshape(batch, -1).norm(dim=1) / norm) ** 2
    residual = (
        (back - theta.reshape(-1, *[1] * (vec.ndim - 1)) * vec).reshape(batch, -1).norm(dim=1)
    )
    residual = residual / (theta * norm).clamp_min(1e-300)
    # a zero vector has a zero residual but certifies nothing
    converged = done.to(residual.device) & (residual <= 2 * tol) & (theta > 0)
    sigma = theta.clamp_min(0).sqrt()
    return (
        sigma.cpu().numpy(),
        converged.cpu().numpy(),
        sigma.cpu().numpy(),
        products + 1,
    )
