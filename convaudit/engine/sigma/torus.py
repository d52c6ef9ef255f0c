"""The size-independent bound S = sup_ν σ_max(B(ν)), certified to a tolerance by branch and
bound over cells of the continuous frequency torus (MATH.md §2).

S bounds σ_max of the layer's zero-padded and circular operators on EVERY input size
(σ_zero(H) <= σ_circ(N) <= S). λ(ν) = S(ν)² is the top eigenvalue of the smaller Gram matrix
G(ν) (:mod:`landscape`: reduced coordinates x, degrees D_ax, rounding bounds).

**The cell test.** Let x* be a global maximiser of λ, u* a unit top eigenvector of BBᴴ(x*), and
C a cell (:mod:`cells`) with centre c that contains x*. Along the segment from x* to c,

    p(t) = u*ᴴ·BBᴴ(x* + t·(c - x*))·u* = Σ_j (u*ᴴH_j u*)·exp(-i·t·⟨c - x*, j⟩)

is a real exponential sum whose frequencies lie in [-Δ, Δ], Δ = Σ_ax D_ax·|c_ax - x*_ax| (at
most the cell's spread): an entire function of exponential type Δ. On ℝ, 0 <= p(t) <= λ(·) <= S²
(a Rayleigh quotient of a positive semidefinite G) and p(0) = S², so f = 2p/S² - 1 is real, of
type Δ, |f| <= 1 and f(0) = 1. Duffin and Schaeffer's inequality f'² + Δ²f² <= Δ² (real entire
functions of exponential type Δ bounded by 1 on ℝ, Bull. AMS 43 (1937); Boas, *Entire
Functions*, §11.4) makes φ = arccos f Lipschitz with constant Δ, so f(t) >= cos(Δt) for
|t| <= π/Δ. At t = 1:

    λ(c) >= p(1) >= S²·(1 + cos Δ)/2 = S²·cos²(Δ/2)        (Δ <= π).

(Sharp: p = cos²(Δt/2) attains it. Bernstein's ‖p''‖ <= Δ²‖p - S²/2‖ gives the weaker
S²·(1 - Δ²/4).) So a cell whose centre is certified λ(c) <= T·cos²(Δ/2) cannot hold a
maximiser unless S² <= T. The certificate is a Cholesky factorisation of μI - G̃(c) (it exists
iff μ > λ_max(G̃)), with the rounding accounted for as in :mod:`circular`: success at μ proves
λ_max(G̃) <= μ·(1 + 2(n+2)²u), and ‖G̃ - G‖ <= gram_error. Small Gram matrices get their exact
top eigenvalue instead (+ 8(n+1)u·λ). A real kernel has λ(-ν) = λ(ν) (G(-ν) = conj G(ν)), so
the cells cover the torus with the last varying axis cut to [0, π].

**The search.** L = a certified lower bound ‖B(x)v‖² (:meth:`landscape.Landscape.climb`: a
local ascent onto a peak from the best of a few spread starting points), T = L·(1 + tol)².
Every cell is tested at μ = T·cos²(Δ/2) (less the margins); failing cells are split
(:meth:`cells.Cover.split`). When no cell is left, S ∈ [√L, √T]: certified to tol. L must end
within tol of S, so higher peaks are looked for on the way: a cell failing with Δ <= Δ_L/2
(cos(Δ_L/2)·(1 + tol) = 1) has its centre above L·(1 + 1.5·tol) and is climbed from; otherwise
a few failing cells far from every point seen so far are probed each round (Lanczos values,
lower bounds on λ) and the best is climbed from when it beats L. The tolerance is reached in
stages (LADDER: 1e-1, 1e-4, 1e-8, then the one asked for): each stage's leaves are retested at
the next T, and every cell carries the bound of the last stage it passed (a child inherits its
parent's: if the maximiser is in the child it is in the parent). Out of work budget, the result
is the bracket those bounds give, marked not closed: a bound, never tighter than it is. A cell
whose threshold lies under nearly all the λ values sampled so far is split without a test (a
test it would fail; skipping one never affects validity).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.linalg.lapack
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.runtime import Runtime, chunk_size, chunks, run_chunks, single_threaded_blas
from convaudit.engine.sigma.cells import Cells, Cover
from convaudit.engine.sigma.circular import DIRECT_SIZE, UNIT, _lambda_max, _lanczos_top
from convaudit.engine.sigma.landscape import CLIMB_EVALS, Landscape, Peak, output_lags

#: most multiply-adds the search may spend (about a minute on 2 busy CPU cores)
S_WORK = 1e12
#: Δ = Σ D·h of the starting cells (cos²(Δ/2) = 0.77: every cell gets a finite bound at once)
START_SPREAD = 1.0
#: the tolerances reached one after the other before the one asked for
LADDER = (1e-1, 1e-4, 1e-8)
#: starting cells ranked for the first climb, and failing cells ranked per round
SAMPLE = 16
RANKED = 32
#: failing cells probed per round for a peak above the best one (Lanczos: a lower bound on λ),
#: among those farther than PROBE_GAP spreads from every point probed or climbed before (32, not
#: 8: on random 512-channel 3x3 layers the higher peak is found rounds earlier, measured up to
#: 30% fewer cell tests; a probe costs a few Lanczos steps, a test one Cholesky)
PROBES = 32
PROBE_GAP = 4.0
#: a cell of spread >= SKIP_SPREAD is split without a test when fewer than SKIP_SHARE of the
#: values of λ sampled so far lie under its threshold: it would almost surely fail (skipping a
#: test never affects validity; it saves the retests of a flat landscape's coarse cells)
SKIP_SHARE = 0.2
SKIP_SPREAD = 0.1
LANCZOS_STEPS = 24
#: cell tests a search needs at tol 1e-4, by number of varying axes: random weights (the
#: hardest case, a flat landscape) as measured for benchmarks/bench_sup.py; trained weights need
#: far fewer. Only used to choose between S and a grid's own certificate.
TYPICAL_TESTS = (1, 150, 2500, 10000)


@dataclass(frozen=True)
class SupBound:
    """A certified bracket ``[lower, upper]`` of S = sup_ν σ_max(B(ν)) and where it is reached."""

    lower: float
    upper: float
    #: the best point ν* found, radians on the alias torus, one per axis
    frequency: tuple[float, ...]
    group: int
    #: unit right singular vector of B(ν*)[group] achieving ``lower`` (complex,
    #: ``c_in/g·prod(s)``, ``frequency_block``'s column order)
    vector: np.ndarray
    #: upper <= lower·(1 + rt.tol)
    closed: bool
    #: leaves of the final cover, and cell tests (Cholesky or eigenvalue) done
    cells: int
    tests: int


class _Search:
    def __init__(self, land: Landscape, rt: Runtime, work: float) -> None:
        self.rt, self.work, self.land = rt, work, land
        self.active = list(land.active)
        self.cover = Cover(tuple(land.degree[ax] for ax in self.active))
        n = land.size
        self.direct = n <= DIRECT_SIZE
        self.chol_margin = 2 * (n + 2) ** 2 * UNIT
        self.eig_margin = 8 * (n + 1) * UNIT
        # multiply-adds as in circular.certificate_work (Cholesky 4n³/3, eigenvalues 3n³)
        self.test_cost = (3.0 if self.direct else 4.0 / 3.0) * n**3
        self.spent, self.tests = 0.0, 0
        #: points already climbed from or probed (reduced coordinates of the varying axes)
        self.seen = np.zeros((0, len(self.active)))
        #: values of λ (lower bounds) at evenly spread points: what a cell may expect
        self.samples = np.zeros(0)

    def points(self, cells: Cells) -> np.ndarray:
        """The cells' centres as full reduced points ``(K, nd)`` (fixed axes at 0)."""
        x = np.zeros((len(cells), self.land.nd))
        x[:, self.active] = self.cover.points(cells)
        return x

    # -- evaluation -------------------------------------------------------------------------
    def grams(self, cells: Cells) -> torch.Tensor:
        """``(K, n, n)`` Gram matrices of the cells' centres, each for its group."""
        unique, where = np.unique(self.points(cells), axis=0, return_inverse=True)
        mats = self.land.grams(unique)  # (U, groups, n, n)
        index = torch.as_tensor(where.reshape(-1) * self.land.groups + cells.group)
        return mats.reshape(-1, *mats.shape[-2:])[index].to(self.rt.device)

    def test(self, cells: Cells, target: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(passed, bound, estimate) per cell against S² <= ``target``: ``bound`` is the cell's
        certified bound on S² (its inherited one where it failed), ``estimate`` the exact λ̃ of
        its centre where known (small Gram matrices), else -1."""
        spread = self.cover.spread(cells)
        cos2 = np.where(spread < math.pi, np.cos(np.minimum(spread, math.pi) / 2) ** 2, 0.0)
        cos2 = cos2 * (1 - 8 * UNIT)
        err = self.land.gram_error
        n = self.land.size
        size = chunk_size(self.rt, 4 * 16 * n * n * self.land.groups, len(cells), what="S")

        def run(part: slice) -> tuple[np.ndarray, np.ndarray]:
            sub = cells.take(np.arange(part.start, part.stop))
            if self.direct:
                lam = _lambda_max(self.grams(sub)).cpu().numpy()
                return lam, lam * (1 + self.eig_margin) + err
            mu = (target * cos2[part] - err) / (1 + self.chol_margin)
            mu = np.maximum(mu, torch.finfo(torch.float64).tiny)
            shifted = self.land.shifted(self.points(sub), sub.group, mu)
            return np.full(len(mu), -1.0), np.where(
                _cholesky_ok(shifted), mu * (1 + self.chol_margin) + err, np.inf
            )

        out = run_chunks(self.rt, run, list(chunks(len(cells), size)), None, "S")
        estimate = np.concatenate([o[0] for o in out]) if out else np.zeros(0)
        lam_up = np.concatenate([o[1] for o in out]) if out else np.zeros(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            own = np.where(cos2 > 0, lam_up / cos2, np.inf)
        bound = np.minimum(cells.bound, own)
        self.tests += len(cells)
        centres = len(np.unique(cells.centre, axis=0))
        self.spent += len(cells) * self.test_cost + centres * self.land.gram_cost
        return bound <= target, bound, estimate

    def rank(self, cells: Cells, estimate: np.ndarray) -> int:
        """Index of the most promising cell centre: the exact λ̃ where known, else Lanczos."""
        if estimate.size and estimate.max() >= 0:
            return int(estimate.argmax())
        if len(cells) == 1:
            return 0
        ritz = _lanczos_top(self.grams(cells), LANCZOS_STEPS)
        self.spent += len(cells) * LANCZOS_STEPS * 4.0 * self.land.size**2
        return int(ritz.argmax())

    def climb(self, cells: Cells, index: int) -> Peak:
        x = self.points(cells.take(np.array([index])))[0]
        peak = self.land.climb(x, int(cells.group[index]), tol=self.rt.tol)
        self.spent += peak.evaluations * self.land.eigen_cost()
        self.seen = np.concatenate([self.seen, peak.x[None, self.active]])
        return peak

    def probe(self, failed: Cells, best: Peak, tol: float) -> Peak | None:
        """A peak above ``best`` near failing cells far from every point seen so far, if
        their Lanczos values (lower bounds on λ) show one. Farthest-point choices spread the
        probes over the region that keeps failing, round after round. Only a gain that matters
        at ``tol`` is climbed for."""
        if not len(failed):
            return None
        x = self.cover.points(failed)
        distance = self._distance(x, self.seen) / self.cover.spread(failed)
        chosen: list[int] = []
        for _ in range(min(PROBES, len(failed))):
            pick = int(distance.argmax())
            if distance[pick] <= PROBE_GAP:
                break
            chosen.append(pick)
            distance = np.minimum(
                distance, self._distance(x, x[pick : pick + 1]) / self.cover.spread(failed)
            )
        if not chosen:
            return None
        picked = failed.take(np.asarray(chosen))
        ritz = _lanczos_top(self.grams(picked), LANCZOS_STEPS).numpy()
        self.spent += len(picked) * LANCZOS_STEPS * 4.0 * self.land.size**2
        self.seen = np.concatenate([self.seen, x[chosen]])
        top = int(ritz.argmax())
        if ritz[top] <= best.value * (1 + tol / 2):
            return None
        return self.climb(picked, top)

    def _distance(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        """ℓ1 distance in X = D∘x on the torus, to the nearest of ``points`` or their mirror
        images -p (λ(-x) = λ(x)); inf without points."""
        if not len(points):
            return np.full(len(x), np.inf)
        out = np.full(len(x), np.inf)
        for mirror in (points, -points):
            diff = np.mod(x[:, None, :] - mirror[None, :, :], 2 * math.pi)
            wrapped = np.minimum(diff, 2 * math.pi - diff) @ self.cover.degree
            out = np.minimum(out, wrapped.min(1))
        return out

    def hopeless(self, cells: Cells, target: float) -> np.ndarray:
        """Cells whose threshold T·cos²(Δ/2) is under all but SKIP_SHARE of the sampled λ."""
        spread = self.cover.spread(cells)
        if self.direct or not len(self.samples):
            return np.zeros(len(cells), dtype=bool)
        threshold = target * np.cos(np.minimum(spread, math.pi) / 2) ** 2
        below = np.searchsorted(np.sort(self.samples), threshold) / len(self.samples)
        return (below < SKIP_SHARE) & (spread >= SKIP_SPREAD)

    def round_cost(self, count: int) -> float:
        return count * (self.test_cost + self.land.gram_cost)

    def floor(self, best: Peak) -> float:
        """The tightest relative tolerance the rounding margins leave reachable."""
        if best.lower <= 0:
            return 0.0
        rel = self.chol_margin + self.eig_margin + self.land.gram_error / best.lower**2
        return 4 * (rel + self.land.block_error / best.lower) + 1e-15


def estimated_work(conv: Conv, tol: float) -> float:
    """Rough multiply-adds of :func:`size_independent_bound` for ``conv`` at ``tol`` (a random-
    weight layer's; in the units of :func:`circular.certificate_work`), without building it."""
    lags = output_lags(conv)
    degree = []
    for ax in range(conv.nd):
        span = int(np.abs(lags[:, ax]).max())
        if span:
            degree.append(span // math.gcd(*(int(v) for v in lags[:, ax])))
    width = len(degree)
    n, groups, taps = min(conv.rows, conv.cols), conv.groups, math.prod(conv.kernel_size)
    per_test = n * n * ((3.0 if n <= DIRECT_SIZE else 4.0 / 3.0) * n + 2 * len(lags))
    scale = min(max(1 + 0.25 * math.log10(1e-4 / tol), 0.3), 3.0)
    # the starting cells (as Cover.start's boxes), for every group
    starts = groups * math.prod(2 * math.pi * d * width / (2 * START_SPREAD) for d in degree)
    tests = starts / 2 + TYPICAL_TESTS[min(width, 3)] * scale
    setup = taps * (taps + 1) / 2 * groups * conv.rows**2 * max(conv.rows, conv.cols)
    climbs = 3 * CLIMB_EVALS * 3.0 * n**3
    return tests * per_test + setup + climbs


def _cholesky_ok(shifted: torch.Tensor) -> np.ndarray:
    """Per matrix: does its Cholesky factorisation exist (it is positive definite)? On CPU,
    LAPACK's zpotrf in place (the transposed view of a C-order Hermitian matrix is its
    conjugate, with the same inertia): measured 2x faster than torch's batched path."""
    if shifted.device.type != "cpu":
        return (torch.linalg.cholesky_ex(shifted)[1] == 0).cpu().numpy()
    ok = np.empty(len(shifted), dtype=bool)
    for i, matrix in enumerate(shifted.numpy()):
        ok[i] = scipy.linalg.lapack.zpotrf(matrix.T, lower=1, overwrite_a=1, clean=0)[1] == 0
    return ok


def _stages(tol: float) -> list[float]:
    return [t for t in LADDER if t > tol] + [tol]


@contextlib.contextmanager
def _serial() -> Iterator[None]:
    """One torch and one BLAS thread for the serial parts (setup, climbs, ranking: small
    products, one eigenpair): OpenMP pools spinning on them were measured 2-8x slower on a busy
    machine. The cell tests still run on ``run_chunks``' worker threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_threaded_blas():
            yield
    finally:
        torch.set_num_threads(previous)


def size_independent_bound(conv: Conv, rt: Runtime, *, work: float = S_WORK) -> SupBound:
    """Certified bracket of S = sup over continuous frequencies of σ_max(B(ν)), to ``rt.tol``
    (relative) when ``work`` (multiply-adds) allows; see the module doc."""
    with _serial():
        return _search(Landscape(conv, max_bytes=max(rt.max_memory // 8, 1 << 20)), rt, work)


def _search(land: Landscape, rt: Runtime, work: float) -> SupBound:
    search = _Search(land, rt, work)
    if not search.active:  # λ does not vary (e.g. 1×1 kernels): one exact eigenvalue per group
        return _constant(search, rt)
    leaves = search.cover.start(START_SPREAD, land.groups, land.tap_mass * (1 + 1e-9))
    # The first level: the most promising of a few spread starting cells, climbed.
    count = len(leaves) if search.direct else min(SAMPLE, len(leaves))
    picked = leaves.take(np.unique(np.linspace(0, len(leaves) - 1, count).round().astype(int)))
    grams = search.grams(picked)
    if search.direct:
        estimate = _lambda_max(grams).cpu().numpy()
    else:
        estimate = _lanczos_top(grams, LANCZOS_STEPS).numpy()
        search.spent += len(picked) * LANCZOS_STEPS * 4.0 * land.size**2
    search.samples = estimate
    best = search.climb(picked, int(estimate.argmax()))
    tol = max(rt.tol, search.floor(best))
    exhausted = False
    for stage_tol in _stages(tol):
        open_cells, passed = leaves, []
        # cos(Δ_L/2)·(1 + tol) = 1: a cell failing with Δ <= Δ_L/2 has its centre above L
        climb_spread = math.acos(1 / (1 + stage_tol))
        while len(open_cells):
            if search.spent + search.round_cost(len(open_cells)) > work:
                exhausted = True
                break
            # (1 - 16u): the reported √target must not round above lower·(1 + tol)
            scale = (1 + stage_tol) * (1 - 16 * UNIT)
            target = max(best.lower**2 * scale**2, torch.finfo(torch.float64).tiny)
            skip = search.hopeless(open_cells, target)
            skipped, open_cells = open_cells.take(skip), open_cells.take(~skip)
            ok, open_cells.bound, estimate = search.test(open_cells, target)
            passed.append(open_cells.take(ok))
            failed = Cells.concat([open_cells.take(~ok), skipped])
            if search.direct:
                promising = estimate > best.value * (1 + stage_tol / 4)
            else:
                promising = ~ok & (search.cover.spread(open_cells) <= climb_spread)
            if promising.any():
                candidates = open_cells.take(promising)
                order = np.argsort(
                    -estimate[promising] if search.direct else search.cover.spread(candidates)
                )
                picked = candidates.take(order[:RANKED])
                peak = search.climb(
                    picked, search.rank(picked, estimate[promising][order[:RANKED]])
                )
                if peak.lower > best.lower:
                    best = peak
            elif not search.direct:
                found = search.probe(failed, best, tol)
                if found is not None and found.lower > best.lower:
                    best = found
            open_cells = search.cover.split(failed)
        leaves = Cells.concat([*passed, open_cells] if exhausted else passed)
        if exhausted:
            break
    upper = max(math.sqrt(float(leaves.bound.max())), best.lower)
    return _result(best, land, upper, rt, cells=len(leaves), tests=search.tests)


def _constant(search: _Search, rt: Runtime) -> SupBound:
    """No varying axis: S is the top singular value of the one block of each group."""
    x = np.zeros((1, search.land.nd))
    lam = _lambda_max(search.land.grams(x)[0]).cpu().numpy()  # (groups,)
    group = int(lam.argmax())
    best = search.land.peak_at(x[0], group)
    bound = float(lam.max()) * (1 + search.eig_margin) + search.land.gram_error
    upper = max(math.sqrt(bound), best.lower)
    return _result(best, search.land, upper, rt, cells=1, tests=search.land.groups)


def _result(
    best: Peak, land: Landscape, upper: float, rt: Runtime, *, cells: int, tests: int
) -> SupBound:
    return SupBound(
        lower=best.lower,
        upper=upper,
        frequency=tuple(float(v) for v in land.nu(best.x[None])[0]),
        group=best.group,
        vector=best.vector,
        closed=upper <= best.lower * (1 + rt.tol),
        cells=cells,
        tests=tests,
    )
