"""σ_max of the circular operator, fast, with a certified bracket (MATH.md §1, §5).

σ_max = max over (alias) frequencies ω of σ_max(B(ω)). Per frequency, on the smaller Gram
matrix G = BBᴴ or BᴴB (λ_max(G) = σ_max²):

- **lower bound**: a few batched power steps; every Rayleigh quotient xᴴGx/xᴴx is <= λ_max(G);
- **upper bound**: Gram iteration, λ_max(G) <= ‖G^(2^t)‖_F^(1/2^t) at EVERY step t, computed by
  repeated squaring with Frobenius rescaling (no overflow);
- frequencies whose upper bound falls below the best lower bound over all frequencies are
  dropped (they cannot hold the maximum); the few survivors of ``gram_steps`` squarings get a
  direct Hermitian eigensolver (exact up to rounding).

The result is exact when the bracket closes within ``tol``. Rounding is accounted for by
widening both ends by ``rounding_margin`` (a multiple of the dtype's ε times the matrix size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from convaudit.engine.frequencies import alias_frequencies, frequency_block, kernel_taps
from convaudit.engine.results import ProgressCallback
from convaudit.engine.runtime import Runtime, chunk_size, chunks

POWER_STEPS = 6
GRAM_STEPS = 7
#: frequencies (best power-iteration bounds) solved exactly before pruning
CANDIDATES = 8
#: Gram matrices up to this size go straight to the eigensolver (iterating costs more)
DIRECT_SIZE = 24


@dataclass(frozen=True)
class CircularNorm:
    lower: float
    upper: float
    #: best estimate: σ_max of the best frequency's block by SVD (inside [lower, upper])
    value: float
    #: the frequency and right singular vector (complex, ``c_in/g·prod(s)``) achieving ``lower``
    frequency: tuple[int, ...]
    group: int
    vector: np.ndarray
    steps: int


def rounding_margin(size: int, dtype: torch.dtype) -> float:
    """Relative widening that covers the rounding of Gram products and eigensolvers."""
    eps = torch.finfo(dtype).eps
    return 16.0 * max(size, 1) * eps


def _gram(blocks: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The smaller Gram matrix of each block; True when it is BᴴB (right side)."""
    rows, cols = blocks.shape[-2:]
    if cols <= rows:
        return blocks.mH @ blocks, True
    return blocks @ blocks.mH, False


def _power_lower(gram: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rayleigh quotients (lower bounds on λ_max) and the iterates, batched."""
    n = gram.shape[-1]
    gen = torch.Generator(device="cpu").manual_seed(0)
    start = torch.randn(n, 1, generator=gen, dtype=torch.float64).to(device=gram.device, dtype=gram.dtype)
    # Start from the column of G with the largest norm plus a fixed random vector: robust.
    col = gram.norm(dim=-2).argmax(dim=-1)
    x = gram.gather(-1, col[..., None, None].expand(*gram.shape[:-1], 1)) + start * gram.diagonal(dim1=-2, dim2=-1).real.mean(-1)[..., None, None].to(gram.dtype)
    for _ in range(steps):
        x = x / x.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(gram.real.dtype).tiny)
        x = gram @ x
    x = x / x.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(gram.real.dtype).tiny)
    rayleigh = (x.mH @ gram @ x)[..., 0, 0].real
    return rayleigh, x[..., 0]


def _gram_upper(gram: torch.Tensor, steps: int, floor: float) -> torch.Tensor:
    """Per-matrix upper bounds on λ_max after Gram iteration; matrices proven below ``floor``
    stop early. Returns the bound of each matrix (λ units)."""
    fro = torch.linalg.matrix_norm(gram).clamp_min(torch.finfo(gram.real.dtype).tiny)
    bound = fro.clone()
    log_scale = torch.log(fro)
    active = torch.nonzero(bound > floor).reshape(-1)
    h = gram[active] / fro[active][:, None, None].to(gram.dtype)
    log_scale = log_scale[active]
    for t in range(1, steps + 1):
        if active.numel() == 0:
            break
        h = h @ h  # Hermitian: H·H = Hᴴ·H
        f = torch.linalg.matrix_norm(h).clamp_min(torch.finfo(gram.real.dtype).tiny)
        h = h / f[:, None, None].to(h.dtype)
        # λ_max(G)^(2^t) <= ‖G^(2^t)‖_F  =  scale^(2^t)·f
        log_scale = log_scale + torch.log(f) / 2**t
        new = torch.minimum(bound[active], torch.exp(log_scale))
        bound[active] = new
        keep = new > floor
        active, h, log_scale = active[keep], h[keep], log_scale[keep]
    return bound


def circular_sigma_max(
    kernel: torch.Tensor,
    grid: tuple[int, ...],
    *,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    rt: Runtime,
    tol: float = 1e-6,
    progress: ProgressCallback | None = None,
) -> CircularNorm:
    """Certified bracket on σ_max of the circular operator on ``grid`` (stride must divide it)."""
    freqs, _ = alias_frequencies(grid, stride, half=True)
    if all(k == 1 for k in kernel.shape[2:]):
        freqs = freqs[:1]  # the same matrix at every frequency (MATH.md §1)
    taps = kernel_taps(kernel)
    shape = tuple(kernel.shape)
    c_out, c_in_g = shape[:2]
    width = c_in_g * math.prod(stride)
    side = min(c_out // groups, width)
    per = (c_out * width + 3 * groups * side * side) * rt.itemsize
    size = chunk_size(rt, per, len(freqs), what="sigma_max")
    margin = rounding_margin(max(c_out // groups, width), rt.real)

    def blocks_of(part: slice) -> torch.Tensor:
        b = frequency_block(taps, shape, freqs[part], grid, stride=stride, dilation=dilation, groups=groups)
        return b.reshape(-1, *b.shape[2:])  # (F·groups, rows, cols)

    parts = list(chunks(len(freqs), size))
    direct = side <= DIRECT_SIZE
    # Keep the Gram matrices between the passes when they fit in half the budget.
    cache: dict[int, torch.Tensor] | None = {} if len(freqs) * per <= rt.max_memory // 2 else None

    def gram_of(i: int) -> torch.Tensor:
        if cache is not None and i in cache:
            return cache[i]
        gram, _ = _gram(blocks_of(parts[i]))
        if cache is not None:
            cache[i] = gram
        return gram

    # Pass 1: power-iteration lower bounds everywhere (cheap); the CANDIDATES frequencies with
    # the best lower bounds get an exact eigensolve, so the pruning floor is nearly the answer.
    best, best_at = -1.0, (0, 0)
    if not direct:
        lows = []
        for i in range(len(parts)):
            low, _ = _power_lower(gram_of(i), POWER_STEPS)
            lows.append(low)
            if progress is not None:
                progress(i + 1, 2 * len(parts), "sigma_max")
        all_low = torch.cat(lows)
        for j in torch.topk(all_low, min(CANDIDATES, all_low.numel())).indices.tolist():
            f, g = divmod(j, groups)
            block = blocks_of(slice(f, f + 1))[g]
            lam = float(torch.linalg.eigvalsh(_gram(block[None])[0][0])[-1])
            if lam > best:
                best, best_at = lam, (f, g)
    floor = best * (1 + tol) ** 2
    # Pass 2: Gram-iteration upper bounds; survivors get a direct eigensolver.
    upper = 0.0
    for i, part in enumerate(parts):
        gram = gram_of(i)
        if direct:
            bound = torch.full(gram.shape[:1], math.inf, dtype=gram.real.dtype, device=gram.device)
        else:
            bound = _gram_upper(gram, GRAM_STEPS, floor)
        open_ = torch.nonzero(bound > floor).reshape(-1)
        if open_.numel():
            lam = torch.linalg.eigvalsh(gram[open_])[..., -1]
            bound[open_] = lam * (1 + margin)
            j = int(lam.argmax())
            if float(lam[j]) > best:
                best, best_at = float(lam[j]), ((part.start * groups + int(open_[j])) // groups, int(open_[j]) % groups)
        upper = max(upper, float(bound.max()))
        if cache is not None:
            cache.pop(i, None)
        if progress is not None:
            progress(len(parts) * (1 - direct) + i + 1, len(parts) * (2 - direct), "sigma_max")
    f_index, group = best_at
    block = blocks_of(slice(f_index, f_index + 1))[group]
    _, s, vh = torch.linalg.svd(block, full_matrices=False)
    lower = max(math.sqrt(max(best, 0.0)) * (1 - margin), float(s[0]) * (1 - margin))
    upper = max(math.sqrt(max(upper, 0.0)) * (1 + margin), lower)
    vector = vh[0].conj().resolve_conj().cpu().numpy()
    value = min(max(float(s[0]), lower), upper)
    return CircularNorm(lower, upper, value, tuple(int(v) for v in freqs[f_index]), group, vector, GRAM_STEPS)
