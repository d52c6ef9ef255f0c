"""Independent truth for the size-independent bound S = sup_ν σ_max(B(ν)).

B(ν) straight from its definition (MATH.md §1, numpy only, no convaudit code):
B(ν) = prod(s)^(-1/2)·[K̂((ν + 2πl)/s)]_l, K̂(ξ) = Σ_a K_a·exp(-i⟨ξ, a·d⟩), one block per group.
S is found by a dense sweep of the torus and a local maximisation from the best points.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.optimize


def blocks(weight, nu, stride, dilation, groups=1) -> np.ndarray:
    """B(ν) per group at the points ``nu`` ``(P, nd)`` radians: ``(P, groups, c_out/g, c_in/g·S)``
    with columns channel-major, alias-minor (as convaudit's ``frequency_block``)."""
    w = np.asarray(weight, np.float64)
    nu = np.atleast_2d(np.asarray(nu, np.float64))
    nd = w.ndim - 2
    co, ci = w.shape[:2]
    taps = list(itertools.product(*[range(k) for k in w.shape[2:]]))
    offsets = np.array(taps).reshape(-1, nd) * np.asarray(dilation)  # (T, nd)
    kernel = np.stack([w[(slice(None), slice(None), *t)] for t in taps])  # (T, co, ci)
    aliases = list(itertools.product(*[range(s) for s in stride]))
    out = np.zeros((len(nu), co, ci, len(aliases)), dtype=complex)
    for j, ls in enumerate(aliases):
        xi = (nu + 2 * np.pi * np.asarray(ls)) / np.asarray(stride)  # (P, nd)
        out[..., j] = np.einsum("pt,toc->poc", np.exp(-1j * xi @ offsets.T), kernel)
    out = out.reshape(len(nu), groups, co // groups, ci * len(aliases))
    return out / np.sqrt(len(aliases))


def block_sigmas(weight, nu, stride, dilation, groups=1) -> np.ndarray:
    """σ_max(B(ν)) (max over groups) at the points ``nu`` ``(P, nd)`` radians."""
    b = blocks(weight, nu, stride, dilation, groups)
    return np.linalg.svd(b, compute_uv=False)[..., 0].max(axis=1)


def sup_sigma(weight, stride, dilation, groups=1, *, points=None) -> float:
    """S from a dense sweep plus Nelder-Mead from the best few points (a lower bound on the
    true S, equal to it up to the optimiser's ~1e-12)."""
    nd = np.asarray(weight).ndim - 2
    if points is None:
        points = {1: 720, 2: 72, 3: 18}[nd]
    axes = [np.linspace(0, 2 * np.pi, points, endpoint=False)] * nd
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, nd)
    values = block_sigmas(weight, grid, stride, dilation, groups)
    best = float(values.max())
    for i in np.argsort(-values)[:6]:
        res = scipy.optimize.minimize(
            lambda x: -block_sigmas(weight, x[None], stride, dilation, groups)[0],
            grid[i],
            method="Nelder-Mead",
            options={"xatol": 1e-12, "fatol": 1e-15, "maxiter": 4000},
        )
        best = max(best, -float(res.fun))
    return best
