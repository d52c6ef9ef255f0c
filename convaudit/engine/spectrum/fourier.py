"""Fourier primitives shared by the spectrum and projection engines (MATH.md §1, §3).

All functions work on torch tensors so that the same code runs on CPU and CUDA.

Shapes: a kernel is ``(c_out, c_in/groups, *k)``; a grid is the forward conv's input spatial
size ``N``; with stride ``s`` (s | N per axis) the alias grid is ``M = N / s``. Frequency
matrices come out as ``(*M', groups, c_out/groups, (c_in/groups)·prod(s))`` where ``M'`` is
``M`` or, with ``half=True``, ``M`` with its last axis cut to ``M[-1]//2 + 1`` (Hermitian
symmetry; see :func:`half_multiplicity`).
"""

from __future__ import annotations

import math

import torch


def check_exact_geometry(grid: tuple[int, ...], stride: tuple[int, ...]) -> None:
    """The FFT formulas are exact iff every stride divides its grid axis (MATH.md §1)."""
    for n, s in zip(grid, stride, strict=True):
        if n < 1 or s < 1 or n % s:
            raise ValueError(f"stride {stride} does not divide grid {grid}")


def torus_kernel(
    kernel: torch.Tensor, grid: tuple[int, ...], dilation: tuple[int, ...]
) -> torch.Tensor:
    """Fold the kernel onto the torus: tap a goes to cell (a·d) mod N, colliding taps SUM.

    Handles dilation and kernels larger than the grid (np.fft.fft2(K, s=...) would crop them).
    Returns ``(c_out, c_in/groups, *grid)``.
    """
    nd = len(grid)
    ksize = kernel.shape[2:]
    out = kernel.new_zeros(*kernel.shape[:2], *grid)
    if all((k - 1) * d < n for k, d, n in zip(ksize, dilation, grid, strict=True)):
        # No collisions: a strided slice assignment.
        steps = tuple(slice(0, (k - 1) * d + 1, d) for k, d in zip(ksize, dilation, strict=True))
        index = (slice(None), slice(None), *steps)
        out[index] = kernel
        return out
    flat = out.reshape(*kernel.shape[:2], -1)
    cells = torch.zeros(1, dtype=torch.long, device=kernel.device)
    for ax in range(nd):
        taps = (torch.arange(ksize[ax], device=kernel.device) * dilation[ax]) % grid[ax]
        cells = cells[:, None] * grid[ax] + taps[None, :]
        cells = cells.reshape(-1)
    flat.index_add_(2, cells, kernel.reshape(*kernel.shape[:2], -1))
    return flat.reshape(out.shape)


def torus_to_kernel(
    torus: torch.Tensor, kernel_size: tuple[int, ...], dilation: tuple[int, ...]
) -> torch.Tensor:
    """Read the kernel's taps back from the torus (the inverse of :func:`torus_kernel` when no
    taps collide; the truncation step of the projection)."""
    grid = torus.shape[2:]
    index: list[torch.Tensor | slice] = [slice(None), slice(None)]
    for ax, (k, d) in enumerate(zip(kernel_size, dilation, strict=True)):
        taps = (torch.arange(k, device=torus.device) * d) % grid[ax]
        shape = [1] * len(kernel_size)
        shape[ax] = k
        index.append(taps.reshape(shape))
    return torus[tuple(index)]


def spatial_fft(torus: torch.Tensor, *, half: bool) -> torch.Tensor:
    """Unnormalised DFT over the spatial axes (norm="backward", MATH.md §0)."""
    dims = tuple(range(2, torus.ndim))
    if half:
        return torch.fft.rfftn(torus, dim=dims)
    return torch.fft.fftn(torus, dim=dims)


def frequency_matrices(
    kernel: torch.Tensor,
    grid: tuple[int, ...],
    *,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    half: bool = True,
) -> torch.Tensor:
    """The block-diagonal of the circular conv operator: one matrix per (alias) frequency.

    Returns complex ``(*M', groups, c_out/g, (c_in/g)·prod(s))``; the union of their singular
    values (with :func:`half_multiplicity` weights when ``half``) is the operator's spectrum.
    """
    check_exact_geometry(grid, stride)
    nd = len(grid)
    c_out, c_in_g = kernel.shape[:2]
    if c_out % groups:
        raise ValueError(f"c_out={c_out} is not divisible by groups={groups}")
    torus = torus_kernel(kernel, grid, dilation)
    strided = any(s > 1 for s in stride)
    khat = spatial_fft(torus, half=half and not strided)  # (c_out, c_in_g, *F)
    co_g = c_out // groups
    if not strided:
        # (c_out, c_in_g, *F) -> (*F, groups, co_g, c_in_g)
        khat = khat.reshape(groups, co_g, c_in_g, *khat.shape[2:])
        return khat.permute(*range(3, 3 + nd), 0, 1, 2)
    alias = alias_grid(grid, stride)
    # Axis n = l·M + m: split each spatial axis into (l, m).
    split = [c_out, c_in_g]
    for s, m in zip(stride, alias, strict=True):
        split += [s, m]
    khat = khat.reshape(groups, co_g, *split[1:])
    # dims now: 0 groups, 1 co_g, 2 c_in_g, then (l_ax, m_ax) pairs at 3+2ax, 4+2ax.
    m_dims = [4 + 2 * ax for ax in range(nd)]
    l_dims = [3 + 2 * ax for ax in range(nd)]
    blocks = khat.permute(*m_dims, 0, 1, 2, *l_dims)
    blocks = blocks.reshape(*alias, groups, co_g, c_in_g * math.prod(stride))
    blocks = blocks / math.sqrt(math.prod(stride))
    if half:
        blocks = blocks[..., : alias[-1] // 2 + 1, :, :, :]
    return blocks


def blocks_to_torus(
    blocks: torch.Tensor,
    grid: tuple[int, ...],
    *,
    stride: tuple[int, ...],
    c_in_g: int,
    half: bool,
) -> torch.Tensor:
    """Inverse of :func:`frequency_matrices` followed by the inverse DFT: a real torus kernel.

    ``half`` must match how ``blocks`` were produced. With stride, blocks must be full
    (``half=False``): the alias blocks mix frequencies from both halves.
    """
    nd = len(grid)
    strided = any(s > 1 for s in stride)
    if strided and half:
        raise ValueError("strided blocks must be full (half=False) to invert")
    groups, co_g = blocks.shape[nd], blocks.shape[nd + 1]
    c_out = groups * co_g
    dims = tuple(range(2, 2 + nd))
    if not strided:
        khat = blocks.permute(nd, nd + 1, nd + 2, *range(nd)).reshape(
            c_out, c_in_g, *blocks.shape[:nd]
        )
        if half:
            return torch.fft.irfftn(khat, s=grid, dim=dims)
        return torch.fft.ifftn(khat, dim=dims).real
    alias = alias_grid(grid, stride)
    b = blocks * math.sqrt(math.prod(stride))
    b = b.reshape(*alias, groups, co_g, c_in_g, *stride)
    # dims: m_ax at ax, groups nd, co_g nd+1, c_in_g nd+2, l_ax at nd+3+ax -> (c_out, c_in_g, l0, m0, l1, m1, ...)
    order = [nd, nd + 1, nd + 2]
    for ax in range(nd):
        order += [nd + 3 + ax, ax]
    khat = b.permute(*order).reshape(c_out, c_in_g, *grid)
    return torch.fft.ifftn(khat, dim=dims).real


def alias_grid(grid: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n // s for n, s in zip(grid, stride, strict=True))


def half_multiplicity(last_axis: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Weights for the kept rfft columns 0..L//2: column 0 and (L even) L/2 count once,
    the others twice (their conjugate partners were dropped)."""
    kept = last_axis // 2 + 1
    w = torch.full((kept,), 2, dtype=torch.long, device=device)
    w[0] = 1
    if last_axis % 2 == 0:
        w[-1] = 1
    return w
