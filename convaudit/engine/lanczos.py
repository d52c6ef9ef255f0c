"""Lanczos on AᵀA for the largest singular value of an operator given as matvecs (MATH.md §2).

Full reorthogonalisation (the Krylov basis stays small), explicit restarts from the Ritz vector
when the basis is full. The returned ``lower`` is ‖Ay‖/‖y‖ for the final Ritz vector y, computed
with one more product: a certified lower bound on σ_max (up to rounding). ``converged`` means the
Ritz residual bound places an eigenvalue of AᵀA within ``tol`` (relative, in σ) of the Ritz
value (the residual r, or r²/gap with the gap to the next Ritz value once they separate); that it
is the LARGEST one is what Lanczos converges to, not a certificate, so callers pair it with a
certified upper bound.
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
        v = torch.randn(
            v.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
        ).to(v)
        nrm = float(v.norm())
    v = v / nrm
    q = torch.empty((basis_size + 1, v.numel()), dtype=v.dtype, device=v.device)
    products, theta, err, converged, previous = 0, 0.0, math.inf, False, -math.inf
    y = v
    while not converged and products < max_products:
        q[0] = v
        alphas: list[float] = []
        betas: list[float] = []
        for k in range(basis_size):
            w = gram(q[k].reshape(shape)).reshape(-1)
            products += 1
            alpha = float(torch.dot(w, q[k]))
            alphas.append(alpha)
            # Full reorthogonalisation, twice (classical Gram-Schmidt is then stable).
            basis = q[: k + 1]
            for _ in range(2):
                w = w - basis.T @ (basis @ w)
            beta = float(w.norm())
            invariant = beta <= 1e-14 * max(abs(alpha), 1e-300)
            last = k + 1 == basis_size or products >= max_products
            if (k + 1) % check_every == 0 or last or invariant:
                evals, evecs = np.linalg.eigh(
                    np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
                )
                theta = float(evals[-1])
                resid = abs(beta * evecs[-1, -1])
                # |λ - θ| <= r, and <= r²/gap once the top Ritz value is separated (gap from the
                # next Ritz value, the usual a-posteriori estimate).
                # Early Ritz gaps overstate the true gap: a factor 100 of safety, and the Ritz
                # value must also have stopped moving since the previous check.
                gap = theta - float(evals[-2]) if len(evals) > 1 else math.inf
                err = min(resid, 100 * resid**2 / gap if gap > 0 else math.inf) / max(theta, 1e-300)
                steady = abs(theta - previous) <= tol * theta
                previous = theta
                converged = invariant or (err / 2 <= tol and steady)
                if converged or last:
                    y = torch.from_numpy(np.ascontiguousarray(evecs[:, -1])).to(q) @ basis
                    break
            betas.append(beta)
            q[k + 1] = w / beta
        v = y / y.norm()
    with torch.no_grad():
        lower = float(apply(v.reshape(shape)).norm())
    sigma = math.sqrt(max(theta, 0.0))
    return LanczosResult(
        sigma=max(sigma, lower),
        lower=lower,
        residual=err / 2,
        converged=converged,
        products=products + 1,
    )
