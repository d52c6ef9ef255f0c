"""σ_max of a dense layer too large for its full SVD (a VGG16 fc1 is 4096 x 25088).

Lanczos on the smaller Gram matrix (WWᵀ or WᵀW) from the matrix products alone gives σ_max to
the tolerance (its float64 residual decides "converged"), in a few hundred matrix-vector
products instead of the SVD's 4·m·n·min(m, n). The certified upper end is the cheaper of
‖W‖_F and √(‖W‖₁‖W‖_∞); with ``certify`` (a network bound needs a tight one) it is
proven at the converged value by one Cholesky factorisation of μI - WWᵀ (MATH.md §5 and
:mod:`circular` for the rounding terms).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convaudit.engine.results import NormResult, bracket_result
from convaudit.engine.runtime import Runtime
from convaudit.engine.sigma.circular import UNIT, _certify_below
from convaudit.engine.sigma.lanczos import lanczos_sigma_max


def dense_sigma_max(w: np.ndarray, rt: Runtime, *, certify: bool = False) -> NormResult:
    """Certified bracket of σ_max(W) for a float64 ``(out, in)`` matrix, refined to ``rt.tol``."""
    matrix = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))
    if matrix.shape[0] > matrix.shape[1]:
        matrix = matrix.T  # work on the smaller side: rows of the (m, n) matrix, m <= n
    single = matrix.to(torch.float32)
    fro = float(torch.linalg.matrix_norm(matrix))
    cheap = min(fro, math.sqrt(float(matrix.abs().sum(0).max()) * float(matrix.abs().sum(1).max())))

    def apply(y: torch.Tensor) -> torch.Tensor:  # Wᵀy for a batch of row vectors y
        return y @ matrix

    def adjoint(z: torch.Tensor) -> torch.Tensor:  # Wz for a batch of row vectors z
        return z @ matrix.T

    def gram(y: torch.Tensor) -> torch.Tensor:
        return adjoint(apply(y))

    def fast_gram(y: torch.Tensor) -> torch.Tensor:
        return ((y.to(torch.float32) @ single) @ single.T).to(y.dtype)

    start = torch.zeros(1, matrix.shape[0], dtype=torch.float64)  # a seeded random start
    with torch.no_grad():
        res = lanczos_sigma_max(
            apply, gram, start, tol=rt.tol, fast_gram=fast_gram, adjoint=adjoint
        )
    upper, how = cheap, "upper: min(Frobenius, sqrt(norm1 x norm_inf))"
    if res.dense:  # small side: λ_max of the formed Gram matrix, exact up to rounding
        margin = 16 * matrix.shape[0] * float(np.finfo(np.float64).eps)
        upper, how = min(upper, res.lower * (1 + margin)), "upper: dense Gram eigenvalue"
    elif certify and res.converged:
        mu = (res.lower * (1 + rt.tol)) ** 2
        gram_error = (matrix.shape[1] + 2) * UNIT * fro**2  # ‖G_computed - G‖₂
        m = matrix.shape[0]
        if bool(_certify_below(matrix @ matrix.T, mu)):
            proven = math.sqrt(mu * (1 + 2 * (m + 2) ** 2 * UNIT) + gram_error)
            upper, how = min(upper, proven), "upper: Cholesky certificate of the Gram matrix"
    return bracket_result(
        res.lower, max(upper, res.lower), tol=rt.tol, operator="dense", grid=None,
        converged_value=res.sigma if res.converged else None,
        method=f"lanczos ({res.products} products); {how}", iterations=res.products,
    )  # fmt: skip


__all__ = ["dense_sigma_max"]
