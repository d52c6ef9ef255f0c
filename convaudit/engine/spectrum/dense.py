"""Exact singular values of small layers whose geometry the FFT formulas do not cover.

The operator matrix is built column by column from the real operator (basis images through
:class:`PaddedConv`) and decomposed by LAPACK: exact, but only affordable for small layers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convaudit.engine.conv import LayerOperator
from convaudit.engine.operator import PaddedConv
from convaudit.engine.spectrum.circular import device_svdvals
from convaudit.errors import UnsupportedLayerError

#: largest operator dimension (rows or columns) decomposed densely
DENSE_LIMIT = 4096


def dense_fits(op: LayerOperator) -> bool:
    return max(op.sides) <= DENSE_LIMIT


def dense_singular_values(op: LayerOperator, why: str) -> np.ndarray:
    """All singular values of the real operator, descending; refuses layers over DENSE_LIMIT."""
    if not dense_fits(op):
        raise UnsupportedLayerError(
            f"{why}, and the layer is too large for the exact dense fallback "
            f"(operator dimension over {DENSE_LIMIT})",
            hint="use a grid the stride divides, or a bound (method='upper-bound')",
        )
    conv = PaddedConv(op)
    n_in = math.prod(conv.in_shape)
    kernel = op.conv.kernel
    basis = torch.eye(n_in, dtype=kernel.dtype, device=kernel.device).reshape(n_in, *conv.in_shape)
    with torch.no_grad():
        matrix = conv.apply(basis).reshape(n_in, -1)
    sv = device_svdvals(matrix)
    return np.sort(sv)[::-1]
