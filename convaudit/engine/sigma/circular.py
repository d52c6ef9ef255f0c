"""σ_max of the circular operator, fast, with a certified bracket (MATH.md §1, §5).

σ_max = max over (alias) frequencies m of σ_max(B(m)). Per frequency, on the smaller Gram
matrix G(m) (λ_max(G) = σ_max²), evaluated from the kernel's autocorrelation
(:mod:`gram_lags`; per-frequency products of the blocks where that is cheaper):

- **starting level**: a few evenly spread frequencies are ranked by batched Lanczos (Ritz
  values are lower bounds) and the best gets an exact top eigenpair (LAPACK): λ*;
- **upper bound**: every frequency is certified λ_max(G) <= μ = λ*·(1 + tol) by a Cholesky
  factorisation of μI - G (it exists iff μI - G is positive definite: r³/3 per frequency, the
  one unavoidable O(r³) step). The few that fail are ranked by Lanczos, the best is solved
  exactly, μ rises to it and the rest are certified again, until none is left;
- **lower bound**: ‖B(m)v‖ for the best frequency's top right singular vector v.

Small Gram matrices (r <= ``DIRECT_SIZE``) go straight to a batched eigensolver.

1×1 kernels have the same block at every frequency, whatever the stride (σ(B) = σ(W)): one
matrix. The work is in float64 whatever the runtime dtype (it is cheap, and a float32 Cholesky
certificate would need a margin of r²·ε32, far above any useful tolerance). Rounding is
accounted for rigorously: Cholesky's backward error (Demmel; Rump's verification bound
(r+1)·r·u·μ), the eigensolver's r·u·‖G‖, and the Gram evaluation's error, bounded through
Σ_a ‖K_a‖_F (:attr:`LagGram.tap_mass`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.results import ProgressCallback
from convaudit.engine.runtime import Runtime, chunk_size, chunks, run_chunks
from convaudit.engine.sigma.gram_lags import evaluate_gram, lag_gram, lag_pairs
from convaudit.engine.spectrum.frequencies import alias_frequencies, frequency_block

LANCZOS_STEPS = 16
#: frequencies sampled (and ranked by Lanczos) for the starting level of the certificate
SAMPLE = 8
#: Gram matrices up to this size go straight to the eigensolver (iterating costs more)
DIRECT_SIZE = 24
UNIT = float(np.finfo(np.float64).eps) / 2


@dataclass(frozen=True)
class CircularNorm:
    lower: float
    upper: float
    #: best estimate: sqrt of the best frequency's exact top eigenvalue (inside [lower, upper])
    value: float
    #: the frequency and right singular vector (complex, ``c_in/g·prod(s)``) achieving ``lower``
    frequency: tuple[int, ...]
    group: int
    vector: np.ndarray
    #: where ``upper`` is the size-independent S (:mod:`continuous`): its maximiser ν* (alias
    #: torus, radians), ``frequency`` being the grid frequency nearest to it
    continuous: tuple[float, ...] | None = None


def rounding_margin(size: int, dtype: torch.dtype) -> float:
    """Relative widening that covers the rounding of an eigensolver or SVD of this size."""
    eps = torch.finfo(dtype).eps
    return 16.0 * max(size, 1) * eps


def _lanczos_top(gram: torch.Tensor, steps: int) -> torch.Tensor:
    """Top Ritz values of ``steps`` Lanczos steps (full reorthogonalisation), batched: Rayleigh
    quotients on a Krylov space, so lower bounds on λ_max, and far closer to it than as many
    power steps when the top eigenvalues are close."""
    batch, n = gram.shape[0], gram.shape[-1]
    steps = max(1, min(steps, n))
    gen = torch.Generator(device="cpu").manual_seed(1)
    q = torch.randn(n, 1, generator=gen, dtype=torch.float64).to(gram.device, gram.dtype)
    q = (q / q.norm()).expand(batch, n, 1)
    basis = [q]
    alphas, betas = [], []
    for _ in range(steps):
        w = gram @ basis[-1]
        alpha = (basis[-1].mH @ w).real
        alphas.append(alpha[:, 0, 0])
        stack = torch.cat(basis, dim=-1)  # (B, n, j)
        for _ in range(2):  # classical Gram-Schmidt, twice
            w = w - stack @ (stack.mH @ w)
        beta = w.norm(dim=-2, keepdim=True)
        # An invariant subspace (beta ~ 0, e.g. a low-rank G) ends that matrix's Krylov space:
        # its later vectors are zero, which only adds zero Ritz values.
        alive = beta > 1e-12 * alpha.abs().clamp_min(torch.finfo(torch.float64).tiny)
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        betas.append(beta[:, 0, 0])
        basis.append(torch.where(alive, w / beta.clamp_min(torch.finfo(torch.float64).tiny), 0))
    k = len(alphas)
    tri = torch.diag_embed(torch.stack(alphas, -1))
    off = torch.stack(betas[: k - 1], -1) if k > 1 else None
    if off is not None:
        tri = tri + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return torch.linalg.eigvalsh(tri.cpu())[:, -1]


def _lambda_max(gram: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of each Hermitian matrix (numpy's LAPACK on CPU: torch's MKL heevd was
    measured up to 20x slower on these batched sizes)."""
    if gram.device.type == "cpu":
        return torch.from_numpy(np.linalg.eigvalsh(gram.numpy())[..., -1].copy())
    return torch.linalg.eigvalsh(gram)[..., -1]


def _top_eigenpair(gram: torch.Tensor) -> tuple[float, torch.Tensor]:
    """λ_max and its unit eigenvector of one Hermitian matrix. On CPU, LAPACK's subset driver:
    the tridiagonal reduction dominates, so it costs about as much as the eigenvalues alone."""
    if gram.device.type == "cpu":
        m = gram.numpy()
        if not np.any(m.imag):
            m = np.ascontiguousarray(m.real)
        n = m.shape[-1]
        vals, vecs = scipy.linalg.eigh(m, subset_by_index=[n - 1, n - 1], check_finite=False)
        return float(vals[-1]), torch.from_numpy(vecs[:, -1].astype(np.complex128))
    vals, vecs = torch.linalg.eigh(gram)
    return float(vals[-1]), vecs[:, -1].to(torch.complex128)


def _certify_below(gram: torch.Tensor, mu: float) -> torch.Tensor:
    """True where λ_max(G) < μ is proven (up to rounding, see the module doc): μI - G is positive
    definite iff its Cholesky factorisation succeeds (Sylvester's inertia)."""
    shifted = -gram
    shifted.diagonal(dim1=-2, dim2=-1).add_(mu)
    _, info = torch.linalg.cholesky_ex(shifted)
    return info == 0


class _GramSource:
    """The smaller Gram matrix of every (alias frequency, group), in chunks, in complex128."""

    def __init__(
        self, conv: Conv, grid: tuple[int, ...], freqs: np.ndarray, *, max_bytes: int
    ) -> None:
        self.conv, self.grid, self.freqs, self.groups = conv, grid, freqs, conv.groups
        rows, cols, c_in_g = conv.rows, conv.cols, conv.shape[1]
        self.one_by_one = conv.pointwise
        # 1×1: σ(B) = σ(W) for every stride, so work on W itself (its smaller side).
        lag_conv = conv.unit_stride() if self.one_by_one else conv
        pairs = lag_pairs(lag_conv)
        inner = max(rows, cols)
        self.lags = None
        if pairs is not None and pairs * c_in_g <= 4 * len(freqs) * inner:
            lag_grid = tuple(1 for _ in grid) if self.one_by_one else grid
            self.lags = lag_gram(lag_conv, lag_grid, max_bytes)
            self.size = self.lags.size
            terms = inner + pairs + 2 * len(self.lags.lags) + 16
            mass = self.lags.tap_mass
        else:
            self.size = min(rows, cols)
            terms = math.prod(conv.kernel_size) + inner + 16
            per_group = conv.kernel.reshape(conv.groups, rows, c_in_g, -1)
            mass = float(torch.linalg.matrix_norm(per_group.permute(3, 0, 1, 2)).sum(0).max()) ** 2
        #: bound on ‖G_computed - G‖₂ (entrywise rounding, summed over tap pairs)
        self.gram_error = 1.01 * terms * UNIT * mass
        self.tap_mass = mass

    def matrices(self, part: slice) -> torch.Tensor:
        """``(F_part·groups, n, n)`` complex128 Gram matrices of the frequencies ``part``."""
        return self._matrices(self.freqs[part])

    def matrices_at(self, flat: np.ndarray) -> torch.Tensor:
        """The Gram matrices of the flat (frequency·groups + group) indices ``flat``."""
        f, g = np.divmod(flat, self.groups)
        unique = np.unique(f)
        mats = self._matrices(self.freqs[unique])
        return mats[torch.as_tensor(np.searchsorted(unique, f) * self.groups + g)]

    def _matrices(self, freqs: np.ndarray) -> torch.Tensor:
        if self.lags is not None:
            g = evaluate_gram(self.lags, np.zeros_like(freqs) if self.one_by_one else freqs)
        else:
            b = self._blocks(freqs)
            g = b.mH @ b if b.shape[-1] <= b.shape[-2] else b @ b.mH
        return g.reshape(-1, self.size, self.size)

    def _blocks(self, freqs: np.ndarray) -> torch.Tensor:
        """The true blocks B(m) ``(F, groups, rows, cols)`` of the operator on the grid."""
        return frequency_block(self.conv, freqs, self.grid)

    def top_pair(
        self, f_index: int, group: int, eigvec: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """The unit right singular vector v of B(m)[group] from the top eigenvector of its Gram
        matrix (which side that is depends on the source), and ‖B(m)v‖ (computed)."""
        block = self._blocks(self.freqs[f_index : f_index + 1])[0, group]
        rows, cols = block.shape
        eigvec = eigvec.to(block.device)
        if (self.lags is not None and self.lags.output_side) or (self.lags is None and cols > rows):
            v = block.mH @ eigvec
        elif self.one_by_one and eigvec.numel() != cols:
            # W's right vector, spread evenly over the stride's aliases (B = [W … W]/√S)
            aliases = cols // eigvec.numel()
            v = eigvec.repeat_interleave(aliases)
        else:
            v = eigvec
        v = v / v.norm().clamp_min(1e-300)
        return v, float((block @ v).norm())


def certificate_work(conv: Conv, grid: tuple[int, ...]) -> float:
    """Rough multiply-adds of :func:`circular_sigma_max` on ``grid``: per (Hermitian-half)
    frequency and group, the Cholesky certificate of an n×n complex matrix and its evaluation
    from the lags."""
    n, groups = min(conv.rows, conv.cols), conv.groups
    if conv.pointwise:
        return float(groups * n**3)
    freqs = math.prod(grid) / math.prod(conv.stride) / 2 + 1
    lags = math.prod(2 * k - 1 for k in conv.kernel_size)
    return freqs * groups * n * n * (4 * n / 3 + 2 * lags)


def _best_of(
    source: _GramSource, flat: np.ndarray, rt: Runtime, step: int
) -> tuple[float, tuple[int, int], torch.Tensor]:
    """The exact top eigenpair of the most promising of the (frequency·groups + group) indices
    ``flat``: Lanczos ranks them (``step`` matrices at a time), LAPACK solves the winner."""
    j = int(flat[0])
    if flat.size > 1:
        ritz = [
            _lanczos_top(source.matrices_at(flat[i : i + step]).to(rt.device), LANCZOS_STEPS)
            for i in range(0, flat.size, step)
        ]
        j = int(flat[int(torch.cat(ritz).argmax())])
    lam, vec = _top_eigenpair(source.matrices_at(np.array([j]))[0].to(rt.device))
    return lam, divmod(j, source.groups), vec


def circular_sigma_max(
    conv: Conv, grid: tuple[int, ...], rt: Runtime, progress: ProgressCallback | None = None
) -> CircularNorm:
    """Certified bracket on σ_max of the circular operator on ``grid`` (stride must divide it),
    to within ``rt.tol``."""
    freqs, _ = alias_frequencies(grid, conv.stride, half=True)
    conv = conv.to(torch.float64)
    groups, tol = conv.groups, rt.tol
    if conv.pointwise:
        freqs = freqs[:1]  # the same matrix at every frequency (MATH.md §1)
    side = min(conv.rows, conv.cols)
    per = (conv.c_out * conv.cols + 4 * groups * side * side) * 16
    size = chunk_size(rt, per, len(freqs), what="sigma_max")
    # its pair products live ~3x over the budget share
    source = _GramSource(conv, grid, freqs, max_bytes=max(rt.max_memory // 16, 1 << 20))
    n = source.size
    eig_margin = 8 * (n + 1) * UNIT  # eigensolver: |λ̃ - λ| <= p(n)·u·‖G‖
    chol_margin = 2 * (n + 2) ** 2 * UNIT  # Cholesky success at μ => λ_max <= μ(1 + this)

    parts = list(chunks(len(freqs), size))
    direct = n <= DIRECT_SIZE

    # A starting level: the exact top eigenvalue of the most promising of a few evenly spread
    # frequencies. Every frequency above it is found by the certificate pass below.
    best, best_at, best_vec = -1.0, (0, 0), None
    if not direct:
        total = len(freqs) * groups
        sample = np.unique(np.linspace(0, total - 1, min(SAMPLE, total)).round().astype(np.int64))
        best, best_at, best_vec = _best_of(source, sample, rt, size)
    floor = max(best * (1 + tol), torch.finfo(torch.float64).tiny)

    # Certify every frequency below the floor (Cholesky of floor·I - G). Small matrices
    # go straight to the eigensolver.
    def certify(part: slice) -> tuple[float, float, int, np.ndarray]:
        gram = source.matrices(part).to(rt.device)
        if direct:
            lams = _lambda_max(gram).cpu()
            j = int(lams.argmax())
            top = float(lams[j])
            return top * (1 + eig_margin), top, part.start * groups + j, np.empty(0, np.int64)
        ok = _certify_below(gram, floor).cpu().numpy()
        return floor * (1 + chol_margin), -1.0, -1, np.flatnonzero(~ok) + part.start * groups

    upper_lam, failed = 0.0, []
    if len(freqs) * groups == 1 and best_vec is not None:  # the one matrix was solved exactly
        parts, upper_lam = [], best * (1 + eig_margin)
    for bound, top, flat, fails in run_chunks(rt, certify, parts, progress, "sigma_max"):
        upper_lam = max(upper_lam, bound)
        failed.append(fails)
        if top > best:
            best, best_at, best_vec = top, divmod(flat, groups), None
    # The few frequencies above the floor: the best of them (Lanczos-ranked) is solved exactly,
    # the floor rises to it, and the rest are certified again, until none is left.
    pending = np.concatenate(failed) if failed else np.empty(0, np.int64)
    while pending.size:
        lam, at, vec = _best_of(source, pending, rt, size)
        if lam > best:
            best, best_at, best_vec = lam, at, vec
        floor = max(floor, best * (1 + tol))
        upper_lam = max(upper_lam, floor * (1 + chol_margin))
        pending = pending[pending != at[0] * groups + at[1]]
        if not pending.size:
            break
        still = [
            part[~_certify_below(source.matrices_at(part).to(rt.device), floor).cpu().numpy()]
            for part in np.array_split(pending, max(1, -(-pending.size // size)))
        ]
        pending = np.concatenate(still) if still else pending[:0]
    f_index, group = best_at
    if best_vec is None:
        best, best_vec = _top_eigenpair(
            source.matrices(slice(f_index, f_index + 1))[group].to(rt.device)
        )
    v, norm_bv = source.top_pair(f_index, group, best_vec)
    # ‖Bv‖ for a unit v is a lower bound; the computed B differs from the true one by rounding.
    b_error = 1.01 * (math.prod(conv.kernel_size) + 8) * UNIT * math.sqrt(source.tap_mass)
    lower = max(norm_bv - b_error, 0.0)
    upper = math.sqrt(max(upper_lam, 0.0) + source.gram_error)
    upper = max(upper, lower)
    value = min(max(math.sqrt(max(best, 0.0)), lower), upper)
    vector = v.resolve_conj().cpu().numpy()
    return CircularNorm(lower, upper, value, tuple(int(x) for x in freqs[f_index]), group, vector)


def group_bounds(
    conv: Conv, grid: tuple[int, ...], rt: Runtime
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per group of a grouped conv, a certified upper bound on σ_max of its circular operator on
    ``grid`` and the alias frequency ``(groups, nd)`` where it peaks; None for blocks over
    ``DIRECT_SIZE`` (each frequency's Gram matrix is solved exactly: no shared certificate).

    A grouped conv is the direct sum of its groups, so these bound every group on its own:
    the layer's refinement then needs only the groups that can still hold its maximum."""
    conv = conv.to(torch.float64)
    if min(conv.rows, conv.cols) > DIRECT_SIZE:
        return None
    freqs, _ = alias_frequencies(grid, conv.stride, half=True)
    groups = conv.groups
    per = (conv.c_out * conv.cols + 4 * groups * DIRECT_SIZE**2) * 16
    size = chunk_size(rt, per, len(freqs), what="sigma_max")
    source = _GramSource(conv, grid, freqs, max_bytes=max(rt.max_memory // 16, 1 << 20))
    eig_margin = 8 * (source.size + 1) * UNIT

    def solve(part: slice) -> tuple[np.ndarray, np.ndarray]:
        lams = _lambda_max(source.matrices(part).to(rt.device)).cpu().numpy()
        lams = lams.reshape(-1, groups)
        return lams.max(axis=0), lams.argmax(axis=0) + part.start

    parts = list(chunks(len(freqs), size))
    top = np.full(groups, -np.inf)
    where = np.zeros(groups, dtype=np.int64)
    for lam, at in run_chunks(rt, solve, parts, None, "sigma_max"):
        better = lam > top
        top[better], where[better] = lam[better], at[better]
    upper = np.sqrt(np.maximum(top, 0.0) * (1 + eig_margin) + source.gram_error)
    return upper, freqs[where]
