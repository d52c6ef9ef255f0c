"""The torus operators of the projection: clip (per-frequency SVD) and truncate (tap support).

A kernel embedded on the torus of one grid (colliding taps sum) has a block-diagonal circular
operator in frequency (MATH.md §1): *clip* replaces every block M = UΣVᴴ by U·min(Σ, c)·Vᴴ
(the exact projection onto the ball among all grid-sized kernels, real by Hermitian symmetry),
*truncate* keeps only the kernel's own (dilated) tap cells. Frequency blocks are processed in
memory-bounded chunks, on a pool of worker threads on CPU (see :func:`cpu_workers`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from convaudit.engine.spectrum.fourier import (
    blocks_to_torus,
    frequency_matrices,
    torus_kernel,
    torus_to_kernel,
)

#: the worker pool of the projection running in this context (see cpu_workers)
_POOL: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "pool", default=None
)


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


class Torus:
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


@contextlib.contextmanager
def all_cores() -> Iterator[int]:
    """Inside :func:`cpu_workers`, torch's intra-op threads back for a call that parallelises
    itself (the engine's certified σ_max runs its own workers and multithreaded GEMMs)."""
    pool = _POOL.get()
    threads = pool._max_workers if pool is not None else torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


F = TypeVar("F", bound=Callable[..., Any])


def on_cpu_workers(func: F) -> F:
    """Run ``func(kernel, ...)`` inside :func:`cpu_workers` for the kernel's device."""

    @functools.wraps(func)
    def wrapper(kernel: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if _POOL.get() is not None:
            return func(kernel, *args, **kwargs)
        with cpu_workers(torch.as_tensor(kernel).device):
            return func(kernel, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
