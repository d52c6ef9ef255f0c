"""Frequency matrices of the circular operator, evaluated in chunks (MATH.md §1).

Instead of an FFT of the whole torus (memory ``c_out·c_in·prod(N)``), each (alias) frequency is
evaluated directly from the kernel's taps: ``K̂(u) = Σ_a K_a·exp(-2πi·u·a·d/N)``. The phase is
periodic, so dilation and kernels larger than the grid need no special case (taps on the same
cell add up by themselves); ``(u·a·d) mod N`` is taken in integers so the phase is exact.
A chunk of F frequencies costs ``F·prod(s)·prod(k)·c_out·c_in/g`` multiply-adds, far below the
SVD that follows, and any chunk size fits any memory budget.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.spectrum.fourier import alias_grid, check_exact_geometry, half_multiplicity


def alias_frequencies(
    grid: tuple[int, ...], stride: tuple[int, ...], *, half: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The alias frequencies m (``(F, nd)`` int64) and their multiplicities (``(F,)``).

    With ``half`` only the last axis' first ``M//2 + 1`` entries are kept (Hermitian symmetry
    of a real kernel, MATH.md §1); the dropped ones are counted twice through the weights.
    """
    check_exact_geometry(grid, stride)
    alias = alias_grid(grid, stride)
    axes = [np.arange(m) for m in alias]
    weights = np.ones(1, dtype=np.int64)
    if half:
        axes[-1] = np.arange(alias[-1] // 2 + 1)
    mesh = np.meshgrid(*axes, indexing="ij")
    freqs = np.stack([m.reshape(-1) for m in mesh], axis=1).astype(np.int64)
    if half:
        w_last = half_multiplicity(alias[-1]).numpy()
        weights = w_last[freqs[:, -1]]
    else:
        weights = np.ones(len(freqs), dtype=np.int64)
    return freqs, weights


def frequency_block(conv: Conv, freqs: np.ndarray, grid: tuple[int, ...]) -> torch.Tensor:
    """The blocks B(m) of the circular operator on ``grid`` at the alias frequencies ``freqs``
    (``(F, nd)``).

    Returns complex ``(F, groups, c_out/g, (c_in/g)·prod(s))``, including the 1/√prod(s) factor;
    the column order inside a block (channel-major, alias-minor) does not affect singular values.
    """
    taps = conv.taps
    c_out, c_in_g = conv.shape[:2]
    stride, dilation, groups = conv.stride, conv.dilation, conv.groups
    ksize = conv.kernel_size
    alias = alias_grid(grid, stride)
    device = taps.device
    n_freq = len(freqs)
    n_alias = math.prod(stride)
    # phase[f, l, t] = Π_ax exp(-2πi·((m_ax + l_ax·M_ax)·a_ax·d_ax mod N_ax)/N_ax)
    phase = np.ones((n_freq, 1, 1), dtype=np.complex128)
    for ax, (n, s, m_ax, k, d) in enumerate(zip(grid, stride, alias, ksize, dilation, strict=True)):
        u = freqs[:, ax, None] + np.arange(s)[None, :] * m_ax  # (F, s)
        cells = (u[:, :, None] * (np.arange(k) * d)[None, None, :]) % n  # (F, s, k)
        p_ax = np.exp(-2j * np.pi * cells / n)
        phase = (phase[:, :, None, :, None] * p_ax[:, None, :, None, :]).reshape(
            n_freq, phase.shape[1] * s, -1
        )
    ph = torch.from_numpy(phase.reshape(n_freq * n_alias, -1)).to(device=device, dtype=taps.dtype)
    khat = ph @ taps  # (F·L, c_out·c_in_g)
    co_g = c_out // groups
    khat = khat.reshape(n_freq, n_alias, groups, co_g, c_in_g).permute(0, 2, 3, 4, 1)
    khat = khat.reshape(n_freq, groups, co_g, c_in_g * n_alias)
    if n_alias > 1:
        khat = khat / math.sqrt(n_alias)
    return khat


def continuous_block(conv: Conv, nu: np.ndarray, *, derivative: int | None = None) -> torch.Tensor:
    """The blocks B(ν) at continuous alias frequencies ``nu`` (``(F, nd)`` radians: ν = 2πm/M
    is the alias frequency m of :func:`frequency_block` on any grid N = s·M).

    B(ν) = prod(s)^(-1/2)·[K̂((ν + 2πl)/s)]_l with K̂(ξ) = Σ_a K_a·exp(-i⟨ξ, a·d⟩), same shape
    and column order as :func:`frequency_block`. With ``derivative=ax``, ∂B/∂ν_ax instead
    (each tap's phase times -i·a_ax·d_ax/s_ax).
    """
    taps = conv.taps
    c_out, c_in_g = conv.shape[:2]
    stride, dilation, groups = conv.stride, conv.dilation, conv.groups
    n_freq, n_alias = len(nu), math.prod(stride)
    nu = np.asarray(nu, dtype=np.float64).reshape(n_freq, conv.nd)
    # phase[f, l, t] = Π_ax exp(-i·(ν_ax + 2π·l_ax)·a_ax·d_ax/s_ax)
    phase = np.ones((n_freq, 1, 1), dtype=np.complex128)
    for ax, (s, k, d) in enumerate(zip(stride, conv.kernel_size, dilation, strict=True)):
        xi = (nu[:, ax, None] + 2 * np.pi * np.arange(s)[None, :]) / s  # (F, s)
        offsets = np.arange(k) * d
        p_ax = np.exp(-1j * xi[:, :, None] * offsets[None, None, :])  # (F, s, k)
        if derivative == ax:
            p_ax = p_ax * (-1j * offsets / s)[None, None, :]
        phase = (phase[:, :, None, :, None] * p_ax[:, None, :, None, :]).reshape(
            n_freq, phase.shape[1] * s, -1
        )
    ph = torch.from_numpy(phase.reshape(n_freq * n_alias, -1)).to(taps.device, taps.dtype)
    khat = ph @ taps  # (F·L, c_out·c_in_g)
    co_g = c_out // groups
    khat = khat.reshape(n_freq, n_alias, groups, co_g, c_in_g).permute(0, 2, 3, 4, 1)
    khat = khat.reshape(n_freq, groups, co_g, c_in_g * n_alias)
    if n_alias > 1:
        khat = khat / math.sqrt(n_alias)
    return khat
