"""Per-frequency Gram matrices of the circular operator from the kernel's autocorrelation.

σ_max needs only λ_max of the smaller Gram matrix of each (alias) frequency block B(m). Forming
it per frequency costs ``F·rows·cols·min(rows, cols)`` complex multiply-adds. The Gram matrix is a
trigonometric polynomial in the frequency whose coefficients are the kernel's autocorrelation
("lags"), so it is computed once in the kernel domain (one real product per pair of taps,
independent of the grid) and then evaluated at every frequency by a small real GEMM:

- output side, any stride: B(m)B(m)ᴴ = Σ_j H_{s·j}·exp(-2πi·m·j/M), with
  H_ℓ = Σ_{(a-a')·d = ℓ} K_a·K_{a'}ᵀ. The 1/prod(s) of the alias blocks and the sum over the
  s aliases keep exactly the lags divisible by the stride (MATH.md §1);
- input side, stride 1: B(m)ᴴB(m) = Σ_ℓ G_ℓ·exp(-2πi·m·ℓ/N), with G_ℓ = Σ_{(a'-a)·d = ℓ} K_aᵀ·K_{a'}.

H_{-ℓ} = H_ℓᵀ, so only half of the tap pairs are multiplied. The phase ``(m·j) mod M`` is taken
in integers, as in :mod:`frequencies`, so dilation and kernels larger than the grid need no
special case.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.spectrum.fourier import alias_grid


@dataclass(frozen=True)
class LagGram:
    """Real lag coefficients ``(L, groups, n, n)`` and their integer lags ``(L, nd)``."""

    coefficients: torch.Tensor
    lags: np.ndarray
    #: the alias grid M the lags are evaluated on (lag j has phase exp(-2πi·m·j/M))
    period: tuple[int, ...]
    output_side: bool
    #: Σ_a ‖K_a‖_F squared: scales the rounding error of the evaluated Gram matrices
    tap_mass: float

    @property
    def size(self) -> int:
        return int(self.coefficients.shape[-1])


def lag_pairs(conv: Conv) -> int | None:
    """How many tap pairs the lag form multiplies (an upper estimate), or None where it does not
    exist: it does for the output side always, for the input side at stride 1 only."""
    if conv.rows > conv.cols and any(s != 1 for s in conv.stride):
        return None
    taps = math.prod(conv.kernel_size)
    return taps * (taps + 1) // 2


def lag_gram(conv: Conv, grid: tuple[int, ...], max_bytes: int = 1 << 28) -> LagGram:
    """The lag coefficients of the smaller Gram matrix of the circular operator on ``grid``
    (where they exist: :func:`lag_pairs`)."""
    kernel, stride, dilation, groups = conv.kernel, conv.stride, conv.dilation, conv.groups
    c_in_g, ksize, co_g = conv.shape[1], conv.kernel_size, conv.rows
    output_side = co_g <= conv.cols
    # (taps, groups, rows, inner): the factor whose products K·Kᵀ form the Gram matrix
    per_group = kernel.reshape(groups, co_g, c_in_g, -1).permute(3, 0, 1, 2)
    factor = per_group if output_side else per_group.transpose(-1, -2)
    positions = np.array(list(itertools.product(*[range(k) for k in ksize])), dtype=np.int64)
    positions = positions.reshape(-1, len(ksize)) * np.asarray(dilation, dtype=np.int64)
    step = np.asarray(stride, dtype=np.int64)
    # Output side: lag (a - a')·d must be divisible by the stride; input side: stride is 1.
    firsts, seconds, lags = [], [], []
    for a, b in itertools.combinations_with_replacement(range(len(positions)), 2):
        lag = positions[a] - positions[b] if output_side else positions[b] - positions[a]
        if np.all(lag % step == 0):
            firsts.append(a)
            seconds.append(b)
            lags.append(tuple(lag // step))
    # Canonical sign: keep lag >= 0 lexicographically; the mirrored lag gets the transpose.
    index: dict[tuple[int, ...], int] = {}
    slot, flip = [], []
    for lag in lags:
        neg = tuple(-v for v in lag)
        key = max(lag, neg)
        slot.append(index.setdefault(key, len(index)))
        flip.append(key != lag)
    canon = factor.new_zeros((len(index), *factor.shape[1:-1], factor.shape[-2]))
    rows, inner = factor.shape[-2:]
    per_pair = max(1, groups * rows * rows * canon.element_size())
    most = max(1, max_bytes // per_pair)
    firsts_np = np.asarray(firsts)
    # One GEMM per first tap against all its partners: K_a·[K_b1 … K_bm]ᵀ.
    for a in np.unique(firsts_np):
        where = np.flatnonzero(firsts_np == a)
        for part in np.array_split(where, -(-where.size // most)):
            partners = factor[torch.as_tensor(np.asarray(seconds)[part])]  # (m, g, rows, inner)
            stacked = partners.permute(1, 3, 0, 2).reshape(groups, inner, -1)
            products = (factor[int(a)] @ stacked).reshape(groups, rows, part.size, rows)
            products = products.permute(2, 0, 1, 3)  # (m, g, rows, rows)
            flips = np.asarray(flip)[part]
            slots = torch.as_tensor(np.asarray(slot)[part], device=products.device)
            if not flips.all():
                keep = torch.as_tensor(np.flatnonzero(~flips), device=products.device)
                canon.index_add_(0, slots[keep], products[keep])
            if flips.any():
                mirror = torch.as_tensor(np.flatnonzero(flips), device=products.device)
                canon.index_add_(0, slots[mirror], products[mirror].transpose(-1, -2))
    keys = np.array(list(index), dtype=np.int64).reshape(len(index), -1)
    # Mirror: lag -j carries H_jᵀ (the zero lag is its own mirror).
    nonzero = np.any(keys != 0, axis=1)
    coefficients = torch.cat([canon, canon[torch.as_tensor(nonzero)].transpose(-1, -2)])
    all_lags = np.concatenate([keys, -keys[nonzero]])
    norms = torch.linalg.matrix_norm(per_group.to(torch.float64)).sum(dim=0)  # per group
    return LagGram(
        coefficients=coefficients,
        lags=all_lags,
        period=alias_grid(grid, stride),
        output_side=output_side,
        tap_mass=float(norms.max()) ** 2,
    )


def evaluate_gram(gram: LagGram, freqs: np.ndarray) -> torch.Tensor:
    """The Gram matrices at the alias frequencies ``freqs`` (``(F, nd)``): complex
    ``(F, groups, n, n)``, Hermitian."""
    period = np.asarray(gram.period, dtype=np.int64)
    cells = (freqs[:, None, :] * gram.lags[None, :, :]) % period  # (F, L, nd), exact integers
    angle = -2 * np.pi * (cells / period).sum(-1)  # (F, L)
    return _evaluate(gram.coefficients, angle)


def evaluate_gram_at(gram: LagGram, nu: np.ndarray) -> torch.Tensor:
    """The Gram matrices at continuous frequencies ``nu`` (``(F, nd)`` radians, lag j with
    phase exp(-i⟨ν, j⟩); ν = 2πm/M gives :func:`evaluate_gram` at m): complex
    ``(F, groups, n, n)``, Hermitian."""
    angle = -(np.asarray(nu, dtype=np.float64) @ gram.lags.T.astype(np.float64))  # (F, L)
    return _evaluate(gram.coefficients, angle)


def _evaluate(coeff: torch.Tensor, angle: np.ndarray) -> torch.Tensor:
    flat = coeff.reshape(coeff.shape[0], -1)
    out = phase_sum(np.cos(angle), np.sin(angle), flat)
    return out.reshape(len(angle), *coeff.shape[1:])


#: real entries of one column block of :func:`phase_sum`'s product (1 MiB: stays in cache)
PHASE_BLOCK = 1 << 17


def phase_sum(cos: np.ndarray, sin: np.ndarray, flat: torch.Tensor) -> torch.Tensor:
    """Σ_l (cos + i·sin)[f, l]·flat[l]: the complex ``(F, N)`` combination of the real rows of
    ``flat`` ``(L, N)`` with the phases of ``F`` points.

    On CPU it is numpy's GEMM over column blocks that stay in cache, the real and imaginary
    parts written in place: with an inner dimension as short as a kernel's lags (25 for 3x3),
    torch's CPU matmul was measured 3-5x slower (one complex product or two real ones)."""
    if flat.device.type != "cpu":
        c = torch.from_numpy(cos).to(device=flat.device, dtype=flat.dtype)
        s = torch.from_numpy(sin).to(device=flat.device, dtype=flat.dtype)
        return torch.complex(c @ flat, s @ flat)
    real = flat.detach().contiguous().numpy()
    phases = np.concatenate([cos, sin]).astype(real.dtype, copy=False)
    count = len(cos)
    out = np.empty((count, real.shape[1]), dtype=np.result_type(real.dtype, np.complex64))
    step = max(256, PHASE_BLOCK // max(2 * count, 1))
    for start in range(0, real.shape[1], step):
        block = phases @ real[:, start : start + step]
        part = out[:, start : start + step]
        part.real = block[:count]
        part.imag = block[count:]
    return torch.from_numpy(out)
