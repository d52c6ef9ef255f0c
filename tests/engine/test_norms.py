"""σ_max of the REAL operator (zero / reflect / replicate / circular) against dense matrices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import circular_singular_values, dense_singular_values
from strategies import conv_cases, padded_cases

from convaudit.engine.api import operator_norm
from convaudit.engine.sigma import lanczos

TOL = 1e-9  # rounding slack when comparing certified bounds with the dense truth


def truth(kernel, grid, stride, dilation, groups, pads, mode="zeros"):
    return dense_singular_values(
        kernel,
        grid,
        stride=stride,
        padding=pads,
        dilation=dilation,
        groups=groups,
        padding_mode=mode,
    )[0]


def fits(kernel, grid, dilation, pads):
    return all(
        n + b + a >= d * (k - 1) + 1
        for n, (b, a), d, k in zip(grid, pads, dilation, kernel.shape[2:], strict=True)
    )


@settings(max_examples=25, deadline=None)
@given(padded_cases())
def test_zero_padding_exact_sigma_max(case):
    kernel, grid, stride, dilation, groups, pads = case
    if not fits(kernel, grid, dilation, pads):
        return
    want = truth(kernel, grid, stride, dilation, groups, pads)
    res = operator_norm(kernel, grid, stride=stride, padding=pads, dilation=dilation, groups=groups)
    assert res.lower <= want * (1 + TOL)
    assert res.upper >= want * (1 - TOL)
    assert res.exact and res.quantity == "exact"
    assert abs(res.value - want) <= 1e-6 * want


@st.composite
def lanczos_sized_cases(draw):
    """Layers of 60-600 inputs: past the 32-vector Lanczos basis (so it restarts), small
    enough for the dense truth."""
    nd = draw(st.integers(1, 2))
    grid = tuple(draw(st.integers(20, 60) if nd == 1 else st.integers(6, 12)) for _ in range(nd))
    ksize = tuple(draw(st.integers(2, 5)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    pads = tuple(((k - 1) // 2, k // 2) for k in ksize)
    c_in, c_out = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    kernel = np.random.default_rng(seed).standard_normal((c_out, c_in, *ksize))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate"]))
    return kernel, grid, stride, pads, mode


@settings(max_examples=20, deadline=None)
@given(lanczos_sized_cases())
def test_lanczos_path_matches_dense(case):
    """Forced through the Lanczos path (float32 thick restart, float64 check, ARPACK fallback)
    instead of the dense eigensolver: still exact to 1e-6, bracket around the truth."""
    kernel, grid, stride, pads, mode = case
    nd = len(grid)
    want = truth(kernel, grid, stride, (1,) * nd, 1, pads, mode)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lanczos, "DENSE_LIMIT", 0)
        res = operator_norm(kernel, grid, stride=stride, padding=pads, padding_mode=mode)
    assert res.lower <= want * (1 + TOL) <= res.upper * (1 + 2 * TOL)
    assert res.exact
    assert abs(res.value - want) <= 1e-6 * want


@settings(max_examples=25, deadline=None)
@given(padded_cases(), st.sampled_from(["reflect", "replicate"]))
def test_reflect_replicate_exact_and_certified(case, mode):
    kernel, grid, stride, dilation, groups, pads = case
    if not fits(kernel, grid, dilation, pads) or any(
        max(p) >= n for p, n in zip(pads, grid, strict=True)
    ):
        return
    want = truth(kernel, grid, stride, dilation, groups, pads, mode)
    res = operator_norm(
        kernel,
        grid,
        stride=stride,
        padding=pads,
        dilation=dilation,
        groups=groups,
        padding_mode=mode,
    )
    assert res.lower <= want * (1 + TOL) <= res.upper * (1 + 2 * TOL)
    assert res.exact
    assert abs(res.value - want) <= 1e-6 * want


@settings(max_examples=25, deadline=None)
@given(padded_cases())
def test_cheap_upper_bound_is_never_below_truth(case):
    kernel, grid, stride, dilation, groups, pads = case
    if not fits(kernel, grid, dilation, pads):
        return
    want = truth(kernel, grid, stride, dilation, groups, pads)
    res = operator_norm(
        kernel,
        grid,
        stride=stride,
        padding=pads,
        dilation=dilation,
        groups=groups,
        method="upper-bound",
    )
    if kernel.shape[2:] == (1,) * len(grid):  # 1×1: the exact value is as cheap as a bound
        assert res.quantity == "exact" and abs(res.value - want) <= 1e-9 * max(want, 1e-300)
    elif res.quantity == "exact":  # the cheap bracket closed (to the default 1e-6) by itself
        assert res.guarantee in ("certified", "exact") and res.upper <= res.lower * (1 + 1e-6)
    else:
        assert res.guarantee == "bound" and res.value == res.upper
    assert res.lower <= want * (1 + TOL) and res.upper >= want * (1 - TOL)


@settings(max_examples=10, deadline=None)
@given(conv_cases(max_dims=2, strided=True))
def test_size_independent_bound_covers_every_size(case):
    kernel, grid, stride, dilation, groups = case
    res = operator_norm(
        kernel, None, stride=stride, padding="valid", dilation=dilation, groups=groups
    )
    assert res.grid is None and res.operator == "any-size" and not res.exact
    circ = circular_singular_values(kernel, grid, stride=stride, dilation=dilation, groups=groups)[
        0
    ]
    assert res.upper >= circ * (1 - TOL)
    same = tuple(
        (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
        for d, k in zip(dilation, kernel.shape[2:], strict=True)
    )
    if fits(kernel, grid, dilation, same):
        assert res.upper >= truth(kernel, grid, stride, dilation, groups, same) * (1 - TOL)


def test_circular_layer_exact_by_fft_and_dense_outside_exact_geometry():
    kernel = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    res = operator_norm(kernel, (6, 8), stride=2, padding=1, padding_mode="circular")
    want = circular_singular_values(kernel, (6, 8), stride=2, dilation=1)[0]
    assert res.exact and res.lower <= want * (1 + TOL) and res.upper >= want * (1 - TOL)
    assert abs(res.value - want) <= 1e-10 * want
    # pad 2 on a 3x3 kernel: not "same", rows are duplicated -> dense operator, exact
    res = operator_norm(kernel, (5, 5), padding=2, padding_mode="circular")
    assert (
        res.exact
        and abs(res.value - truth(kernel, (5, 5), (1, 1), (1, 1), 1, ((2, 2), (2, 2)), "circular"))
        <= 1e-10 * res.value
    )


def test_circular_on_own_grid_is_not_an_upper_bound_for_zero_padding():
    # MATH.md §2: K = [1, 0, -1] on n = 2: circular operator is 0, zero-padded has norm 1.
    kernel = np.array([[[1.0, 0.0, -1.0]]])
    res = operator_norm(kernel, (2,), padding=1)
    assert abs(res.value - 1.0) <= 1e-9 and res.upper >= 1.0
    assert np.max(circular_singular_values(kernel, (2,), stride=1, dilation=1)) <= 1e-12


def test_transposed_padded_matches_dense():
    kernel = np.random.default_rng(7).standard_normal((3, 2, 3, 3))  # (c_in, c_out/g, k, k)
    for stride, pad, out_pad in [(1, 1, 0), (2, 1, 1), (2, 0, 0), (3, 1, 2)]:
        want = dense_singular_values(
            kernel,
            (4, 5),
            stride=stride,
            padding=(pad, pad),
            dilation=1,
            transposed=True,
            output_padding=out_pad,
        )[0]
        res = operator_norm(
            kernel, (4, 5), stride=stride, padding=pad, transposed=True, output_padding=out_pad
        )
        assert res.lower <= want * (1 + TOL) and res.upper >= want * (1 - TOL)
        assert res.exact and abs(res.value - want) <= 1e-6 * want


def test_padding_specs():
    kernel = np.random.default_rng(8).standard_normal((2, 2, 3, 3))
    a = operator_norm(kernel, (6, 6), padding="same").value
    b = operator_norm(kernel, (6, 6), padding=((1, 1), (1, 1))).value
    c = operator_norm(kernel, (6, 6), padding=(1, 1)).value
    assert a == pytest.approx(b, rel=1e-9) and b == pytest.approx(c, rel=1e-9)
    v = operator_norm(kernel, (6, 6), padding="valid").value
    assert v == pytest.approx(truth(kernel, (6, 6), (1, 1), (1, 1), 1, ((0, 0), (0, 0))), rel=1e-6)


def test_three_d_zero_padding():
    kernel = np.random.default_rng(9).standard_normal((2, 2, 3, 2, 3))
    want = truth(kernel, (4, 3, 4), (1, 1, 2), (1, 1, 1), 1, ((1, 1), (0, 1), (1, 1)))
    res = operator_norm(kernel, (4, 3, 4), stride=(1, 1, 2), padding=((1, 1), (0, 1), (1, 1)))
    assert res.exact and abs(res.value - want) <= 1e-6 * want and res.upper >= want


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    ("grid", "stride", "pads", "groups"),
    [
        ((5, 7), (2, 1), ((1, 2), (2, 0)), 1),
        ((6, 6), (3, 2), ((2, 2), (1, 1)), 2),
        ((9,), (4,), ((3, 1),), 1),
    ],
)
def test_pointwise_exact_for_every_padding_mode(mode, grid, stride, pads, groups):
    """1×1 kernels: σ_max(W) times √(most reads of one input), exact, against dense matrices."""
    kernel = np.random.default_rng(len(grid) + groups).standard_normal(
        (6, 8 // groups) + (1,) * len(grid)
    )
    want = truth(kernel, grid, stride, (1,) * len(grid), groups, pads, mode)
    res = operator_norm(kernel, grid, stride=stride, padding=pads, groups=groups, padding_mode=mode)
    assert res.quantity == "exact"
    assert abs(res.value - want) <= 1e-10 * want
    assert res.lower <= want * (1 + TOL) and res.upper >= want * (1 - TOL)


@settings(max_examples=25, deadline=None)
@given(padded_cases(), st.floats(0.2, 0.9))
def test_sub_grid_is_a_compression_of_the_zero_padded_operator(case, scale):
    """σ_max on a sub-grid (same padding, stride, dilation) never exceeds the full grid's: the
    certified lower bound used when an operator is too large for Lanczos."""
    from convaudit.engine.geometry import forward_geometry
    from convaudit.engine.sigma.padded import sub_geometry

    kernel, grid, stride, dilation, groups, pads = case
    if not fits(kernel, grid, dilation, pads):
        return
    full = forward_geometry(grid, kernel.shape[2:], stride, dilation, pads)
    small = sub_geometry(full, scale)
    if small is None:
        return
    assert all(o <= f for o, f in zip(small.out_size, full.out_size, strict=True))
    small_pads = tuple((t, max(a, 0)) for t, a in zip(full.before, full.after, strict=True))
    want_small = truth(kernel, small.grid, stride, dilation, groups, small_pads)
    assert want_small <= truth(kernel, grid, stride, dilation, groups, pads) * (1 + TOL)


def test_operator_too_large_for_lanczos_gets_a_certified_bracket(monkeypatch):
    from convaudit.engine.sigma import padded as padded_norm

    monkeypatch.setattr(padded_norm, "LANCZOS_MAX_ENTRIES", 100)
    kernel = np.random.default_rng(3).standard_normal((4, 3, 3, 3))
    for grid, stride in (((12, 10), 1), ((12, 12), 2)):
        want = truth(kernel, grid, (stride,) * 2, (1, 1), 1, ((1, 1), (1, 1)))
        res = operator_norm(kernel, grid, stride=stride, padding=1)
        assert res.quantity == "upper-bound" and res.value == res.upper
        assert 0 < res.lower <= want * (1 + TOL) <= res.upper * (1 + 2 * TOL)
        assert "sub-grid" in res.method or "windowed" in res.method


def _sigma_at(kernel, nu, stride, dilation):
    """σ_max of the alias block B(ν) at a continuous frequency ν (per axis, radians on the alias
    grid), straight from the definition (MATH.md §1): B = s^(-1/2)·[K̂((ν + 2πl)/s)]_l."""
    nd = kernel.ndim - 2
    cols = []
    for ls in np.ndindex(*stride):
        xi = [(nu[ax] + 2 * np.pi * ls[ax]) / stride[ax] for ax in range(nd)]
        khat = np.zeros(kernel.shape[:2], dtype=complex)
        for taps in np.ndindex(*kernel.shape[2:]):
            phase = sum(xi[ax] * taps[ax] * dilation[ax] for ax in range(nd))
            khat += kernel[(slice(None), slice(None), *taps)] * np.exp(-1j * phase)
        cols.append(khat)
    return np.linalg.svd(np.hstack(cols) / np.sqrt(np.prod(stride)), compute_uv=False)[0]


@pytest.mark.parametrize("mode", ["zeros", "circular"])
@pytest.mark.parametrize("stride", [1, 2])
def test_huge_grids_are_bounded_through_s(monkeypatch, mode, stride):
    """Past GRID_WORK a grid's circular norm is bounded through S (the torus-cell search); the
    bracket still holds the truth (circular: the paper's numpy formula on every frequency of
    the grid; zeros: the dense operator), and its lower end is a frequency of the grid."""
    from convaudit.engine.sigma import continuous

    monkeypatch.setattr(continuous, "GRID_WORK", 1.0)
    monkeypatch.setattr(continuous, "SUP_SHARE", np.inf)
    grid = (40, 40)
    kernel = np.random.default_rng(5).standard_normal(
        (2, 1, 3, 3) if mode == "zeros" else (4, 3, 3, 3)
    )
    if mode == "zeros":
        want = truth(kernel, grid, (stride,) * 2, (1, 1), 1, ((1, 1), (1, 1)))
    else:
        m = 40 // stride
        want = max(
            _sigma_at(kernel, 2 * np.pi * np.array(f) / m, (stride,) * 2, (1, 1))
            for f in np.ndindex(m, m)
        )
    res = operator_norm(kernel, grid, stride=stride, padding=1, padding_mode=mode)
    assert res.lower <= want * (1 + TOL) <= res.upper * (1 + 2 * TOL)
    assert "sup over frequencies" in res.method
    if mode == "circular":
        assert "nearest" in res.method and res.upper <= want * 1.021
