"""σ_max of near-degenerate operators: the top of a close pair, never the second (dense truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import dense_singular_values

import convaudit
from convaudit.engine.api import operator_norm
from convaudit.engine.sigma import lanczos

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


@pytest.fixture(params=["dense", "arpack"])
def path(request, monkeypatch):
    if request.param == "arpack":
        monkeypatch.setattr(lanczos, "DENSE_LIMIT", 0)
    return request.param


def test_signal_1d_first_conv_is_the_top_of_its_near_degenerate_pair(path):
    """Regression: the circular warm start used to converge on σ₂ = 1.6073793 (σ₁ = 1.6074050)."""
    ir = convaudit.load(SAMPLES / "signal_1d.onnx")
    layer = next(lay for lay in ir.layers if lay.name == "/conv1/Conv")
    kernel = np.asarray(layer.kernel, dtype=np.float64)
    dense = dense_singular_values(
        kernel, (64,), stride=(1,), padding=((2, 2),), dilation=(1,), groups=1
    )
    assert dense[0] - dense[1] < 1e-4 * dense[0]  # the trap is still there
    res = operator_norm(kernel, (64,), padding=((2, 2),))
    assert res.exact
    assert abs(res.value - dense[0]) <= 1e-7 * dense[0]
    assert res.lower <= dense[0] * (1 + 1e-12) and res.upper >= dense[0] * (1 - 1e-12)


@settings(max_examples=15, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.floats(1e-9, 1e-4),
    st.sampled_from([1100, 1500]),
)
def test_matrix_with_a_close_top_pair_started_on_the_second(seed, gap, n):
    """Analytic truth σ₁ = 1, σ₂ = 1 - gap; the warm start is exactly σ₂'s right vector."""
    rng = np.random.default_rng(seed)
    # Lanczos is invariant under orthogonal changes of basis: a permuted diagonal suffices.
    perm = rng.permutation(n)
    s = np.empty(n)
    s[perm] = np.concatenate([[1.0, 1.0 - gap], rng.uniform(0, 0.99, n - 2)])
    diag = torch.from_numpy(s)

    def apply(x):
        return diag * x

    def gram(x):
        return diag * diag * x

    start = torch.zeros(1, n, dtype=torch.float64)
    start[0, perm[1]] = 1.0
    res = lanczos.lanczos_sigma_max(apply, gram, start)
    assert res.converged
    assert abs(res.sigma - 1.0) <= 1e-6
    assert res.lower <= 1.0 + 1e-12


@pytest.mark.parametrize("dense_limit", [lanczos.DENSE_LIMIT, 0])
@settings(max_examples=8, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.floats(-1e-4, 1e-4),
    st.sampled_from(["zeros", "reflect"]),
)
def test_two_groups_with_almost_equal_norms(dense_limit, seed, scale, mode):
    """Block-diagonal conv (groups=2) whose blocks differ by a factor 1 + scale: two almost
    equal top values from different frequencies/channels; σ_max is the larger block's."""
    rng = np.random.default_rng(seed)
    half = rng.standard_normal((3, 2, 5))
    kernel = np.concatenate([half, (1 + scale) * half[:, :, ::-1]])
    grid, pads = (40,), ((2, 2),)
    want = dense_singular_values(
        kernel, grid, stride=(1,), padding=pads, dilation=(1,), groups=2, padding_mode=mode
    )[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lanczos, "DENSE_LIMIT", dense_limit)
        res = operator_norm(kernel, grid, padding=pads, groups=2, padding_mode=mode)
    assert res.exact
    assert abs(res.value - want) <= 1e-6 * want
    assert res.lower <= want * (1 + 1e-12)


def _diagonal(values: np.ndarray):
    diag = torch.from_numpy(values)
    return (lambda x: diag * x), (lambda x: diag * diag * x)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1500, 4000]))
def test_thick_restart_finds_the_top_after_many_restarts(seed, n):
    """A dense top of the spectrum (top gaps ~1e-4) needs several restarts of the 32-vector
    basis; the top Ritz values must match the analytic ones, the best first."""
    rng = np.random.default_rng(seed)
    s = np.concatenate([1 - 1e-4 * np.arange(8), rng.uniform(0, 0.999, n - 8)])
    _, gram = _diagonal(rng.permutation(s))
    v0 = torch.from_numpy(rng.standard_normal(n))
    vectors, count, converged, stopped, products = lanczos._thick_restart(
        gram, torch.Size([1, n]), v0[None], tol=1e-9, max_products=5000
    )
    assert bool(converged[0]) and not bool(stopped[0]) and products > lanczos.RESTART_BASIS
    vectors = vectors[0, : int(count[0])]
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    ritz = ((vectors * gram(vectors)).sum(1)).numpy()
    assert np.all(np.diff(ritz) <= 1e-12)  # best first
    assert abs(ritz[0] - 1.0) <= 1e-8
    assert abs(ritz[1] - (1 - 1e-4) ** 2) <= 1e-8


@pytest.mark.parametrize("n", [5, 40, 2000])
def test_thick_restart_on_an_invariant_subspace(n):
    """A rank-3 operator (and the whole space when n is small): Lanczos breaks down early and
    its Ritz values are then exact."""
    values = np.zeros(n)
    values[[0, n // 2, n - 1]] = [2.0, 3.0, 0.5]
    apply, gram = _diagonal(values)
    start = torch.ones(1, n, dtype=torch.float64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lanczos, "DENSE_LIMIT", 0)
        res = lanczos.lanczos_sigma_max(apply, gram, start, tol=1e-10)
    assert res.converged
    assert abs(res.sigma - 3.0) <= 1e-9
    assert res.products <= 12


def test_an_unfinished_float32_phase_is_finished_by_arpack_in_float64(monkeypatch):
    """The float32 run only proposes a vector: when it and the polish leave the float64
    residual above the acceptance level, ARPACK runs in float64 and must converge on the top."""
    rng = np.random.default_rng(7)
    n = 3000
    s = rng.uniform(0, 0.9, n)
    s[10], s[20] = 1.0, 1.0 - 1e-3
    apply, gram = _diagonal(s)
    s32 = torch.from_numpy(s**2).float()
    monkeypatch.setattr(lanczos, "FAST_TOL", 1e-2)  # a loose float32 run ...
    monkeypatch.setattr(lanczos, "POLISH_PRODUCTS", 0)  # ... and no polish
    calls = []
    arpack = lanczos._arpack
    monkeypatch.setattr(lanczos, "_arpack", lambda *a, **k: calls.append(1) or arpack(*a, **k))
    start = torch.from_numpy(rng.standard_normal((1, n)))
    res = lanczos.lanczos_sigma_max(apply, gram, start, fast_gram=lambda x: s32 * x)
    assert calls == [1]
    assert res.converged
    assert abs(res.sigma - 1.0) <= 1e-6
    assert res.lower <= 1.0 + 1e-12


def test_the_acceptance_check_with_the_adjoint_gives_the_same_answer():
    """With ``adjoint`` the float64 check forms AᵀAy as Aᵀ(Ay) from the one image (two products,
    not three): same σ_max (numpy's SVD of a rectangular A), same residual up to rounding."""
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.standard_normal((1300, 1200)))
    want = float(np.linalg.svd(a.numpy(), compute_uv=False)[0])

    def apply(x):
        return x @ a.T

    def adjoint(y):
        return y @ a

    def gram(x):
        return adjoint(apply(x))

    start = torch.zeros(1, 1200, dtype=torch.float64)
    plain = lanczos.lanczos_sigma_max(apply, gram, start, tol=1e-8)
    both = lanczos.lanczos_sigma_max(apply, gram, start, tol=1e-8, adjoint=adjoint)
    assert plain.converged and both.converged
    assert abs(both.sigma - want) <= 1e-8 * want and abs(plain.sigma - want) <= 1e-8 * want
    assert both.residual == pytest.approx(plain.residual, rel=1e-6, abs=1e-13)


@pytest.mark.parametrize("tol", [1e-4, lanczos.POLISH_BELOW])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_unpolished_float32_run_to_tol_passes_the_float64_acceptance(monkeypatch, tol, seed):
    """Where no float64 polish follows, the float32 run stops at tol itself: its vector still
    passes the float64 acceptance (residual <= 2·tol) without the ARPACK fallback, and the
    value is within tol of the dense truth (2048 inputs: the Lanczos path)."""

    def no_fallback(*args, **kwargs):
        raise AssertionError("the float64 acceptance failed: ARPACK ran")

    monkeypatch.setattr(lanczos, "_arpack", no_fallback)
    kernel = np.random.default_rng(seed).standard_normal((8, 8, 3, 3)) / 8
    res = operator_norm(kernel, (16, 16), padding=1, tol=tol)
    dense = dense_singular_values(
        kernel, (16, 16), stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1
    )
    assert res.iterations > 0 and res.guarantee in ("converged", "certified")
    assert abs(res.value - dense[0]) <= tol * dense[0]
    assert res.lower <= dense[0] * (1 + 1e-12) and res.upper >= dense[0] * (1 - 1e-12)
