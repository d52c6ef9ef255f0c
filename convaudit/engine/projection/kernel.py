"""Projection of a conv kernel onto the operator-norm ball {‖conv‖₂ ≤ c} (MATH.md §3).

Everything happens on the torus of one grid (``projection_torus``): *clip* (per-frequency SVD,
singular values capped at c) and *truncate* (keep the kernel's own tap cells). The paper's
one-shot clip+truncate is NOT feasible (it lands 6–91 % above c), so:

- ``alternating``: repeat clip ↔ truncate until the re-measured σ_max ≤ c·(1 + tol);
- ``dykstra``: Dykstra's correction; converges to the nearest feasible kernel, slowly;
- ``rescale``: K·c/σ_max, feasible at once, farthest from K.

Every method ends with an exact-feasibility step: the kernel is cast to its storage dtype,
re-measured in float64, and shrunk by the last (≤ tol) factor if needed, so the returned kernel
satisfies σ_circ(grid) ≤ c as stored. What σ_circ(grid) certifies (the real zero-padded
operator, a circular layer, ...) is the caller's business: see ``projection_layer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.projection.torus import Geometry, Torus, all_cores, on_cpu_workers
from convaudit.engine.results import EngineOptions, ProgressCallback
from convaudit.engine.runtime import runtime
from convaudit.engine.sigma.circular import circular_sigma_max as certified_circular_sigma_max

Method = Literal["alternating", "dykstra", "rescale"]
METHODS: tuple[str, ...] = ("alternating", "dykstra", "rescale")
DEFAULT_TOL = 1e-3
DEFAULT_MAX_ITER = {"alternating": 1000, "dykstra": 1000, "rescale": 0}
_DEFAULT_CHUNK_BYTES = 256 * 1024**2
_MARGIN = 1e-9  # land this far under the bound: other float64 measurements add their rounding
_TORCH_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


@dataclass(frozen=True)
class ProjectionOptions:
    """How a projection runs: the method, its tolerance and iteration cap, where it computes."""

    method: str = "alternating"
    tol: float = DEFAULT_TOL
    max_iter: int | None = None  # None: the method's default (DEFAULT_MAX_ITER)
    device: str = "cpu"
    max_memory: int | None = None  # frequency chunks' budget, bytes (None: 256 MiB)


@dataclass(frozen=True)
class ProjectionStats:
    """What one projection did. σ values are certified upper bounds (float64, within 1e-6) on
    σ_max of the circular operator on ``grid`` (times the operator's fixed multiplier, e.g. a
    folded BatchNorm)."""

    method: str
    bound: float
    grid: tuple[int, ...]
    sigma_before: float
    sigma_after: float
    iterations: int
    relative_change: float  # ‖K − K₀‖_F / ‖K₀‖_F (0 for an all-zero K₀)
    unchanged: bool  # already inside the ball: the kernel was returned as is
    converged: bool  # the method itself reached c·(1 + tol) before the cap
    final_scale: float  # the exact-feasibility factor applied at the end (1.0: none)
    fallback: str = ""  # "rescale" when the method ended farther from K₀ than rescaling would


@dataclass(frozen=True)
class ProjectedKernel:
    kernel: np.ndarray  # same dtype as the input; the input object itself when unchanged
    stats: ProjectionStats


def _run_alternating(
    op: Torus,
    t0: torch.Tensor,
    bound: float,
    tol: float,
    max_iter: int,
    progress: ProgressCallback | None,
) -> tuple[torch.Tensor, int, bool]:
    torus = t0
    for it in range(max_iter + 1):
        if it == max_iter:
            return torus, it, op.sigma_max(torus) <= bound * (1 + tol)
        clipped, sigma = op.clip(torus, bound)
        if sigma <= bound * (1 + tol):
            return torus, it, True
        torus = clipped * op.mask
        if progress is not None:
            progress(it + 1, max_iter, "alternating projections")
    raise AssertionError("unreachable")


def _run_dykstra(
    op: Torus,
    t0: torch.Tensor,
    bound: float,
    tol: float,
    max_iter: int,
    progress: ProgressCallback | None,
) -> tuple[torch.Tensor, int, bool]:
    # The support set is a subspace, so Dykstra needs a correction term for the ball only.
    x = t0
    p = torch.zeros_like(t0)
    scale = max(float(torch.linalg.vector_norm(t0)), 1e-300)
    for it in range(1, max_iter + 1):
        y, _ = op.clip(x + p, bound)
        p = x + p - y
        x_new = y * op.mask
        step = float(torch.linalg.vector_norm(x_new - x)) / scale
        x = x_new
        if progress is not None:
            progress(it, max_iter, "Dykstra projections")
        if step <= tol and op.sigma_max(x) <= bound * (1 + tol):
            return x, it, True
    return x, max_iter, op.sigma_max(x) <= bound * (1 + tol)


def _relative_change(kernel: torch.Tensor, kernel0: torch.Tensor) -> float:
    norm0 = float(torch.linalg.vector_norm(kernel0))
    diff = float(torch.linalg.vector_norm(kernel - kernel0))
    return diff / norm0 if norm0 > 0 else 0.0


@on_cpu_workers
def project_tensor(
    kernel: torch.Tensor,
    geometry: Geometry,
    bound: float,
    options: ProjectionOptions = ProjectionOptions(),
    *,
    multiplier: torch.Tensor | None = None,
    work_dtype: torch.dtype = torch.float64,
    storage_dtype: torch.dtype | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[torch.Tensor, ProjectionStats]:
    """Project ``kernel`` (any float dtype, any device) so that the operator
    ``multiplier ⊙ conv_kernel`` has circular σ_max ≤ ``bound`` on ``geometry.grid``.

    ``multiplier`` (broadcastable to the kernel, e.g. a folded BatchNorm scale per output channel)
    is part of the operator but not of the result: the projection runs on ``multiplier·kernel``
    and divides it back out; entries with a zero multiplier keep their old value (they do not
    reach the output). ``storage_dtype`` (default: the kernel's) is the precision the kernel
    will be saved in: the bound is checked after rounding to it. Returns the new kernel in the
    input's dtype (the input tensor itself when the operator is already inside the ball) and
    the statistics.
    """
    method, tol, max_memory = options.method, options.tol, options.max_memory
    max_iter = options.max_iter
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose from {', '.join(METHODS)}")
    if not bound > 0 or not math.isfinite(bound):
        raise ValueError(f"the bound must be a positive finite number, got {bound}")
    store_dtype = storage_dtype or kernel.dtype
    geometry = geometry.reduced(tuple(int(k) for k in kernel.shape[2:]))
    k0 = kernel.detach().to(torch.float64)
    mult = None if multiplier is None else multiplier.to(device=k0.device, dtype=torch.float64)
    folded0 = k0 if mult is None else k0 * mult
    op64 = Torus(folded0, geometry, max_memory or _DEFAULT_CHUNK_BYTES)

    def measure(folded: torch.Tensor) -> float:
        return circular_sigma_max(folded, geometry, max_memory=max_memory)

    sigma0 = measure(folded0)
    if sigma0 <= bound:
        stats = ProjectionStats(
            method, bound, geometry.grid, sigma0, sigma0, 0, 0.0, True, True, 1.0
        )
        return kernel, stats
    if max_iter is None:
        max_iter = DEFAULT_MAX_ITER[method]

    def unfold(folded: torch.Tensor) -> torch.Tensor:
        if mult is None:
            return folded
        safe = torch.where(mult != 0, mult, torch.ones_like(mult))
        return torch.where(mult != 0, folded / safe, k0)

    rescaled = folded0 * (bound / sigma0)
    iterations, converged = 0, True
    if method == "rescale":
        folded = rescaled
    else:
        work0 = folded0.to(work_dtype)
        op = op64 if work_dtype == torch.float64 else Torus(work0, geometry, op64.chunk_bytes)
        run = _run_alternating if method == "alternating" else _run_dykstra
        torus, iterations, converged = run(op, op.embed(work0), bound, tol, max_iter, progress)
        folded = op64.to_kernel(torus.to(torch.float64) * op64.mask, folded0)
    fallback = ""
    if method != "rescale" and _relative_change(folded, folded0) > _relative_change(
        rescaled, folded0
    ):
        folded, fallback = rescaled, "rescale"
    new, final_scale, sigma_after = _fit(measure, unfold, folded, bound, store_dtype, mult)
    stats = ProjectionStats(
        method=method,
        bound=bound,
        grid=geometry.grid,
        sigma_before=sigma0,
        sigma_after=sigma_after,
        iterations=iterations,
        relative_change=_relative_change(new, k0),
        unchanged=False,
        converged=converged,
        final_scale=final_scale,
        fallback=fallback,
    )
    return new.to(device=kernel.device, dtype=kernel.dtype), stats


def _fit(
    measure: Callable[[torch.Tensor], float],
    unfold: Callable[[torch.Tensor], torch.Tensor],
    folded: torch.Tensor,
    bound: float,
    store_dtype: torch.dtype,
    mult: torch.Tensor | None,
) -> tuple[torch.Tensor, float, float]:
    """Cast to the storage dtype, re-measure (certified upper bound, float64), and shrink until
    the kernel AS STORED is inside the ball (the methods stop at c·(1 + tol); rounding can add a
    few ulps)."""
    eps = torch.finfo(store_dtype).eps
    # A hair under the bound, so that another float64 measurement (dense, Lanczos) agrees.
    target = bound * (1 - _MARGIN)
    scale = 1.0
    sigma = math.inf
    for _ in range(16):
        stored = unfold(folded * scale).to(store_dtype).to(torch.float64)
        sigma = measure(stored if mult is None else stored * mult)
        if sigma <= target:
            return stored, scale, sigma
        scale *= (target / sigma) * (1 - 4 * eps)
    raise ArithmeticError(f"could not bring sigma_max {sigma} under the bound {bound}")


def project_kernel(
    kernel: np.ndarray,
    geometry: Geometry,
    bound: float,
    options: ProjectionOptions = ProjectionOptions(),
    *,
    multiplier: np.ndarray | None = None,
    storage_dtype: str | None = None,
    progress: ProgressCallback | None = None,
) -> ProjectedKernel:
    """numpy front end of :func:`project_tensor` (float64 work on ``options.device``)."""
    src = np.asarray(kernel)
    new, stats = project_tensor(
        # a copy: loaders hand out read-only views
        torch.from_numpy(np.array(src)).to(options.device),
        geometry,
        bound,
        options,
        multiplier=None
        if multiplier is None
        else torch.from_numpy(np.asarray(multiplier, np.float64)),
        storage_dtype=_TORCH_DTYPES.get(storage_dtype or ""),
        progress=progress,
    )
    if stats.unchanged:
        return ProjectedKernel(kernel, stats)
    return ProjectedKernel(new.cpu().numpy(), stats)


def _as_float64(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to(torch.float64)
    return torch.from_numpy(np.array(array, np.float64))  # a copy: loaders hand out read-only views


def circular_sigma_max(
    kernel: np.ndarray | torch.Tensor,
    geometry: Geometry,
    *,
    multiplier: np.ndarray | torch.Tensor | None = None,
    max_memory: int | None = None,
) -> float:
    """Certified upper bound (float64, within 1e-6 of the value) on σ_max of
    ``multiplier ⊙ conv_kernel`` with circular padding on ``geometry.grid``: the engine's
    certificate, one Cholesky per frequency instead of every block's SVD (on ResNet-50 at
    224x224, rescale clipping took 216 s with the SVDs)."""
    k = _as_float64(kernel)
    if multiplier is not None:
        k = k * _as_float64(multiplier).to(k.device)
    reduced = geometry.reduced(tuple(int(n) for n in k.shape[2:]))
    with all_cores() as threads:
        rt = runtime(EngineOptions(device=str(k.device), max_memory=max_memory, threads=threads))
        conv = Conv(k, reduced.stride, reduced.dilation, reduced.groups)
        norm = certified_circular_sigma_max(conv, reduced.grid, rt)
    return norm.upper


def project_matrix(
    weight: np.ndarray, bound: float, *, storage_dtype: str | None = None
) -> ProjectedKernel:
    """A dense layer: the SVD clip is the exact nearest point of the ball, in one step."""
    w = np.asarray(weight)
    projected = project_kernel(
        w.reshape(*w.shape, 1), Geometry((1,), (1,), (1,)), bound, storage_dtype=storage_dtype
    )
    if projected.stats.unchanged:
        return ProjectedKernel(weight, projected.stats)
    return ProjectedKernel(projected.kernel.reshape(w.shape), projected.stats)
