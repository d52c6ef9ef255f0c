"""Projection of a conv kernel onto the operator-norm ball {‖conv‖₂ ≤ c} (MATH.md §3).

Everything happens on the torus of one grid: a kernel is embedded there (colliding taps sum),
its circular operator is block-diagonal in frequency, and

- *clip* replaces every frequency block M = UΣVᴴ by U·min(Σ, c)·Vᴴ (exact projection among all
  kernels of the grid's size),
- *truncate* keeps only the kernel's own (dilated) tap cells.

The paper's one-shot clip+truncate is NOT feasible (it lands 6–91 % above c), so:

- ``alternating``: repeat clip ↔ truncate until the re-measured σ_max ≤ c·(1 + tol);
- ``dykstra``: Dykstra's correction; converges to the nearest feasible kernel, slowly;
- ``rescale``: K·c/σ_max, feasible at once, farthest from K.

Every method ends with an exact-feasibility step: the kernel is cast to its storage dtype,
re-measured in float64, and shrunk by the last (≤ tol) factor if needed, so the returned kernel
satisfies σ_circ(grid) ≤ c as stored. What σ_circ(grid) certifies (the real zero-padded
operator, a circular layer, ...) is the caller's business: see ``projection_layer``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from convaudit.engine.fourier import (
    blocks_to_torus,
    frequency_matrices,
    torus_kernel,
    torus_to_kernel,
)
from convaudit.engine.results import ProgressCallback

Method = Literal["alternating", "dykstra", "rescale"]
METHODS: tuple[str, ...] = ("alternating", "dykstra", "rescale")
DEFAULT_TOL = 1e-3
DEFAULT_MAX_ITER = {"alternating": 1000, "dykstra": 1000, "rescale": 0}
_DEFAULT_CHUNK_BYTES = 256 * 1024**2
_MARGIN = 1e-10
#: the worker pool of the projection running in this context (see cpu_workers)
_POOL: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "pool", default=None
)
_TORCH_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


@dataclass(frozen=True)
class ProjectionStats:
    """What one projection did. σ values are σ_max of the circular operator on ``grid``
    (times the operator's fixed multiplier, e.g. a folded BatchNorm), measured in float64."""

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


@dataclass(frozen=True)
class Geometry:
    """The forward conv whose circular operator on ``grid`` is projected."""

    grid: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1

    def reduced(self, kernel_size: tuple[int, ...]) -> Geometry:
        """A 1×…×1 kernel is the same matrix at every frequency: one block on a 1-cell grid."""
        if all(k == 1 for k in kernel_size):
            ones = (1,) * len(self.grid)
            return Geometry(ones, ones, ones, self.groups)
        return self


class _Torus:
    """The clip and truncate operators of one geometry, on float tensors of the torus shape."""

    def __init__(
        self,
        kernel0: torch.Tensor,
        geometry: Geometry,
        chunk_bytes: int,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.geometry = geometry
        self.pool = pool
        self.kernel_size = tuple(int(k) for k in kernel0.shape[2:])
        self.c_in_g = int(kernel0.shape[1])
        self.half = all(s == 1 for s in geometry.stride)
        self.chunk_bytes = chunk_bytes
        ones = torch.ones_like(kernel0)
        self.count = torus_kernel(ones, geometry.grid, geometry.dilation)
        self.mask = (self.count > 0).to(kernel0.dtype)
        self.collide = bool((self.count > 1).any())

    def embed(self, kernel: torch.Tensor) -> torch.Tensor:
        return torus_kernel(kernel, self.geometry.grid, self.geometry.dilation)

    def to_kernel(self, torus: torch.Tensor, kernel0: torch.Tensor) -> torch.Tensor:
        """Taps from a torus supported on the tap cells. Colliding taps share a cell's change
        equally (the smallest kernel change that realises the torus)."""
        g = self.geometry
        if not self.collide:
            return torus_to_kernel(torus, self.kernel_size, g.dilation)
        delta = (torus - self.embed(kernel0)) / self.count.clamp(min=1)
        return kernel0 + torus_to_kernel(delta, self.kernel_size, g.dilation)

    def blocks(self, torus: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        if all(n == 1 for n in g.grid):  # one real matrix (a 1x1 kernel): no FFT, real SVDs
            return torus.reshape(g.groups, -1, *torus.shape[1:2]).unsqueeze(0)
        # The torus is a grid-sized kernel with dilation 1: its embedding is itself.
        return frequency_matrices(
            torus,
            g.grid,
            stride=g.stride,
            dilation=(1,) * len(g.grid),
            groups=g.groups,
            half=self.half,
        )

    def sigma_max(self, torus: torch.Tensor) -> float:
        flat = self._flat(self.blocks(torus))
        return max(float(top.max()) for top in self._map(self._top, self._chunks(flat)))

    @staticmethod
    def _top(blocks: torch.Tensor) -> torch.Tensor:
        if min(blocks.shape[-2:]) == 1:  # a row or column (depthwise): σ is its length
            return torch.linalg.vector_norm(blocks, dim=(-2, -1))
        return torch.linalg.svdvals(blocks)[..., 0]

    def clip(self, torus: torch.Tensor, bound: float) -> tuple[torch.Tensor, float]:
        """Exact projection onto the ball among grid-sized kernels; also returns σ_max before.

        Singular values first (cheap), then full SVDs only of the blocks above the bound."""
        blocks = self.blocks(torus)
        flat = self._flat(blocks)
        top = torch.cat(self._map(self._top, self._chunks(flat)))
        sigma = float(top.max())
        if min(flat.shape[-2:]) == 1:
            factor = (bound / top.clamp(min=bound)).to(flat.dtype)
            flat = flat * factor[:, None, None]
        else:
            over = torch.nonzero(top > bound).flatten()
            if over.numel():

                def clip_part(idx: torch.Tensor) -> torch.Tensor:
                    u, s, vh = torch.linalg.svd(flat[idx], full_matrices=False)
                    return (u * s.clamp(max=bound).to(u.dtype)[..., None, :]) @ vh

                parts = list(torch.split(over, self._step(flat, over.numel())))
                out = flat.clone()
                for idx, clipped_part in zip(parts, self._map(clip_part, parts), strict=True):
                    out[idx] = clipped_part
                flat = out
        g = self.geometry
        if not flat.is_complex():
            return flat.reshape(torus.shape).to(torus.dtype), sigma
        clipped = blocks_to_torus(
            flat.reshape(blocks.shape), g.grid, stride=g.stride, c_in_g=self.c_in_g, half=self.half
        )
        return clipped.to(torus.dtype), sigma

    @staticmethod
    def _flat(blocks: torch.Tensor) -> torch.Tensor:
        return blocks.reshape(-1, *blocks.shape[-2:])

    def _step(self, flat: torch.Tensor, total: int | None = None) -> int:
        # An SVD needs a few copies of its input: budget ~4x per matrix.
        per = 4 * flat.shape[-1] * flat.shape[-2] * flat.element_size()
        step = max(1, self.chunk_bytes // max(per, 1))
        if self.pool is not None:  # a few chunks per worker keep every worker busy
            total = flat.shape[0] if total is None else total
            step = min(step, max(1, -(-total // (4 * self.pool._max_workers))))
        return step

    def _chunks(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(flat, self._step(flat)))

    def _map(
        self, fn: Callable[[torch.Tensor], torch.Tensor], parts: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        if self.pool is None or len(parts) < 2:
            return [fn(part) for part in parts]
        return list(self.pool.map(fn, parts))


@contextlib.contextmanager
def cpu_workers(device: torch.device) -> Iterator[ThreadPoolExecutor | None]:
    """On CPU: one intra-op thread and a pool of worker threads over frequency chunks (LAPACK
    releases the GIL). Threaded LAPACK on many small matrices is slow, and collapses outright
    when the cores are shared (measured: one 256x128 SVD 1 s with 2 OpenMP threads on a busy
    2-core machine, 5 ms with 1)."""
    if device.type != "cpu":
        yield None
        return
    workers = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                token = _POOL.set(pool)
                try:
                    yield pool
                finally:
                    _POOL.reset(token)
        else:
            yield None
    finally:
        torch.set_num_threads(workers)


F = TypeVar("F", bound=Callable[..., Any])


def _on_cpu_workers(func: F) -> F:
    """Run ``func(kernel, ...)`` inside :func:`cpu_workers` for the kernel's device."""

    @functools.wraps(func)
    def wrapper(kernel: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if _POOL.get() is not None:
            return func(kernel, *args, **kwargs)
        with cpu_workers(torch.as_tensor(kernel).device):
            return func(kernel, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _run_alternating(
    op: _Torus,
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
    op: _Torus,
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


@_on_cpu_workers
def project_tensor(
    kernel: torch.Tensor,
    geometry: Geometry,
    *,
    bound: float,
    method: str = "alternating",
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    multiplier: torch.Tensor | None = None,
    work_dtype: torch.dtype = torch.float64,
    storage_dtype: torch.dtype | None = None,
    max_memory: int | None = None,
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
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose from {', '.join(METHODS)}")
    if not bound > 0 or not math.isfinite(bound):
        raise ValueError(f"the bound must be a positive finite number, got {bound}")
    store_dtype = storage_dtype or kernel.dtype
    geometry = geometry.reduced(tuple(int(k) for k in kernel.shape[2:]))
    k0 = kernel.detach().to(torch.float64)
    mult = None if multiplier is None else multiplier.to(device=k0.device, dtype=torch.float64)
    folded0 = k0 if mult is None else k0 * mult
    op64 = _Torus(folded0, geometry, max_memory or _DEFAULT_CHUNK_BYTES)
    sigma0 = op64.sigma_max(op64.embed(folded0))
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
        op = op64 if work_dtype == torch.float64 else _Torus(work0, geometry, op64.chunk_bytes)
        run = _run_alternating if method == "alternating" else _run_dykstra
        torus, iterations, converged = run(op, op.embed(work0), bound, tol, max_iter, progress)
        folded = op64.to_kernel(torus.to(torch.float64) * op64.mask, folded0)
    fallback = ""
    if method != "rescale" and _relative_change(folded, folded0) > _relative_change(
        rescaled, folded0
    ):
        folded, fallback = rescaled, "rescale"
    new, final_scale, sigma_after = _fit(op64, unfold, folded, bound, store_dtype, mult)
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
    op: _Torus,
    unfold: Callable[[torch.Tensor], torch.Tensor],
    folded: torch.Tensor,
    bound: float,
    store_dtype: torch.dtype,
    mult: torch.Tensor | None,
) -> tuple[torch.Tensor, float, float]:
    """Cast to the storage dtype, re-measure in float64, and shrink until the kernel AS STORED
    is inside the ball (the methods stop at c·(1 + tol); rounding can add a few ulps)."""
    eps = torch.finfo(store_dtype).eps
    # A hair under the bound, so that another float64 measurement (dense, Lanczos) agrees.
    target = bound * (1 - _MARGIN)
    scale = 1.0
    sigma = math.inf
    for _ in range(16):
        stored = unfold(folded * scale).to(store_dtype).to(torch.float64)
        sigma = op.sigma_max(op.embed(stored if mult is None else stored * mult))
        if sigma <= target:
            return stored, scale, sigma
        scale *= (target / sigma) * (1 - 4 * eps)
    raise ArithmeticError(f"could not bring sigma_max {sigma} under the bound {bound}")


def project_kernel(
    kernel: np.ndarray,
    geometry: Geometry,
    *,
    bound: float,
    method: str = "alternating",
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    multiplier: np.ndarray | None = None,
    storage_dtype: str | None = None,
    device: str = "cpu",
    max_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> ProjectedKernel:
    """numpy front end of :func:`project_tensor` (float64 work on ``device``)."""
    src = np.asarray(kernel)
    new, stats = project_tensor(
        torch.from_numpy(np.array(src)).to(device),  # a copy: loaders hand out read-only views
        geometry,
        bound=bound,
        method=method,
        tol=tol,
        max_iter=max_iter,
        multiplier=None
        if multiplier is None
        else torch.from_numpy(np.asarray(multiplier, np.float64)),
        storage_dtype=_TORCH_DTYPES.get(storage_dtype or ""),
        max_memory=max_memory,
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
    """σ_max (float64) of ``multiplier ⊙ conv_kernel`` with circular padding on ``geometry.grid``."""
    k = _as_float64(kernel)
    if multiplier is not None:
        k = k * _as_float64(multiplier).to(k.device)
    reduced = geometry.reduced(tuple(int(n) for n in k.shape[2:]))
    with cpu_workers(k.device):
        op = _Torus(k, reduced, max_memory or _DEFAULT_CHUNK_BYTES)
        return op.sigma_max(op.embed(k))


def project_matrix(
    weight: np.ndarray, bound: float, *, storage_dtype: str | None = None
) -> ProjectedKernel:
    """A dense layer: the SVD clip is the exact nearest point of the ball, in one step."""
    w = np.asarray(weight)
    projected = project_kernel(
        w.reshape(*w.shape, 1), Geometry((1,), (1,), (1,)), bound=bound, storage_dtype=storage_dtype
    )
    if projected.stats.unchanged:
        return ProjectedKernel(weight, projected.stats)
    return ProjectedKernel(projected.kernel.reshape(w.shape), projected.stats)
