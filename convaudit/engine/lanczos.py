"""Lanczos on AᵀA for the largest singular value of an operator given as matvecs (MATH.md §2).

Full reorthogonalisation (the Krylov basis stays small), explicit restarts from the Ritz vector
when the basis is full. The returned ``lower`` is ‖Ay‖/‖y‖ for the final Ritz vector y, computed
with one more product: a certified lower bound on σ_max (up to rounding). ``converged`` means the
Ritz residual bound places an eigenvalue of AᵀA within ``tol`` (relative, in σ) of the Ritz
value; that it is the LARGEST one is what Lanczos converges to, not a certificate, so callers
pair it with a certified upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LanczosResult:
    sigma: float  # sqrt of the top Ritz value
    lower: float  # ‖Ay‖/‖y‖ of the Ritz vector: certified lower bound
    residual: float  # relative residual bound on σ: |σ_true_nearby - sigma| / sigma
    converged: bool
    products: int  # number of AᵀA products


def lanczos_sigma_max(
    apply: Callable[[torch.Tensor], torch.Tensor],
    gram: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_products: int = 1500,
    basis_size: int = 64,
    check_every: int = 4,
) -> LanczosResult:
    """σ_max of A from ``apply`` (x -> Ax) and ``gram`` (x -> AᵀAx) on a batch of one.

    ``start`` has the operator's input shape with a leading batch axis of 1.
    """
    shape = start.shape
    v = start.reshape(-1).clone()
    nrm = float(v.norm())
    if nrm == 0 or not math.isfinite(nrm):
        v = torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(v)
        nrm = float(v.norm())
    v = v / nrm
    products = 0
    theta = 0.0
    rel = math.inf
    y = v
    while True:
        basis = [v]
        alphas: list[float] = []
        betas: list[float] = []
        for k in range(basis_size):
            w = gram(basis[k].reshape(shape)).reshape(-1)
            products += 1
            alpha = float(torch.dot(w, basis[k]))
            alphas.append(alpha)
            # Full reorthogonalisation, twice (classical Gram-Schmidt is then stable).
            q = torch.stack(basis)
            for _ in range(2):
                w = w - q.T @ (q @ w)
            beta = float(w.norm())
            done_k = k + 1 == basis_size or products >= max_products
            if (k + 1) % check_every == 0 or done_k or beta <= 1e-14 * max(abs(alpha), 1e-300):
                tri = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
                evals, evecs = np.linalg.eigh(tri)
                theta = float(evals[-1])
                s = evecs[:, -1]
                resid = abs(beta * s[-1])
                rel = resid / max(theta, 1e-300)
                # eigenvalue in [θ - r, θ + r]  ->  σ within ~ r/(2θ) relative
                if rel / 2 <= tol or beta <= 1e-14 * max(abs(alpha), 1e-300) or done_k:
                    y = torch.from_numpy(np.ascontiguousarray(s)).to(q) @ q
                    break
            betas.append(beta)
            basis.append(w / beta)
        converged = rel / 2 <= tol or beta <= 1e-14 * max(abs(alpha), 1e-300)
        if converged or products >= max_products:
            break
        v = y / y.norm()
    yn = y / y.norm()
    with torch.no_grad():
        lower = float(apply(yn.reshape(shape)).norm())
    sigma = math.sqrt(max(theta, 0.0))
    return LanczosResult(sigma=max(sigma, lower), lower=lower, residual=rel / 2, converged=converged, products=products + 1)
