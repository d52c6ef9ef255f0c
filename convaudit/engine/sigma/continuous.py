"""The size-independent bound S = sup over continuous frequencies of σ_max(B(ν)) (MATH.md §2).

S bounds σ_max of the layer's zero-padded (and circular) operator on EVERY input size, and
σ_circ(N) <= S on every grid N. On an alias grid of G_ax points per axis, the maximum m_G is
σ_circ of the circular operator on the grid G·s, a lower bound on S. The upper bound comes from
the Gram matrix being a trigonometric polynomial:

B(ν)B(ν)ᴴ = Σ_j H_j·exp(-i⟨ν, j⟩) with lags |j_ax| <= D_ax = ⌊d_ax(k_ax - 1)/s_ax⌋
(:mod:`gram_lags`). For every unit vector v, p(ν) = vᴴB(ν)B(ν)ᴴv is a NON-NEGATIVE real
trigonometric polynomial of degree D_ax in ν_ax. Bernstein's inequality (‖p'‖ <= D‖p‖, twice)
at a maximiser ν* of p (where p' = 0), against the nearest grid point (at most π/G_ax away per
axis), gives p(grid) >= ‖p‖·(1 - (πD_ax/G_ax)²/2) per axis, applied axis after axis. Taking
the sup over v:

    S² <= C·m_G²,  C = Π_ax 1 / (1 - (π·D_ax/G_ax)²/2)   (for π·D_ax/G_ax < √2).

So S ∈ [m_G, √C·m_G]: a multiplicative bracket, 1 + (πD/G)²/4 per axis (G = 64, D = 2: 0.25 %).
G is chosen per axis so that the bracket is at most ``rel_width`` wide, within a work budget.
"""

from __future__ import annotations

import math

from convaudit.engine.conv import Conv
from convaudit.engine.runtime import Runtime
from convaudit.engine.sigma.circular import CircularNorm, certificate_work, circular_sigma_max

#: most multiply-adds spent on the grid that brackets S (about a minute on 2 CPU cores)
S_WORK = 1e12
#: the alias grid is never finer than this per axis (the bracket is then ~1e-5 for D = 2)
MAX_ALIAS = 2048
#: above this many multiply-adds, σ_circ on a layer's own (large) grid is bounded through S
GRID_WORK = 5e11
#: the width of that bound (√C - 1)
GRID_REL_WIDTH = 1e-3


def gram_degree(conv: Conv) -> tuple[int, ...]:
    """D_ax: the largest lag, in alias-grid units, of the output-side Gram matrix BBᴴ."""
    return tuple(
        d * (k - 1) // s
        for k, s, d in zip(conv.kernel_size, conv.stride, conv.dilation, strict=True)
    )


def trig_factor(degree: tuple[int, ...], alias: tuple[int, ...]) -> float:
    """C with sup_ν λ_max(BBᴴ(ν)) <= C·max over the alias grid (inf when G is too coarse)."""
    factor = 1.0
    for dd, g in zip(degree, alias, strict=True):
        x = (math.pi * dd / g) ** 2 / 2
        if x >= 1:
            return math.inf
        factor /= 1 - x
    return factor


def alias_for(degree: tuple[int, ...], rel_width: float) -> tuple[int, ...]:
    """The coarsest alias grid whose factor √C stays within 1 + rel_width (equal share per
    axis; axes with D = 0 need one point)."""
    active = max(1, sum(1 for dd in degree if dd))
    # per axis: 1/(1 - x) <= (1 + rel)^(2/active)  <=>  x <= 1 - (1 + rel)^(-2/active)
    x = 1 - (1 + rel_width) ** (-2 / active)
    return tuple(
        1 if dd == 0 else min(MAX_ALIAS, math.ceil(math.pi * dd / math.sqrt(2 * x)))
        for dd in degree
    )


def size_independent_bound(
    conv: Conv, rt: Runtime, *, rel_width: float = 1e-3, work: float = S_WORK
) -> tuple[float, float, tuple[int, ...]]:
    """(lower, upper) bracket of S and the alias grid used."""
    norm, factor, alias = bracket_sup(conv, rt, rel_width=rel_width, work=work)
    return norm.lower, norm.upper * math.sqrt(factor), alias


def bracket_sup(
    conv: Conv,
    rt: Runtime,
    *,
    rel_width: float,
    work: float,
    most: tuple[int, ...] | None = None,
) -> tuple[CircularNorm, float, tuple[int, ...]]:
    """σ_circ on the chosen alias grid (its certified bracket, best frequency and vector), the
    factor C and the alias grid. ``most`` caps the alias grid per axis (e.g. a layer's own)."""
    stride = conv.stride
    degree = gram_degree(conv)
    alias = alias_for(degree, rel_width)
    if most is not None:
        alias = tuple(min(a, m) for a, m in zip(alias, most, strict=True))
    # Within the work budget: shrink the finest axes until it fits (G > πD/√2 keeps C finite).
    floor = tuple(max(1, math.floor(math.pi * dd / math.sqrt(2)) + 1) for dd in degree)

    def cost(a: tuple[int, ...]) -> float:
        return certificate_work(conv, tuple(g * s for g, s in zip(a, stride, strict=True)))

    while cost(alias) > work and any(a > f for a, f in zip(alias, floor, strict=True)):
        widest = max(range(len(alias)), key=lambda ax: alias[ax] - floor[ax])
        alias = tuple(
            max(floor[ax], int(a * 0.8)) if ax == widest else a for ax, a in enumerate(alias)
        )
    grid = tuple(g * s for g, s in zip(alias, stride, strict=True))
    norm = circular_sigma_max(conv, grid, rt)
    return norm, trig_factor(degree, alias), alias


def circular_upper(
    conv: Conv, grid: tuple[int, ...], rt: Runtime
) -> tuple[CircularNorm, float, tuple[int, ...], str]:
    """A certified upper bound on σ_circ(grid): (norm, factor C, the grid norm was computed on,
    description), with σ_circ(grid) <= norm.upper·√C.

    On the grid itself (C = 1) when that is affordable; on huge grids (a 256-channel layer at
    1024x1024 has 5·10^5 frequencies) through S on a coarser alias grid, whose cost does not
    grow with the input size: σ_circ(grid) <= S <= √C·m_G."""
    where = "x".join(map(str, grid))
    if certificate_work(conv, grid) <= GRID_WORK:
        return circular_sigma_max(conv, grid, rt), 1.0, grid, f"circular bound on {where}"
    most = tuple(n // s for n, s in zip(grid, conv.stride, strict=True))
    norm, factor, alias = bracket_sup(conv, rt, rel_width=GRID_REL_WIDTH, work=S_WORK, most=most)
    used = tuple(a * s for a, s in zip(alias, conv.stride, strict=True))
    if alias == most:
        return norm, 1.0, used, f"circular bound on {where}"
    coarse = "x".join(map(str, used))
    return norm, factor, used, f"sup over frequencies ({coarse} grid x {math.sqrt(factor):.6f})"
