"""λ(ν) = σ_max(B(ν))² of a conv on the continuous alias torus (MATH.md §1-§2).

The frequency blocks B(ν) exist at every ν ∈ [0, 2π)^nd (radians on the alias torus; the grid
frequency m of a grid N = s·M is ν = 2πm/M). λ(ν) is the top eigenvalue of the smaller Gram
matrix G(ν) (BBᴴ or BᴴB: same nonzero eigenvalues). :class:`Landscape` evaluates G(ν) (from the
kernel's lags, :mod:`gram_lags`, where they exist; else from the blocks), knows the degree of λ
as a trigonometric polynomial, bounds the rounding of every evaluation, and climbs from a point
onto a peak of λ (:meth:`Landscape.climb`).

**Degree and period.** BBᴴ(ν) = Σ_j H_j·exp(-i⟨ν, j⟩) over the integer lags j = (a - a')·d/s
with s | (a - a')·d (:mod:`gram_lags`), so |j_ax| <= ⌊d_ax(k_ax - 1)/s_ax⌋. When every lag of
an axis is a multiple of g_ax (a dilation d at stride 1: all of them are multiples of d), λ has
period 2π/g_ax along it: the search runs in the reduced coordinate x_ax = g_ax·ν_ax, where λ is a
trigonometric polynomial of degree D_ax = max|j_ax|/g_ax and the d² equal maxima of a dilated
kernel are one. Axes without lags (D = 0: a 1-wide kernel axis, or k = 2 at stride 2) do not
vary and stay at 0.

**Rounding.** Every evaluated G differs from the true one by at most :attr:`gram_error` (spectral
norm): the sums over taps and the GEMMs (as in :mod:`circular`), and the phases, whose angles of
size up to 2π·ΣD carry a relative rounding error. ‖B̃v‖ differs from ‖Bv‖ by at most
:attr:`block_error`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.sigma.circular import UNIT, _top_eigenpair
from convaudit.engine.sigma.gram_lags import lag_gram, lag_pairs, phase_sum
from convaudit.engine.spectrum.frequencies import continuous_block

#: evaluations of λ (each one top eigenpair) one climb may spend
CLIMB_EVALS = 40


@dataclass(frozen=True)
class Peak:
    """A point of the torus (reduced coordinates) with its certified ``lower`` <= σ_max(B)."""

    x: np.ndarray
    group: int
    #: the computed top eigenvalue of G there (an estimate of λ, not a bound)
    value: float
    lower: float
    #: unit right singular vector of B(ν)[group] (``frequency_block``'s column order)
    vector: np.ndarray
    #: evaluations of λ (top eigenpairs) spent finding it
    evaluations: int = 1


def output_lags(conv: Conv) -> np.ndarray:
    """The integer lags ``(L, nd)`` of BBᴴ: (a - a')·d/s wherever the stride divides it."""
    positions = np.array(list(itertools.product(*[range(k) for k in conv.kernel_size])))
    positions = positions.reshape(-1, conv.nd) * np.asarray(conv.dilation)
    diffs = (positions[:, None, :] - positions[None, :, :]).reshape(-1, conv.nd)
    step = np.asarray(conv.stride)
    kept = diffs[np.all(diffs % step == 0, axis=1)] // step
    return np.unique(kept, axis=0)


class Landscape:
    """G(ν) and B(ν) of every group at continuous frequencies, in reduced coordinates x."""

    def __init__(self, conv: Conv, *, max_bytes: int) -> None:
        conv = conv.to(torch.float64)
        self.conv, self.groups, self.nd = conv, conv.groups, conv.nd
        lags = output_lags(conv)
        span = np.abs(lags).max(axis=0) if len(lags) else np.zeros(conv.nd, np.int64)
        period = [math.gcd(*(int(v) for v in lags[:, ax])) for ax in range(conv.nd)]
        #: g_ax: λ has period 2π/g_ax along axis ax (1 on axes without lags)
        self.period = tuple(max(1, p) for p in period)
        #: D_ax: the degree of λ in the reduced coordinate x_ax = g_ax·ν_ax
        self.degree = tuple(int(s) // g for s, g in zip(span, self.period, strict=True))
        self.active = tuple(ax for ax, deg in enumerate(self.degree) if deg > 0)
        rows, cols, c_in_g = conv.rows, conv.cols, conv.shape[1]
        inner = max(rows, cols)
        per_group = conv.kernel.reshape(conv.groups, rows, c_in_g, -1).permute(3, 0, 1, 2)
        mass = float(torch.linalg.matrix_norm(per_group).sum(0).max()) ** 2
        #: (Σ_a ‖K_a‖_F)², the largest over groups: bounds λ everywhere (and scales rounding)
        self.tap_mass = mass
        # angles up to 2π·ΣD (x is wrapped into [0, 2π)), each with a few roundings
        phase_terms = 2 * (self.nd + 2) * (2 * math.pi * sum(self.degree) + 1)
        taps = math.prod(conv.kernel_size)
        reach = sum((k - 1) * d for k, d in zip(conv.kernel_size, conv.dilation, strict=True))
        block_terms = taps + 8 + 2 * (self.nd + 2) * (2 * math.pi * (reach + 1) + 1)
        self.block_error = 1.01 * block_terms * UNIT * math.sqrt(mass)
        pairs = lag_pairs(conv)
        lag_bytes = len(lags) * conv.groups * min(rows, cols) ** 2 * 8
        #: the lags in reduced coordinates ``(L, nd)`` (None: G from the blocks)
        self.lags: np.ndarray | None = None
        if pairs is not None and lag_bytes <= max_bytes:
            full = lag_gram(conv, conv.stride, max(max_bytes // 4, 1 << 20))
            self.lags = (full.lags // np.asarray(self.period, dtype=np.int64)).astype(np.float64)
            self._coefficients = full.coefficients.reshape(len(full.lags), -1)
            self.size = full.size
            self.output_side = full.output_side
            terms = inner + pairs + 2 * len(full.lags) + 16 + phase_terms
            self.gram_error = 1.01 * terms * UNIT * mass
            #: real multiply-adds of one G(ν) of all groups
            self.gram_cost = 2.0 * len(full.lags) * conv.groups * self.size**2
        else:
            self.size = min(rows, cols)
            self.output_side = rows <= cols
            rel = self.block_error / math.sqrt(mass) if mass else 0.0
            self.gram_error = 1.01 * mass * (2 * rel + rel * rel + (inner + 2) * UNIT)
            self.gram_cost = 4.0 * conv.groups * (taps * rows * cols + rows * cols * self.size)

    def nu(self, x: np.ndarray) -> np.ndarray:
        """Alias-torus frequencies (radians, in [0, 2π)) of reduced points ``x`` ``(F, nd)``."""
        return np.mod(np.asarray(x, dtype=np.float64) / np.asarray(self.period), 2 * np.pi)

    def grams(self, x: np.ndarray, *, sign: float = 1.0) -> torch.Tensor:
        """``(F, groups, n, n)`` complex128 Gram matrices at the reduced points ``x`` (times
        ``sign``: -1 gives -G, ready to be shifted, without another pass over it)."""
        x = np.mod(np.asarray(x, dtype=np.float64).reshape(-1, self.nd), 2 * np.pi)
        n = self.size
        if self.lags is not None:
            angle = -(x @ self.lags.T)  # (F, L)
            gram = phase_sum(sign * np.cos(angle), sign * np.sin(angle), self._coefficients)
            return gram.reshape(len(x), self.groups, n, n)
        b = self.blocks(x)
        g = b @ b.mH if self.output_side else b.mH @ b
        return g.neg_() if sign < 0 else g

    def shifted(self, x: np.ndarray, group: np.ndarray, mu: np.ndarray) -> torch.Tensor:
        """μI - G(x)[group] per point, ``(K, n, n)`` complex128 (C order)."""
        if self.groups == 1:
            out = self.grams(x, sign=-1.0)[:, 0]
        else:
            unique, where = np.unique(x, axis=0, return_inverse=True)
            mats = self.grams(unique, sign=-1.0).reshape(-1, self.size, self.size)
            out = mats[torch.as_tensor(where.reshape(-1) * self.groups + group)]
        out.diagonal(dim1=-2, dim2=-1).add_(torch.as_tensor(mu, device=out.device)[:, None])
        return out

    def blocks(self, x: np.ndarray, *, derivative: int | None = None) -> torch.Tensor:
        """B (or ∂B/∂x_ax with ``derivative=ax``) at the reduced points ``x``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.nd)
        block = continuous_block(self.conv, self.nu(x), derivative=derivative)
        return block if derivative is None else block / self.period[derivative]

    def eigen_cost(self) -> float:
        """Real multiply-adds of one top eigenpair (Hermitian tridiagonal reduction dominates)."""
        return 3.0 * self.size**3 + self.gram_cost

    def point(self, x: np.ndarray, group: int) -> tuple[float, torch.Tensor, np.ndarray]:
        """(λ̃ computed, B(x)[group], unit right singular vector v) at one reduced point."""
        lam, vec = _top_eigenpair(self.grams(x)[0, group])
        block = self.blocks(x)[0, group]
        v = block.mH @ vec if self.output_side else vec
        if not bool(v.any()):  # B = 0 (an all-zero group): any unit vector
            v = torch.zeros(block.shape[-1], dtype=block.dtype, device=block.device)
            v[0] = 1
        v = v / v.norm()
        return lam, block, v.resolve_conj().cpu().numpy()

    def peak_at(self, x: np.ndarray, group: int) -> Peak:
        """The certified lower bound ‖B(x)v‖ (rounding removed) at one reduced point."""
        lam, block, v = self.point(x, group)
        return Peak(np.asarray(x, dtype=np.float64), group, lam, self._lower(block, v), v)

    def _lower(self, block: torch.Tensor, v: np.ndarray) -> float:
        vt = torch.from_numpy(v).to(block.device, block.dtype)
        norm_bv = float((block @ vt).norm())
        # ‖B̃v‖ vs ‖Bv‖, and the computed norms of Bv and v (relative (n+2)u each)
        rel = 2 * (max(block.shape) + 2) * UNIT
        return max((norm_bv - self.block_error) * (1 - rel) / float(np.linalg.norm(v)), 0.0)

    def climb(
        self, x0: np.ndarray, group: int, *, tol: float = 1e-12, evals: int = CLIMB_EVALS
    ) -> Peak:
        """Local ascent of λ from the reduced point ``x0`` (BFGS with the exact gradient
        ∂λ/∂x = 2·Re((Bv)ᴴ·∂B·v), v the top right singular vector; Hellmann-Feynman), and the
        certified lower bound at the best point reached. Never worse than starting at ``x0``.
        It stops once the relative gradient is under 0.05·√tol: near a peak of curvature κ that
        leaves λ about 1e-3·tol/κ below it (a search that needs more climbs again)."""
        x0 = np.asarray(x0, dtype=np.float64).reshape(self.nd)
        if not self.active:
            return self.peak_at(x0, group)
        active = list(self.active)
        best = _Best()

        def full(y: np.ndarray) -> np.ndarray:
            x = x0.copy()
            x[active] = y
            return np.mod(x, 2 * np.pi)

        def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
            if best.evaluations >= evals:
                raise _OutOfEvaluations
            x = full(y)
            lam, block, v = self.point(x, group)
            best.offer(lam, x, block, v)
            vt = torch.from_numpy(v).to(block.device, block.dtype)
            bv = block @ vt
            grad = [
                2 * float(torch.vdot(bv, self.blocks(x, derivative=ax)[0, group] @ vt).real)
                for ax in active
            ]
            return -lam / best.scale, -np.asarray(grad) / best.scale

        # a failed line search or the evaluation cap ends the climb at its best point
        with contextlib.suppress(_OutOfEvaluations, ValueError, np.linalg.LinAlgError):
            scipy.optimize.minimize(
                negative,
                x0[active],
                jac=True,
                method="BFGS",
                options={"gtol": max(1e-11, 0.05 * math.sqrt(tol))},
            )
        assert best.block is not None and best.v is not None
        return Peak(
            best.x, group, best.value, self._lower(best.block, best.v), best.v, best.evaluations
        )


class _OutOfEvaluations(Exception):
    pass


class _Best:
    """The best point a climb has evaluated."""

    def __init__(self) -> None:
        self.value, self.scale, self.evaluations = -1.0, 1.0, 0
        self.x = np.zeros(0)
        self.block: torch.Tensor | None = None
        self.v: np.ndarray | None = None

    def offer(self, lam: float, x: np.ndarray, block: torch.Tensor, v: np.ndarray) -> None:
        if self.evaluations == 0:
            self.scale = max(lam, 1e-300)
        self.evaluations += 1
        if lam > self.value:
            self.value, self.x, self.block, self.v = lam, x, block, v
