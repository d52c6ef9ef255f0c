"""Hypothesis strategies for small random conv layers (dense oracle stays cheap)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def conv_cases(draw, *, max_dims: int = 3, strided: bool = True, max_cells: int = 64):
    """(kernel, grid, stride, dilation, groups): stride divides grid; kernels may exceed it."""
    nd = draw(st.integers(1, max_dims))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    co_g = draw(st.integers(1, 3))
    ci_g = draw(st.integers(1, 3))
    grid, stride, dilation, ksize = [], [], [], []
    cap = {1: 12, 2: 6, 3: 3}[nd]
    for _ in range(nd):
        s = draw(st.integers(1, 3)) if strided else 1
        m = draw(st.integers(1, max(1, cap // s)))
        grid.append(m * s)
        stride.append(s)
        dilation.append(draw(st.integers(1, 3)))
        ksize.append(draw(st.integers(1, 4)))
    cells = int(np.prod(grid))
    if cells * ci_g * groups > max_cells * 3:
        groups = 1
    seed = draw(st.integers(0, 2**31 - 1))
    kernel = np.random.default_rng(seed).standard_normal((co_g * groups, ci_g, *ksize))
    return kernel, tuple(grid), tuple(stride), tuple(dilation), groups


@st.composite
def padded_cases(draw, *, max_dims: int = 2):
    """(kernel, grid, stride, dilation, groups, pads) for padded (non-circular) operators."""
    nd = draw(st.integers(1, max_dims))
    groups = draw(st.sampled_from([1, 1, 2]))
    co_g = draw(st.integers(1, 3))
    ci_g = draw(st.integers(1, 3))
    grid, stride, dilation, ksize, pads = [], [], [], [], []
    for _ in range(nd):
        n = draw(st.integers(2, 9 if nd == 1 else 6))
        k = draw(st.integers(1, 4))
        d = draw(st.integers(1, 2))
        grid.append(n)
        ksize.append(k)
        dilation.append(d)
        stride.append(draw(st.integers(1, 3)))
        reach = d * (k - 1)
        before = draw(st.integers(0, min(reach, n - 1)))
        after = draw(st.integers(0, min(reach, n - 1)))
        if n + before + after < reach + 1:  # kernel must fit the padded input
            after = min(n - 1, reach + 1 - n - before) if reach + 1 - n - before <= n - 1 else after
            if n + before + after < reach + 1:
                ksize[-1] = 1
        pads.append((before, after))
    seed = draw(st.integers(0, 2**31 - 1))
    kernel = np.random.default_rng(seed).standard_normal((co_g * groups, ci_g, *ksize))
    return kernel, tuple(grid), tuple(stride), tuple(dilation), groups, tuple(pads)
