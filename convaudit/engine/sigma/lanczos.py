"""Largest singular value of an operator given as matvecs (MATH.md §2).

Small operators (at most ``DENSE_LIMIT`` inputs): AᵀA is formed column by column from ``gram``
and its top eigenvalue comes from LAPACK (float64): exact up to rounding.

Larger ones: thick-restart Lanczos (Wu & Simon) on AᵀA in torch, keeping the top ``WANTED``
Ritz vectors at every restart, not just one. A single-vector Lanczos warm-started near the
second of a near-degenerate top pair can settle on it with a small residual (the residual only
certifies that SOME eigenvalue is nearby); keeping several Ritz vectors keeps the whole top
cluster in the Krylov space, so the largest is found. The start vector is the caller's warm
start mixed with an equal-norm seeded random vector, so every eigenvector has a component.
The returned ``lower`` is ‖Ay‖/‖y‖ for the top Ritz vector y, in float64: a certified lower
bound on σ_max (up to rounding); ``converged`` means the Lanczos converged AND the float64
residual ‖AᵀAy - θy‖ <= 2·tol·θ (so an eigenvalue lies within 2·tol·θ of θ = ‖Ay‖²/‖y‖², a
singular value within tol of √θ). Callers pair it with a certified upper bound. If that test
fails, ARPACK (implicitly restarted Lanczos, float64, all ``WANTED`` values converged) runs
from the best vector: a slower, independent second method.

Speed (CPU): the products run in float32 (``fast_gram``, 3-5x cheaper) down to ``tol`` itself
(``FAST_TOL`` at the least: float32 rounding stalls Lanczos not far below), then, for tol below
``POLISH_BELOW``, a float64 block Lanczos from the top Ritz vectors checks and, if needed,
finishes; the acceptance test is always float64 (two products: Ay, then Aᵀ of it, where the
caller gives the adjoint). The restarted Lanczos stops when its top two Ritz pairs have
converged, where ARPACK waits for all ``WANTED``: on ResNet-50 a third fewer products (benchmarks/README.md).
Its reorthogonalisation costs about as much per product as ARPACK's (both are memory-bound).
ARPACK's own BLAS runs on one thread: OpenBLAS workers spinning between its calls starved
torch's conv threads (products measured 2-3x slower).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from convaudit.engine.runtime import single_threaded_blas

DENSE_LIMIT = 1024  # inputs up to which the dense SVD is cheaper and exact
WANTED = 6  # top eigenvalues tracked together (covers near-degenerate clusters)
POLISH_PRODUCTS = 60  # most float64 products finishing a float32 run
RESTART_BASIS = 32  # Krylov vectors the thick-restart Lanczos stores (ARPACK's ncv, same role)
#: Ritz pairs that must converge: a single converged pair can sit between a near-degenerate
#: top pair (small residual, wrong value); two cannot (ARPACK waits for all ``WANTED``).
CONVERGED_PAIRS = 2
FAST_TOL = 1e-6  # the float32 run's tolerance floor (float32 rounding stalls Lanczos not far below)
#: from this tolerance on the float32 run's vector needs no float64 polish: its rounding noise
#: (~1e-7) is far below the acceptance residual, which the float64 check still measures. A
#: float64 CPU conv costs 8-10x a float32 one (an 11x11 kernel at 256x256: 2.8 s a product).
POLISH_BELOW = 1e-5
RUN_MARGIN = 2  # the float32 run converges to tol/2: margin below the float64 acceptance (2·tol)
#: where no float64 polish follows (tol >= POLISH_BELOW), the float32 run converges to tol
#: itself: its rounding (~1e-7) is far below the float64 acceptance residual 2·tol, and the
#: last halving of the residual cost a fifth of the products (six YOLO11n-seg layers at 640,
#: tol 1e-4: 1203 -> 950 products, values within 3e-8)
UNPOLISHED_MARGIN = 1
STOP_MARGIN = 2e-6  # how far a float32 Ritz value must pass ``stop_at`` before the float64 check


@dataclass(frozen=True)
class LanczosResult:
    lower: float  # ‖Ay‖/‖y‖ of the returned vector y (float64): certified lower bound
    residual: float  # float64 ‖AᵀAy - θy‖ / (θ‖y‖), θ = ‖Ay‖²/‖y‖²
    converged: bool
    products: int  # number of operator products (AᵀA products, or columns for the dense path)
    reached: bool = False  # stopped early: ``lower`` reached the caller's ``stop_at``
    dense: bool = False  # λ_max of the explicitly formed AᵀA: exact up to rounding

    @property
    def sigma(self) -> float:
        """The estimate √θ: the lower bound itself (exact when ``converged``)."""
        return self.lower


def _mixed_start(start: torch.Tensor) -> np.ndarray:
    """Warm start plus an equal-norm seeded random vector (deterministic)."""
    v = start.detach().reshape(-1).to(torch.float64).cpu().numpy()
    noise = np.random.default_rng(0).standard_normal(v.size)
    noise /= np.linalg.norm(noise)
    nrm = float(np.linalg.norm(v))
    return noise if nrm == 0 or not math.isfinite(nrm) else v / nrm + noise


def _dense(gram: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor) -> LanczosResult:
    """λ_max of the n×n matrix AᵀA, formed column by column (memory n², not n·outputs)."""
    n = start.numel()
    eye = torch.eye(n, dtype=torch.float64, device=start.device)
    cols = [gram(eye[i : i + 16].reshape(-1, *start.shape[1:])) for i in range(0, n, 16)]
    matrix = torch.cat([c.reshape(c.shape[0], -1) for c in cols]).cpu().numpy()
    lam = float(np.linalg.eigvalsh((matrix + matrix.T) / 2)[-1]) if matrix.size else 0.0
    sigma = math.sqrt(max(lam, 0.0))
    return LanczosResult(lower=sigma, residual=0.0, converged=True, products=n, dense=True)


def _arpack(
    gram: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    v0: np.ndarray,
    *,
    dtype: torch.dtype,
    tol: float,
    max_products: int,
) -> tuple[np.ndarray, bool, int]:
    """ARPACK's top-``WANTED`` Lanczos on x -> AᵀAx in ``dtype``: (its Ritz vectors, best first,
    ``(k, n)`` float64, converged, products)."""
    shape, n = start.shape, start.numel()
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    products = 0

    def matvec(x: np.ndarray) -> np.ndarray:
        nonlocal products
        products += 1
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np_dtype).reshape(-1))
        out = gram(t.to(device=start.device).reshape(shape))
        return out.reshape(-1).cpu().numpy().astype(np_dtype, copy=False)

    k = min(WANTED, n - 2)
    ncv = min(n, max(4 * k, 32))
    op = LinearOperator((n, n), matvec=matvec, dtype=np_dtype)
    # Eigenvalue accuracy tol/2 relative in λ gives ~tol/4 in σ: margin for the certification.
    try:
        evals, evecs = eigsh(
            op, k=k, which="LA", v0=v0.astype(np_dtype), ncv=ncv, tol=tol / 2,
            maxiter=max(1, max_products // ncv),
        )  # fmt: skip
        converged = True
    except ArpackNoConvergence as exc:
        evals, evecs, converged = exc.eigenvalues, exc.eigenvectors, False
    if len(evals) == 0:
        return v0.astype(np.float64)[None], False, products
    order = np.argsort(evals)[::-1]
    return evecs[:, order].T.astype(np.float64), converged, products


def _thick_restart(
    gram: Callable[[torch.Tensor], torch.Tensor],
    shape: torch.Size,
    v0: torch.Tensor,
    *,
    tol: float,
    max_products: int,
    stop_theta: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Thick-restart Lanczos on x -> AᵀAx for ``B`` independent problems at once, in ``v0``'s
    dtype and device: ``v0`` is ``(B, n)`` and ``gram`` maps ``(B, *shape[1:])`` to the same
    (the groups of a block-diagonal operator, applied by one grouped conv; B = 1 otherwise).

    Returns, per problem: its top ``WANTED`` Ritz vectors ``(B, k, n)`` best first (``count``
    of them valid), converged, stopped (its top Ritz value reached ``stop_theta``, a (B,)
    float64 level: the caller's bracket closes there), and the products used. Converged when
    the top ``CONVERGED_PAIRS`` Ritz pairs' residuals |β·s_j| are at most ``tol``·θ. A problem
    that converged or stopped keeps the vectors of that step (the batch runs on for the rest).

    Every new vector is reorthogonalised against the whole stored basis (classical
    Gram-Schmidt, repeated when it cancelled: DGKS). At a restart the top ``WANTED`` Ritz
    vectors and the last Lanczos vector become the new basis; the projected matrix is then
    diagonal plus one coupling row, and the Lanczos recurrence goes on from there."""
    batch, n = v0.shape
    size = min(RESTART_BASIS, n)
    keep = max(1, min(WANTED, size - 2))
    tiny = float(torch.finfo(torch.float64).tiny)
    basis = v0.new_zeros((batch, size + 1, n))
    basis[:, 0] = v0 / v0.norm(dim=1, keepdim=True).clamp_min(tiny)
    projected = torch.zeros((batch, size, size), dtype=torch.float64)  # small: on the CPU
    result = v0.new_zeros((batch, keep, n))
    count = torch.zeros(batch, dtype=torch.int64)
    converged = torch.zeros(batch, dtype=torch.bool)
    stopped = torch.zeros(batch, dtype=torch.bool)
    first, products = 0, 0
    while True:
        for j in range(first, size):
            w = gram(basis[:, j].reshape(batch, *shape[1:])).reshape(batch, n)
            products += 1
            stored = basis[:, : j + 1]
            coeffs = torch.bmm(stored, w[:, :, None])[:, :, 0]  # batched gemv, (B, j+1)
            w = w - torch.bmm(coeffs[:, None, :], stored)[:, 0]
            norm = w.norm(dim=1)
            if bool((norm < 0.7 * coeffs.norm(dim=1)).any()):  # cancellation: once more
                again = torch.bmm(stored, w[:, :, None])[:, :, 0]
                w, coeffs = w - torch.bmm(again[:, None, :], stored)[:, 0], coeffs + again
                norm = w.norm(dim=1)
            projected[:, j, j] = coeffs[:, j].to("cpu", torch.float64)
            beta = norm.to("cpu", torch.float64)
            theta, ritz = torch.linalg.eigh(projected[:, : j + 1, : j + 1])
            # The Krylov space is invariant (or the whole space): its Ritz values are exact.
            invariant = (beta <= 1e-12 * theta[:, -1].abs().clamp_min(tiny)) | (j + 1 == n)
            pairs = min(CONVERGED_PAIRS, j + 1)
            residuals = (beta[:, None] * ritz[:, j, -pairs:]).abs()
            now = invariant | (residuals <= tol * theta[:, -pairs:].abs()).all(dim=1)
            reached = (
                theta[:, -1] >= stop_theta if stop_theta is not None else torch.zeros_like(now)
            )
            fresh = (now | reached) & ~(converged | stopped)
            last = products >= max_products or bool((converged | stopped | fresh).all())
            if bool(fresh.any()) or last:
                top = ritz.flip(-1)[:, :, :keep].to(basis)  # (B, j+1, k) top first
                vectors = torch.bmm(top.transpose(1, 2), basis[:, : j + 1])
                take = fresh | (last & ~(converged | stopped))
                result[take, : vectors.shape[1]] = vectors[take]
                count[take] = vectors.shape[1]
                converged |= fresh & now
                stopped |= fresh & ~now
            if last:
                return result, count, converged, stopped, products
            alive = beta > 0
            basis[:, j + 1] = torch.where(
                alive.to(w.device)[:, None], w / norm.clamp_min(tiny)[:, None], 0
            )
            if j + 1 < size:
                projected[:, j, j + 1] = projected[:, j + 1, j] = beta
        # Thick restart: the top Ritz vectors, then the last Lanczos vector.
        top = ritz.flip(-1)[:, :, :keep]
        basis[:, :keep] = torch.bmm(top.to(basis).transpose(1, 2), basis[:, :size])
        basis[:, keep] = basis[:, size]
        coupling = beta[:, None] * top[:, size - 1]
        projected.zero_()
        projected[:, :keep, :keep] = torch.diag_embed(theta.flip(-1)[:, :keep])
        projected[:, :keep, keep] = coupling
        projected[:, keep, :keep] = coupling
        first = keep


def _block_polish(
    gram: Callable[[torch.Tensor], torch.Tensor], block: torch.Tensor, target: float, most: int
) -> tuple[torch.Tensor, int]:
    """Float64 block Lanczos (full reorthogonalisation) from the k vectors ``block``
    ``(k, *input)`` (a float32 run's top Ritz vectors), with Rayleigh-Ritz after every step,
    until the top Ritz pair's residual is below ``target``·θ or ``most`` products are spent.
    Returns the top Ritz vector ``(1, *input)`` and the number of products.

    It removes the rounding noise a float32 Lanczos leaves: spread over the whole spectrum,
    mostly far from the top, where Lanczos damps it fastest. Working on the whole block keeps a
    near-degenerate top cluster together (a single vector's residual stalls there)."""
    k = block.shape[0]
    n = block[0].numel()
    size = max(most, k)
    # Rows are vectors (contiguous slices): the orthonormal Krylov basis, block after block,
    # AᵀA applied to it, and the Rayleigh quotient Vᵀ·AᵀA·V, grown block by block.
    basis = block.new_zeros((size + k, n))
    images = block.new_zeros((size, n))
    small = block.new_zeros((size, size))
    current = torch.linalg.qr(block.reshape(k, -1).T).Q.T.contiguous()  # (width, n)
    basis[:k] = current
    used = 0
    best = current[:1]
    while used + current.shape[0] <= most:
        width = current.shape[0]
        # One vector at a time: a float64 conv's im2col buffer grows with the batch.
        product = torch.cat([gram(v.reshape(1, *block.shape[1:])).reshape(1, -1) for v in current])
        images[used : used + width] = product
        cross = basis[: used + width] @ product.T  # (used + width, width)
        small[: used + width, used : used + width] = cross
        small[used : used + width, :used] = cross[:used].T
        used += width
        vals, vecs = torch.linalg.eigh((small[:used, :used] + small[:used, :used].T) / 2)
        top = vecs[:, -1]
        best = (top @ basis[:used])[None]
        residual = float((top @ images[:used] - vals[-1] * best).norm())
        if residual <= target * abs(float(vals[-1])):
            break
        nxt = product
        for _ in range(2):  # classical Gram-Schmidt, twice
            nxt = nxt - (nxt @ basis[:used].T) @ basis[:used]
        q, r = torch.linalg.qr(nxt.T)
        keep = r.diagonal().abs() > 1e-10 * max(float(r.diagonal().abs().max()), 1e-300)
        if not bool(keep.any()):
            break
        current = q[:, keep].T.contiguous()
        basis[used : used + current.shape[0]] = current
    return best.reshape(1, *block.shape[1:]), used


def _rayleigh(
    apply: Callable[[torch.Tensor], torch.Tensor],
    gram: Callable[[torch.Tensor], torch.Tensor],
    vec: torch.Tensor,
    adjoint: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float]:
    """θ = ‖Ay‖²/‖y‖² and the relative residual ‖AᵀAy - θy‖/(θ‖y‖), in float64. With
    ``adjoint`` (y -> Aᵀy) AᵀAy is Aᵀ of the image already formed: two products, not three
    (a float64 CPU conv with a large kernel costs seconds)."""
    with torch.no_grad():
        image = apply(vec)
        back = gram(vec) if adjoint is None else adjoint(image)
    norm2 = float(vec.norm()) ** 2
    theta = float(image.norm()) ** 2 / max(norm2, 1e-300)
    residual = float((back - theta * vec).norm()) / max(theta * math.sqrt(norm2), 1e-300)
    return theta, residual


def lanczos_sigma_max(
    apply: Callable[[torch.Tensor], torch.Tensor],
    gram: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_products: int = 3000,
    fast_gram: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_bytes: int = 1 << 30,
    lower_only: bool = False,
    stop_at: float | None = None,
    adjoint: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LanczosResult:
    """σ_max of A from ``apply`` (x -> Ax) and ``gram`` (x -> AᵀAx) on a batch of one, float64;
    ``adjoint`` (y -> Aᵀy), where given, saves a product in each float64 acceptance check.

    ``start`` has the operator's input shape with a leading batch axis of 1. ``fast_gram`` is
    the same AᵀA in float32 (CPU: products 3-5x cheaper): the thick-restart Lanczos runs on it
    first, to ``tol`` but not below ``FAST_TOL``, and (below ``POLISH_BELOW``) a float64 block
    Lanczos from its top Ritz vectors finishes (its basis within ``max_bytes``); without it,
    the thick-restart Lanczos runs in float64 to ``tol``. The result is accepted only if its float64 residual
    ‖AᵀAy - θy‖ <= 2·tol·θ (an eigenvalue within 2·tol·θ of θ: σ within tol); otherwise
    ARPACK runs in float64, from that vector. With ``lower_only`` the first run's Ritz vector
    gives the (float64, certified) lower bound and nothing more is spent on convergence.

    ``stop_at``: a level of σ at which the caller needs no more (its certified bracket closes,
    or a limit is decided): the iteration stops as soon as the top Ritz value reaches it, and
    the result is ``reached`` when the float64 ‖Ay‖ confirms it.
    """
    n = start.numel()
    if n <= DENSE_LIMIT:
        return _dense(gram, start)
    like = start.to(torch.float64)
    fast = fast_gram is not None
    v0 = torch.from_numpy(_mixed_start(start)).to(start.device)
    level = None
    if stop_at is not None and math.isfinite(stop_at):
        # float32 Ritz values run ~1e-7 above the float64 quotient of their vector: a margin
        level = torch.tensor([(stop_at * (1 + STOP_MARGIN)) ** 2], dtype=torch.float64)
    # Eigenvalue accuracy tol/2 relative in λ gives ~tol/4 in σ: margin for the acceptance
    # test. float32 stops at FAST_TOL/2 at the tightest; the float64 block Lanczos goes on.
    # Without that polish the float32 run's own vector is checked: tol itself leaves margin.
    polish = fast and not lower_only and tol < POLISH_BELOW
    margin = UNPOLISHED_MARGIN if fast and not polish else RUN_MARGIN
    ritz, count, done, stopped, products = _thick_restart(
        fast_gram if fast_gram is not None else gram,
        start.shape,
        v0[None].to(torch.float32 if fast else torch.float64),
        tol=(max(tol, FAST_TOL) if fast else tol) / margin,
        max_products=max_products,
        stop_theta=level,
    )
    converged = bool(done[0])
    block = ritz[0, : int(count[0])].to(like).reshape(-1, *start.shape[1:])
    vec = block[:1]
    if bool(stopped[0]) and stop_at is not None:
        theta, residual = _rayleigh(apply, gram, vec, adjoint)
        lower = math.sqrt(max(theta, 0.0))
        if lower >= stop_at:
            return LanczosResult(lower, residual, False, products + 1, reached=True)
        products += 1
    with torch.no_grad():
        if polish:
            most = min(POLISH_PRODUCTS, max_bytes // (16 * n))  # basis + images
            # target tol: half the acceptance residual below, measured 15 % faster
            vec, used = _block_polish(gram, block, tol, most)
            products += used
    theta, residual = _rayleigh(apply, gram, vec, adjoint)
    products += 1
    # An eigenvalue lies within residual·θ of θ, so a σ within ~residual/2 of √θ.
    converged = converged and residual <= 2 * tol
    if not converged and not lower_only:
        # The independent second method, in float64, from the best vector so far.
        # OpenBLAS worker threads spin between ARPACK's calls and starve torch's conv threads
        # (measured 2-3x slower products): ARPACK's BLAS runs on one thread.
        with single_threaded_blas():
            arpack_ritz, converged, used = _arpack(
                gram, start, vec.reshape(-1).cpu().numpy(), dtype=torch.float64, tol=tol,
                max_products=max(max_products - products, 1),
            )  # fmt: skip
        products += used
        vec = torch.from_numpy(np.ascontiguousarray(arpack_ritz[:1])).to(like)
        vec = vec.reshape(1, *start.shape[1:])
        theta, residual = _rayleigh(apply, gram, vec, adjoint)
        products += 1
        converged = converged and residual <= 2 * tol
    lower = math.sqrt(max(theta, 0.0))
    return LanczosResult(
        lower=lower,
        residual=residual,
        converged=converged,
        products=products,
    )
