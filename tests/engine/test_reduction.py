"""Exact reductions of a layer's operator (1-tap axes, dilation classes) against dense matrices:
the smaller operator must have exactly the σ_max of the layer's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import dense_singular_values

from convaudit.engine.conv import Conv, LayerOperator
from convaudit.engine.geometry import forward_geometry
from convaudit.engine.sigma.reduction import equivalent_operator


def _operator(kernel, grid, stride, dilation, pads, mode="zeros"):
    nd = len(grid)
    conv = Conv(torch.as_tensor(kernel), stride, dilation, 1)
    geometry = forward_geometry(grid, kernel.shape[2:], stride, dilation, pads)
    assert nd == conv.nd
    return LayerOperator(conv, geometry, mode)


def _dense_sigma(op: LayerOperator) -> float:
    """σ_max of an engine operator from the dense matrix of torch's own conv (pads from its
    geometry: before, and after as far as the taps read)."""
    g = op.geometry
    pads = tuple((t, max(a, 0)) for t, a in zip(g.before, g.after, strict=True))
    crop = tuple(n + min(a, 0) for n, a in zip(g.grid, g.after, strict=True))
    kernel = op.conv.kernel.numpy()
    full = dense_singular_values(
        kernel, crop, stride=g.stride, padding=pads, dilation=g.dilation, padding_mode=op.mode
    )
    return float(full[0]) if full.size else 0.0


@settings(max_examples=40, deadline=None)
@given(
    st.integers(6, 40),
    st.integers(2, 4),
    st.integers(2, 5),
    st.integers(0, 6),
    st.integers(0, 6),
    st.integers(0, 2**31 - 1),
)
def test_dilation_classes_keep_sigma_max(n, k, d, before, after, seed):
    """1-D, zero padding, any pads: the dominant residue-class block has the layer's σ_max."""
    reach = d * (k - 1)
    before, after = min(before, reach), min(after, reach)
    if n + before + after < reach + 1:
        return
    kernel = np.random.default_rng(seed).standard_normal((2, 2, k))
    op = _operator(kernel, (n,), (1,), (d,), ((before, after),))
    want = dense_singular_values(kernel, (n,), stride=1, padding=((before, after),), dilation=d)[0]
    reduced = equivalent_operator(op)
    if reduced is None:  # no class contains the others: nothing is claimed
        return
    small, what = reduced
    assert small.conv.dilation == (1,) and "dilation" in what
    assert small.grid[0] <= -(-n // d)
    assert _dense_sigma(small) == pytest.approx(want, rel=1e-10)


def test_same_padding_dilation_always_reduces():
    kernel = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    op = _operator(kernel, (17, 16), (1, 1), (2, 4), ((2, 2), (4, 4)))
    small, _ = equivalent_operator(op)
    assert small.grid == (9, 4) and small.conv.dilation == (1, 1)
    want = dense_singular_values(
        kernel, (17, 16), stride=1, padding=((2, 2), (4, 4)), dilation=(2, 4)
    )
    assert _dense_sigma(small) == pytest.approx(want[0], rel=1e-10)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
def test_one_tap_axes_drop(mode):
    """A Conv3d (1, 3, 3) on 5 slices: I ⊗ A', its 2-D conv (1-tap axis, no pad along it)."""
    kernel = np.random.default_rng(2).standard_normal((2, 3, 1, 3, 3))
    pads = ((0, 0), (1, 1), (1, 1))
    op = _operator(kernel, (5, 7, 6), (1, 1, 1), (1, 1, 1), pads, mode)
    small, what = equivalent_operator(op)
    assert small.conv.nd == 2 and "1-tap" in what
    want = dense_singular_values(
        kernel, (5, 7, 6), stride=1, padding=pads, dilation=1, padding_mode=mode
    )[0]
    assert _dense_sigma(small) == pytest.approx(want, rel=1e-10)


def test_a_padded_one_tap_axis_is_kept_unless_zeros():
    """Replicate padding along a 1-tap axis copies slices: not I ⊗ A', so no reduction."""
    kernel = np.random.default_rng(3).standard_normal((2, 2, 1, 3))
    op = _operator(kernel, (4, 6), (1, 1), (1, 1), ((1, 0), (1, 1)), "replicate")
    assert equivalent_operator(op) is None
    zeros = _operator(kernel, (4, 6), (1, 1), (1, 1), ((1, 0), (1, 1)), "zeros")
    small, _ = equivalent_operator(zeros)
    want = dense_singular_values(kernel, (4, 6), stride=1, padding=((1, 0), (1, 1)), dilation=1)[0]
    assert _dense_sigma(small) == pytest.approx(want, rel=1e-10)
