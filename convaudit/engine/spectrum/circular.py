"""Every singular value of the circular-padding conv operator (MATH.md §1), exact.

Hermitian half of the frequencies, one SVD for 1×1 kernels, batched LAPACK SVDs (CPU worker
threads) or batched Hermitian eigensolves (CUDA, see ``device_svdvals``) over frequency chunks
sized to the memory budget.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.results import ProgressCallback
from convaudit.engine.runtime import Runtime, chunk_size, chunks, run_chunks, single_threaded_blas
from convaudit.engine.spectrum.fourier import check_exact_geometry
from convaudit.engine.spectrum.frequencies import alias_frequencies, frequency_block
from convaudit.engine.spectrum.routes import svdvals


def device_svdvals(matrices: torch.Tensor, budget: int | None = None) -> np.ndarray:
    """Singular values of (batched) matrices on a torch device, descending, as float64 numpy.

    On the CPU, numpy's LAPACK SVD. Off the CPU, the eigenvalues of [[0, B], [Bᴴ, 0]] in
    double precision, batched through cuSOLVER where it can (``eigensolvers``, which also says
    which backend ran), within ``budget`` bytes. Measured on an H200 (torch 2.11, torch's
    eigvalsh, 28-1624 complex128 blocks of 64-512): 2.7-5.7x faster than
    ``torch.linalg.svdvals`` and 3e-15·σ_max accurate against LAPACK, where svdvals was 4e-14
    to 5e-13 off (and its complex64 version up to 3.6e-5).
    """
    return svdvals(matrices, budget=budget)


def pointwise_spectrum(conv: Conv, grid: tuple[int, ...]) -> np.ndarray:
    """1×1 kernel: B(m) = (1/√P)[W, ..., W] at every alias frequency, so σ(B) = σ(W) plus
    ``min(c_out/g, P·c_in/g) - min(c_out/g, c_in/g)`` zeros, each repeated prod(N/s) times."""
    c_in_g, co_g = conv.shape[1], conv.rows
    w = conv.kernel.reshape(conv.groups, co_g, c_in_g)
    sv = device_svdvals(w).reshape(-1)
    n_alias = math.prod(conv.stride)
    zeros = conv.groups * (min(co_g, c_in_g * n_alias) - min(co_g, c_in_g))
    per_freq = np.concatenate([sv, np.zeros(zeros)])
    count = math.prod(grid) // n_alias
    return np.sort(np.tile(per_freq, count))[::-1]


def circular_spectrum(
    conv: Conv, grid: tuple[int, ...], rt: Runtime, progress: ProgressCallback | None = None
) -> np.ndarray:
    """All singular values of the circular operator on ``grid``, with multiplicity, sorted
    descending (float64 array).

    The kernel is on ``rt.device`` in ``rt.real``; the stride must divide the grid (checked).
    Values come out of LAPACK/cuSOLVER in the requested dtype.
    """
    if conv.pointwise:
        check_exact_geometry(grid, conv.stride)
        return pointwise_spectrum(conv, grid)
    unit = conv.unit_axes()
    if unit:  # a Conv3d (1, 11, 11): its 2-D spectrum, each value once per slice
        keep = tuple(n for ax, n in enumerate(grid) if ax not in unit)
        values, weights = frequency_svdvals(conv.without_axes(unit), keep, rt, progress)
        weights = weights * math.prod(grid[ax] for ax in unit)
    else:
        values, weights = frequency_svdvals(conv, grid, rt, progress)
    out = np.repeat(values.reshape(len(weights), -1), weights, axis=0).reshape(-1)
    out = np.sort(out)[::-1]
    return np.ascontiguousarray(out)


def frequency_svdvals(
    conv: Conv, grid: tuple[int, ...], rt: Runtime, progress: ProgressCallback | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frequency singular values ``(F, groups·r)`` of the Hermitian half, and weights ``(F,)``."""
    freqs, weights = alias_frequencies(grid, conv.stride, half=True)
    per_freq = conv.c_out * conv.cols * rt.itemsize
    if rt.device.type != "cpu":
        # device_svdvals: complex128 [[0, B], [Bᴴ, 0]] per group, and its workspace
        per_freq += 2 * conv.groups * (conv.rows + conv.cols) ** 2 * 16
    size = chunk_size(rt, per_freq, len(freqs), what="singular values")

    def work(part: slice) -> np.ndarray:
        sv = device_svdvals(frequency_block(conv, freqs[part], grid), budget=rt.max_memory)
        return sv.reshape(sv.shape[0], -1)

    parts = list(chunks(len(freqs), size))
    with single_threaded_blas():
        results = run_chunks(rt, work, parts, progress, "singular values", distributable=True)
    return np.concatenate(results, axis=0), weights
