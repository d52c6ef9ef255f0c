"""The size-independent bound S (torus branch and bound) against an independent truth: a dense
sweep of σ_max(B(ν)) from its definition plus local maximisation (:mod:`sup_oracle`), and the
dense operator matrices of real layers (:mod:`oracle`)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from oracle import dense_singular_values
from sup_oracle import block_sigmas, blocks, sup_sigma

from convaudit.engine.api import operator_norm
from convaudit.engine.conv import Conv
from convaudit.engine.results import EngineOptions
from convaudit.engine.runtime import runtime
from convaudit.engine.sigma import continuous
from convaudit.engine.sigma.cells import Cells, Cover
from convaudit.engine.sigma.gram_lags import evaluate_gram, evaluate_gram_at, lag_gram
from convaudit.engine.sigma.torus import size_independent_bound
from convaudit.engine.spectrum.frequencies import continuous_block, frequency_block

SLACK = 1e-9  # the oracle's optimiser and rounding, relative

RNG = np.random.default_rng(12)


def _low_pass(shape):
    """A smooth, trained-looking kernel: a positive blur per channel pair plus a little noise."""
    ks = shape[2:]
    blur = np.ones(ks)
    for ax, k in enumerate(ks):
        profile = np.array([math.comb(k - 1, i) for i in range(k)], float)
        blur = blur * profile.reshape([-1 if a == ax else 1 for a in range(len(ks))])
    mix = np.abs(RNG.standard_normal(shape[:2]))
    return mix.reshape(*shape[:2], *(1,) * len(ks)) * blur + 0.1 * RNG.standard_normal(shape)


# (name, kernel, stride, dilation, groups)
CASES = [
    ("2d random", RNG.standard_normal((4, 3, 3, 3)), (1, 1), (1, 1), 1),
    ("2d low-pass", _low_pass((3, 3, 3, 3)), (1, 1), (1, 1), 1),
    ("2d strided", RNG.standard_normal((3, 4, 3, 3)), (2, 2), (1, 1), 1),
    ("2d strided input side", RNG.standard_normal((10, 2, 3, 3)), (2, 2), (1, 1), 1),
    ("2d dilated", RNG.standard_normal((3, 3, 3, 3)), (1, 1), (2, 3), 1),
    ("2d grouped", RNG.standard_normal((6, 2, 3, 3)), (1, 1), (1, 1), 3),
    ("2d depthwise", RNG.standard_normal((5, 1, 3, 3)), (1, 2), (1, 1), 5),
    ("2d 2x2 stride 2 (constant)", RNG.standard_normal((3, 3, 2, 2)), (2, 2), (1, 1), 1),
    ("pointwise strided", RNG.standard_normal((4, 3, 1, 1)), (2, 2), (1, 1), 1),
    ("1d k=7 dilated", RNG.standard_normal((3, 2, 7)), (1,), (2,), 1),
    ("1d k=21", RNG.standard_normal((2, 2, 21)), (1,), (1,), 1),
    ("1d strided", RNG.standard_normal((2, 3, 5)), (3,), (1,), 1),
    ("3d (1,5,5)", RNG.standard_normal((2, 2, 1, 5, 5)), (1, 1, 1), (1, 1, 1), 1),
    ("3d strided", RNG.standard_normal((2, 2, 3, 2, 3)), (1, 1, 2), (1, 1, 1), 1),
]


@functools.cache
def _truth(index: int) -> float:
    _, kernel, stride, dilation, groups = CASES[index]
    return sup_sigma(kernel, stride, dilation, groups)


def _conv(kernel, stride, dilation, groups) -> Conv:
    return Conv(torch.as_tensor(kernel), stride, dilation, groups)


@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-6])
@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_bracket_contains_the_supremum_and_closes(index, tol):
    _, kernel, stride, dilation, groups = CASES[index]
    want = _truth(index)
    sup = size_independent_bound(
        _conv(kernel, stride, dilation, groups), runtime(EngineOptions(tol=tol))
    )
    assert sup.lower <= want * (1 + SLACK)
    assert sup.upper >= want * (1 - 1e-12)
    assert sup.closed and sup.upper <= sup.lower * (1 + tol)
    # the maximiser and vector are what they claim: a unit right singular vector of that group's
    # block at that frequency, achieving the lower end
    block = blocks(kernel, np.array(sup.frequency)[None], stride, dilation, groups)[0, sup.group]
    assert len(sup.frequency) == len(stride) and sup.vector.shape == (block.shape[1],)
    assert abs(np.linalg.norm(sup.vector) - 1) <= 1e-12
    assert np.linalg.norm(block @ sup.vector) >= sup.lower * (1 - 1e-12)


def test_budget_path_is_a_valid_looser_bracket_never_labelled_closed():
    kernel = RNG.standard_normal((30, 30, 3, 3))  # the Cholesky path (n > DIRECT_SIZE)
    want = sup_sigma(kernel, (1, 1), (1, 1))
    conv = _conv(kernel, (1, 1), (1, 1), 1)
    rt = runtime(EngineOptions(tol=1e-8))
    full = size_independent_bound(conv, rt)
    for work in (0.0, 1e6, 1e7):
        cut = size_independent_bound(conv, rt, work=work)
        assert cut.lower <= want * (1 + SLACK) and want * (1 - 1e-12) <= cut.upper < math.inf
        assert not cut.closed and cut.upper > cut.lower * (1 + 1e-8)
        assert cut.tests <= full.tests
    assert full.closed and full.upper <= full.lower * (1 + 1e-8)


def test_zero_kernel():
    sup = size_independent_bound(
        _conv(np.zeros((2, 2, 3, 3)), (1, 1), (1, 1), 1), runtime(EngineOptions())
    )
    assert sup.lower == 0 and sup.upper <= 1e-150


def test_unreachable_tolerance_is_not_labelled_closed():
    """Below the rounding floor the search stops at the floor, and says it did not reach tol."""
    sup = size_independent_bound(
        _conv(RNG.standard_normal((8, 8, 3, 3)), (1, 1), (1, 1), 1),
        runtime(EngineOptions(tol=1e-16)),
    )
    assert not sup.closed and sup.upper <= sup.lower * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_cell_lemma(seed):
    """The fact every cell test rests on: within Δ = Σ D·|c - ν*| <= π of a global maximiser,
    λ(c) >= S²·cos²(Δ/2) (checked from the definition, not through the code under test)."""
    rng = np.random.default_rng(seed)
    nd = 1 + seed % 2
    kernel = rng.standard_normal((2, 3, *rng.integers(2, 5, nd)))
    if seed % 3 == 0:
        kernel = np.abs(kernel)  # structured: one dominant frequency
    stride = tuple(int(s) for s in rng.integers(1, 3, nd))
    dilation = tuple(int(d) for d in rng.integers(1, 3, nd))
    sup = size_independent_bound(
        _conv(kernel, stride, dilation, 1), runtime(EngineOptions(tol=1e-12))
    )
    star, s2 = np.array(sup.frequency), sup.lower**2
    degree = np.array(
        [d * (k - 1) // s for k, s, d in zip(kernel.shape[2:], stride, dilation, strict=True)]
    )
    step = rng.standard_normal((400, nd))
    step = (
        step / np.maximum(np.abs(step) @ degree, 1e-300)[:, None] * rng.uniform(0, np.pi, (400, 1))
    )
    spread = np.abs(step) @ degree
    lam = block_sigmas(kernel, star + step, stride, dilation) ** 2
    assert np.all(lam >= s2 * np.cos(spread / 2) ** 2 * (1 - 1e-9))


@pytest.mark.parametrize("degree", [(3,), (2, 2), (1, 4), (2, 1, 3)])
def test_cells_cover_the_domain_within_their_spread(degree):
    """Every point of [0, 2π)^(A-1) × [0, π] is within its cell's spread (the Σ D·|x - c| the
    cell test uses) of some cell's centre, at the start and after random splits."""
    cover = Cover(degree)
    cells = cover.start(1.0, 1, 1.0)
    rng = np.random.default_rng(len(degree))
    for _ in range(4):
        pick = rng.random(len(cells)) < 0.5
        cells = Cells.concat([cells.take(~pick), cover.split(cells.take(pick))])
        points = rng.uniform(0, 1, (300, len(degree))) * cover.extent
        centres = cover.points(cells)
        reach = np.abs(points[:, None, :] - centres[None]) @ np.asarray(degree, float)
        assert np.all((reach <= cover.spread(cells)[None] * (1 + 1e-12)).any(axis=1))


def test_continuous_block_and_gram_at_grid_frequencies_and_derivative():
    kernel = RNG.standard_normal((6, 2, 3, 2))
    conv = _conv(kernel, (2, 1), (1, 2), 2)
    grid = (10, 5)
    m = np.array([[0, 0], [1, 3], [4, 2]])
    nu = 2 * np.pi * m / np.array([5, 5])
    assert torch.allclose(continuous_block(conv, nu), frequency_block(conv, m, grid), atol=1e-12)
    assert np.allclose(continuous_block(conv, nu).numpy(), blocks(kernel, nu, (2, 1), (1, 2), 2))
    lags = lag_gram(conv, grid)
    assert torch.allclose(evaluate_gram_at(lags, nu), evaluate_gram(lags, m), atol=1e-12)
    for ax in range(2):
        h = np.zeros(2)
        h[ax] = 1e-6
        slope = (continuous_block(conv, nu + h) - continuous_block(conv, nu - h)) / 2e-6
        assert torch.allclose(continuous_block(conv, nu, derivative=ax), slope, atol=1e-7)


@pytest.mark.parametrize("transposed", [False, True])
def test_operator_norm_without_size_bounds_every_size(transposed):
    kernel = RNG.standard_normal((3, 2, 3, 3))
    res = operator_norm(kernel, None, padding=1, stride=2, transposed=transposed, tol=1e-4)
    assert res.operator == "any-size" and res.quantity == "upper-bound"
    assert "certified to tol" in res.method and res.upper <= res.lower * (1 + 1e-4)
    for n in (3, 6, 9):
        want = dense_singular_values(
            kernel, (n, n), stride=(2, 2), padding=(1, 1) if transposed else ((1, 1), (1, 1)),
            dilation=(1, 1), transposed=transposed,
        )[0]  # fmt: skip
        assert res.upper >= want * (1 - 1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_large_grid_upper_end_through_s(monkeypatch, stride):
    """Where S is chosen for a grid, the bracket holds σ_circ(grid) (every grid frequency from the
    definition), its lower end is a frequency of the grid, and it closes on a fine grid."""
    monkeypatch.setattr(continuous, "SUP_SHARE", math.inf)  # S is always tried first
    kernel = RNG.standard_normal((3, 2, 3, 3))
    conv = _conv(kernel, (stride,) * 2, (1, 1), 1)
    for alias, tol in ((16, 1e-2), (512, 1e-4)):  # 512: closing is guaranteed (module doc)
        grid = (alias * stride,) * 2
        rt = runtime(EngineOptions(tol=tol))
        norm, factor, used, how = continuous.circular_upper(conv, grid, rt)
        axis = 2 * np.pi * np.arange(alias) / alias
        freqs = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        want = block_sigmas(kernel, freqs, (stride,) * 2, (1, 1)).max()
        assert factor == 1.0 and used == grid
        assert norm.lower <= want * (1 + SLACK) and norm.upper >= want * (1 - 1e-12)
        if norm.continuous is not None:
            assert "nearest" in how and norm.upper <= norm.lower * (1 + tol)
            at = 2 * np.pi * np.array(norm.frequency) / alias
            assert block_sigmas(kernel, at[None], (stride,) * 2, (1, 1))[0] >= norm.lower
    assert norm.continuous is not None  # the fine grid closed through S


def test_circular_layer_on_large_grid_is_bracketed_through_s(monkeypatch):
    monkeypatch.setattr(continuous, "SUP_SHARE", math.inf)
    monkeypatch.setattr(continuous, "GRID_WORK", 1.0)  # the grid certificate is unaffordable
    kernel = RNG.standard_normal((2, 2, 3, 3))
    res = operator_norm(kernel, (24, 24), padding=1, padding_mode="circular", tol=1e-3)
    axis = 2 * np.pi * np.arange(24) / 24
    want = block_sigmas(
        kernel, np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2), (1, 1), (1, 1)
    ).max()
    assert res.lower <= want * (1 + SLACK) <= res.upper * (1 + 2 * SLACK)
    assert "sup over frequencies" in res.method and "nearest" in res.method
    zeros = operator_norm(kernel, (6, 6), padding=1, method="upper-bound", tol=1e-3)
    dense = dense_singular_values(
        kernel, (6, 6), stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1)
    )[0]
    assert zeros.upper >= dense * (1 - 1e-12)
