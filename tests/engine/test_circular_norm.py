"""The fast σ_max path (lag Gram matrices, power candidates, Cholesky certificate) against
dense truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from oracle import circular_singular_values
from strategies import conv_cases

from convaudit.engine.conv import Conv
from convaudit.engine.results import EngineOptions
from convaudit.engine.runtime import runtime
from convaudit.engine.sigma import circular as circular_norm
from convaudit.engine.sigma import gram_lags
from convaudit.engine.sigma.circular import _certify_below, _lanczos_top, circular_sigma_max
from convaudit.engine.sigma.gram_lags import evaluate_gram, lag_gram, phase_sum
from convaudit.engine.spectrum.frequencies import alias_frequencies, frequency_block

RT = runtime(EngineOptions())


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_bracket_contains_truth_and_closes(case):
    kernel, grid, stride, dilation, groups = case
    want = circular_singular_values(kernel, grid, stride=stride, dilation=dilation, groups=groups)[
        0
    ]
    res = circular_sigma_max(Conv(torch.as_tensor(kernel), stride, dilation, groups), grid, RT)
    assert res.lower <= want * (1 + 1e-12)
    assert res.upper >= want * (1 - 1e-12)
    assert res.upper <= res.lower * (1 + 1e-6) + 1e-300


def test_cholesky_certificate_and_power_lower_bound():
    rng = np.random.default_rng(0)
    m = torch.as_tensor(rng.standard_normal((20, 6, 6)) + 1j * rng.standard_normal((20, 6, 6)))
    gram = m.mH @ m
    lam = torch.linalg.eigvalsh(gram)[:, -1]
    for factor in (0.5, 0.99, 0.999999, 1.000001, 1.01, 2.0):
        proven = _certify_below(gram, float(lam.max()) * factor)
        # never certifies a matrix whose λ_max is above μ; certifies every one well below it
        assert not torch.any(proven & (lam > lam.max() * factor))
        assert torch.all(proven[lam < lam.max() * factor * (1 - 1e-9)])
    for steps in range(1, 8):
        low = _lanczos_top(gram, steps)
        assert torch.all(low <= lam * (1 + 1e-12))
    assert torch.allclose(_lanczos_top(gram, 6), lam, rtol=1e-10)  # 6 steps span C^6: exact
    # low rank: the Krylov space ends early (beta = 0); no NaN, no value above λ_max
    vecs = m[:, :, :1]
    rank_one = vecs @ vecs.mH
    top = _lanczos_top(rank_one, 6)
    assert torch.all(torch.isfinite(top))
    assert torch.allclose(top, torch.linalg.eigvalsh(rank_one)[:, -1], rtol=1e-10)


def test_float32_bracket():
    kernel = np.random.default_rng(1).standard_normal((8, 8, 3, 3))
    want = circular_singular_values(kernel, (8, 8), stride=1, dilation=1)[0]
    rt32 = runtime(EngineOptions(dtype="float32", tol=1e-5))
    conv = Conv(torch.as_tensor(kernel, dtype=torch.float32), (1, 1), (1, 1), 1)
    res = circular_sigma_max(conv, (8, 8), rt32)
    assert res.lower <= want * (1 + 1e-6) and res.upper >= want * (1 - 1e-6)
    assert abs(res.value - want) <= 1e-6 * want  # MATH.md §5: float32 σ_max to ~1e-7


@settings(max_examples=30, deadline=None)
@given(case=conv_cases())
def test_certified_path_without_direct_solves(monkeypatch_module, case):
    """Every frequency through power candidates + Cholesky certificate (no direct shortcut)."""
    kernel, grid, stride, dilation, groups = case
    want = circular_singular_values(kernel, grid, stride=stride, dilation=dilation, groups=groups)[
        0
    ]
    res = circular_sigma_max(Conv(torch.as_tensor(kernel), stride, dilation, groups), grid, RT)
    assert res.lower <= want * (1 + 1e-12)
    assert res.upper >= want * (1 - 1e-12)
    assert res.upper <= res.lower * (1 + 1e-6) + 1e-300
    assert abs(res.value - want) <= 1e-9 * want + 1e-300


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.setattr(circular_norm, "DIRECT_SIZE", 0)
    yield mp
    mp.undo()


@settings(max_examples=25, deadline=None)
@given(conv_cases())
def test_lag_gram_eigenvalues_are_the_squared_spectrum(case):
    """The Gram matrices evaluated from the kernel's autocorrelation carry exactly the squared
    singular values of the dense circular operator (every frequency, multiplicity included)."""
    kernel, grid, stride, dilation, groups = case
    c_out, c_in_g = kernel.shape[:2]
    if c_out // groups > c_in_g * int(np.prod(stride)) and any(s > 1 for s in stride):
        return  # no lag form on the input side of a strided layer (the blocks path does it)
    lags = lag_gram(Conv(torch.as_tensor(kernel), stride, dilation, groups), grid)
    freqs, _ = alias_frequencies(grid, stride, half=False)
    gram = evaluate_gram(lags, freqs)
    assert torch.allclose(gram, gram.mH, atol=1e-12)
    got = np.sort(np.linalg.eigvalsh(gram.numpy()).reshape(-1))[::-1]
    want = circular_singular_values(kernel, grid, stride=stride, dilation=dilation, groups=groups)
    want = np.sort(want)[::-1] ** 2  # compared squared: the Gram matrix squares the spectrum
    assert np.max(np.abs(got[: want.size] - want)) <= 1e-10 * max(float(want[0]), 1e-300)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block", [1 << 17, 600])  # one column block; many, with a ragged end
def test_phase_sum_is_the_complex_combination(monkeypatch, dtype, block):
    """Σ_l exp(iθ)[f, l]·H[l], written block by block in place, equals the plain complex
    product (numpy's complex matmul on exp(iθ), a different route to the same sum)."""
    monkeypatch.setattr(gram_lags, "PHASE_BLOCK", block)
    rng = np.random.default_rng(3)
    flat = rng.standard_normal((7, 2 * 1000 + 37)).astype(dtype)
    angle = rng.uniform(-7, 7, (5, 7))
    got = phase_sum(np.cos(angle), np.sin(angle), torch.from_numpy(flat)).numpy()
    want = np.exp(1j * angle) @ flat.astype(np.float64)
    assert got.dtype == (np.complex128 if dtype == np.float64 else np.complex64)
    scale = np.abs(flat).sum(0).max()
    assert np.abs(got - want).max() <= (1e-13 if dtype == np.float64 else 1e-5) * scale


@pytest.mark.parametrize(
    ("c_out", "c_in", "k", "stride", "dilation", "groups", "grid"),
    [
        (32, 32, 3, 1, 1, 1, 6),
        (32, 16, 3, 2, 1, 1, 8),  # output side, strided lags
        (16, 32, 3, 2, 2, 2, 8),  # groups + dilation
        (40, 8, 3, 2, 1, 1, 6),  # input side of a strided layer: per-frequency blocks
        (48, 24, 1, 2, 1, 1, 6),  # strided 1×1: σ(W)
        (24, 48, 1, 1, 1, 3, 5),  # grouped 1×1
        (30, 30, 5, 1, 1, 1, 3),  # kernel larger than the grid
    ],
)
def test_wider_layers_against_dense(c_out, c_in, k, stride, dilation, groups, grid):
    kernel = np.random.default_rng(c_out + 7 * k).standard_normal((c_out, c_in // groups, k, k))
    want = circular_singular_values(
        kernel, (grid, grid), stride=(stride,) * 2, dilation=(dilation,) * 2, groups=groups
    )[0]
    conv = Conv(torch.as_tensor(kernel), (stride,) * 2, (dilation,) * 2, groups)
    res = circular_sigma_max(conv, (grid, grid), RT)
    assert res.lower <= want * (1 + 1e-12) <= res.upper * (1 + 2e-12)
    assert res.upper <= res.lower * (1 + 1e-6)
    assert abs(res.value - want) <= 1e-10 * want
    # the returned vector is a unit right singular vector of the reported frequency's block
    block = frequency_block(conv, np.array([res.frequency]), (grid, grid))[0, res.group]
    v = torch.as_tensor(res.vector)
    assert abs(float(v.norm()) - 1) <= 1e-12
    assert abs(float((block @ v).norm()) - want) <= 1e-10 * want
