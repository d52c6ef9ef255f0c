"""The size-independent bound S = sup over continuous frequencies of σ_max(B(ν)) (MATH.md §2).

S bounds σ_max of the layer's zero-padded (and circular) operator on EVERY input size. On an
alias grid of G points per axis, the maximum m_G is σ_circ of the circular operator on the grid
G·s, and σ_max(B(ν)) is Lipschitz in ν with constant L_ax/s_ax per axis, where
L_ax = 2π·d_ax·Σ_a |a_ax - (k_ax - 1)/2|·‖K_a‖₂ (the phase centre does not change σ), so

    S ∈ [m_G, m_G + Σ_ax L_ax / (2·G·s_ax)].

G is chosen per axis so that the bracket is at most ``rel_width`` wide relative to m_G, within a
frequency-count budget.
"""

from __future__ import annotations

import math

import torch

from convaudit.engine.circular_norm import circular_sigma_max
from convaudit.engine.runtime import Runtime

#: most alias frequencies evaluated for S (the Hermitian half of G^nd), and most work
S_BUDGET = 1 << 16
S_WORK = 4e9


def lipschitz_constants(
    kernel: torch.Tensor, dilation: tuple[int, ...], groups: int
) -> tuple[float, ...]:
    """L_ax per spatial axis, with ‖K_a‖₂ the norm of the tap's block-diagonal (per-group) matrix."""
    c_out, c_in_g = kernel.shape[:2]
    ksize = tuple(kernel.shape[2:])
    taps = kernel.reshape(groups, c_out // groups, c_in_g, -1).permute(3, 0, 1, 2).to(torch.float64)
    norms = torch.linalg.matrix_norm(taps, ord=2).amax(dim=1).cpu()  # (T,)
    norms = norms.reshape(ksize)
    out = []
    for ax, (k, d) in enumerate(zip(ksize, dilation, strict=True)):
        shape = [1] * len(ksize)
        shape[ax] = k
        offset = (torch.arange(k, dtype=torch.float64) - (k - 1) / 2).abs().reshape(shape)
        out.append(float(2 * math.pi * d * (offset * norms).sum()))
    return tuple(out)


def size_independent_bound(
    kernel: torch.Tensor,
    *,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    rt: Runtime,
    rel_width: float = 1e-3,
    tol: float = 1e-6,
) -> tuple[float, float, tuple[int, ...]]:
    """(lower, upper) bracket of S and the alias grid used."""
    nd = len(stride)
    lips = lipschitz_constants(kernel, dilation, groups)
    coarse = tuple([8] * nd)
    m0 = circular_sigma_max(
        kernel,
        tuple(g * s for g, s in zip(coarse, stride, strict=True)),
        stride=stride,
        dilation=dilation,
        groups=groups,
        rt=rt,
        tol=tol,
    ).lower
    target = rel_width * max(m0, 1e-300)
    # Equal error share per axis: L_ax / (2·G_ax·s_ax) <= target / nd.
    want = [
        max(1, math.ceil(nd * lip / (2 * s * target))) for lip, s in zip(lips, stride, strict=True)
    ]
    c_out, c_in_g = kernel.shape[:2]
    rows, cols = c_out // groups, c_in_g * math.prod(stride)
    per_freq = groups * min(rows, cols) ** 2 * max(rows, cols)
    count = min(2 * S_BUDGET, max(64, int(2 * S_WORK / per_freq)))
    cap = max(8, int(count ** (1 / nd)))
    alias = tuple(min(w, cap) for w in want)
    grid = tuple(g * s for g, s in zip(alias, stride, strict=True))
    norm = circular_sigma_max(
        kernel, grid, stride=stride, dilation=dilation, groups=groups, rt=rt, tol=tol
    )
    slack = sum(lip / (2 * g * s) for lip, g, s in zip(lips, alias, stride, strict=True))
    return norm.lower, norm.upper + slack, alias
