"""Largest singular value of an operator given as matvecs (MATH.md §2).

Small operators (at most ``DENSE_LIMIT`` inputs): AᵀA is formed column by column from ``gram``
and its top eigenvalue comes from LAPACK (float64): exact up to rounding.

Larger ones: implicitly restarted Lanczos (ARPACK, via scipy) on AᵀA asking for the top
``WANTED`` eigenvalues at once, not just one. A single-vector Lanczos warm-started near the
second of a near-degenerate top pair can settle on it with a small residual (the residual only
certifies that SOME eigenvalue is nearby); tracking several Ritz values keeps the whole top
cluster in the Krylov space, so the largest is found. The start vector is the caller's warm
start mixed with an equal-norm seeded random vector, so every eigenvector has a component.
The returned ``lower`` is ‖Ay‖/‖y‖ for the top Ritz vector y: a certified lower bound on σ_max
(up to rounding); ``converged`` is ARPACK's convergence (eigenvalues to relative ``tol``).
Callers pair it with a certified upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

DENSE_LIMIT = 1024  # inputs up to which the dense SVD is cheaper and exact
WANTED = 6  # top eigenvalues tracked together (covers near-degenerate clusters)


@dataclass(frozen=True)
class LanczosResult:
    sigma: float  # sqrt of the top Ritz value
    lower: float  # ‖Ay‖/‖y‖ of the Ritz vector: certified lower bound
    residual: float  # relative accuracy asked of / reached by σ
    converged: bool
    products: int  # number of operator products (AᵀA products, or columns for the dense path)


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
    return LanczosResult(sigma=sigma, lower=sigma, residual=0.0, converged=True, products=n)


def lanczos_sigma_max(
    apply: Callable[[torch.Tensor], torch.Tensor],
    gram: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_products: int = 3000,
) -> LanczosResult:
    """σ_max of A from ``apply`` (x -> Ax) and ``gram`` (x -> AᵀAx) on a batch of one.

    ``start`` has the operator's input shape with a leading batch axis of 1.
    """
    shape, n = start.shape, start.numel()
    if n <= DENSE_LIMIT:
        return _dense(gram, start)
    like = start.to(torch.float64)
    products = 0

    def matvec(x: np.ndarray) -> np.ndarray:
        nonlocal products
        products += 1
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1)).to(like)
        return gram(t.reshape(shape)).reshape(-1).cpu().numpy()

    k = min(WANTED, n - 2)
    ncv = min(n, max(4 * k, 32))
    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    # Eigenvalue accuracy tol/2 relative in λ gives ~tol/4 in σ: margin for the certification.
    try:
        evals, evecs = eigsh(
            op, k=k, which="LA", v0=_mixed_start(start), ncv=ncv, tol=tol / 2,
            maxiter=max(1, max_products // ncv),
        )  # fmt: skip
        converged = True
    except ArpackNoConvergence as exc:
        evals, evecs, converged = exc.eigenvalues, exc.eigenvectors, False
    if len(evals) == 0:
        y = _mixed_start(start)
        theta = float(y @ matvec(y)) / float(y @ y)
    else:
        top = int(np.argmax(evals))
        theta, y = float(evals[top]), evecs[:, top]
    vec = torch.from_numpy(np.ascontiguousarray(y)).to(like).reshape(shape)
    with torch.no_grad():
        lower = float(apply(vec).norm()) / max(float(vec.norm()), 1e-300)
    sigma = math.sqrt(max(theta, 0.0))
    return LanczosResult(
        sigma=max(sigma, lower),
        lower=lower,
        residual=tol / 4,
        converged=converged,
        products=products + 1,
    )
