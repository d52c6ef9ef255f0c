"""Projection when the input size is unknown: certified for EVERY input size (MATH.md §2).

S = sup over continuous frequencies of σ_max(B(ν)) bounds σ_max of the zero-padded (and the
circular) operator on every input size. The kernel is projected on a fine circular grid (whose
σ_circ is m_G ≤ S), then the engine's certified bracket S ≤ m_G + Σ L_ax/(2 G s_ax) is
evaluated on the result, and the kernel is shrunk by the last factor if that certificate is
still above the bound (S is homogeneous of degree 1 in the kernel).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from convaudit.engine.results import EngineOptions
from convaudit.errors import InputShapeError
from convaudit.ir import ConvLayer

#: alias-grid points per axis the projection runs on (at least 4 kernel extents)
MIN_ALIAS = 16
#: the engine certifies σ_max within (1 + tol) of the truth: ask for a tight certificate, so a
#: kernel projected to a hair under the bound is certified under it too
CERTIFY_TOL = 1e-12
_MARGIN = 1e-9


def any_size_grid(layer: ConvLayer) -> tuple[int, ...]:
    if layer.padding_mode not in ("zeros", "circular"):
        raise InputShapeError(
            f"layer {layer.name}: the input size is unknown, and {layer.padding_mode} padding has "
            "no size-independent bound to project on",
            hint="pass --input-shape (e.g. 1,3,224,224)",
        )
    return tuple(
        max(MIN_ALIAS, 4 * (d * (k - 1) + 1)) * s
        for k, s, d in zip(layer.kernel_size, layer.stride, layer.dilation, strict=True)
    )


def any_size_sigma(layer: ConvLayer, kernel: np.ndarray, *, fold_bn: bool) -> float:
    """The engine's certified size-independent upper bound for ``kernel`` in ``layer``."""
    from convaudit.engine.layer import layer_upper_bound

    options = EngineOptions(tol=CERTIFY_TOL)
    return layer_upper_bound(replace(layer, kernel=kernel), fold_bn=fold_bn, options=options).upper


def certify_any_size(
    layer: ConvLayer, kernel: np.ndarray, bound: float, *, fold_bn: bool, storage_dtype: str | None
) -> tuple[np.ndarray, float, float]:
    """Shrink ``kernel`` until the size-independent certificate is ≤ bound.

    Returns (kernel, certificate, total scale applied)."""
    dtype = (
        np.dtype(storage_dtype)
        if storage_dtype in ("float16", "float32", "float64")
        else kernel.dtype
    )
    sigma = any_size_sigma(layer, kernel, fold_bn=fold_bn)
    # Below the storage precision a smaller factor would round back to the same kernel.
    margin = max(_MARGIN, 4 * float(np.finfo(dtype).eps), 4 * float(np.finfo(kernel.dtype).eps))
    total = 1.0
    for _ in range(8):
        if sigma <= bound:
            return kernel, sigma, total
        factor = bound / sigma * (1 - margin)
        total *= factor
        kernel = (np.asarray(kernel, np.float64) * factor).astype(dtype).astype(kernel.dtype)
        sigma = any_size_sigma(layer, kernel, fold_bn=fold_bn)
    raise ArithmeticError(f"layer {layer.name}: could not certify sigma_max {sigma} <= {bound}")
