"""σ_max to the precision asked for: every bracket holds the dense truth, and no result is
labelled tighter than it is (certified: the bracket is within (1 + tol)² and its geometric
midpoint, the value, within tol of the truth; converged / exact: the value is within tol of the
truth), for every geometry the engine supports, at several tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import dense_singular_values

from convaudit.engine.api import operator_norm
from convaudit.engine.results import EngineOptions, midpoint, pins
from convaudit.engine.sigma import lanczos

SLACK = 1e-9  # rounding slack against the dense SVD


def truth(kernel, grid, *, stride, pads, dilation=1, groups=1, mode="zeros", **kw):
    return dense_singular_values(
        kernel, grid, stride=stride, padding=pads, dilation=dilation, groups=groups,
        padding_mode=mode, **kw,
    )[0]  # fmt: skip


def assert_honest(res, want, tol):
    """The bracket holds the truth, and the label claims no more than holds."""
    assert res.lower <= want * (1 + SLACK), (res, want)
    assert res.upper >= want * (1 - SLACK), (res, want)
    assert res.tol == tol or res.guarantee == "exact"
    if res.guarantee == "exact":
        assert abs(res.value - want) <= 1e-8 * want
    elif res.guarantee == "certified":
        assert res.upper <= res.lower * (1 + tol) ** 2
        assert res.value == pytest.approx((res.lower * res.upper) ** 0.5, rel=1e-15)
        assert abs(res.value - want) <= tol * want * (1 + SLACK)
    elif res.guarantee == "converged":
        assert abs(res.value - want) <= tol * want * (1 + SLACK)
    else:
        assert res.guarantee == "bound" and res.value == res.upper and not res.exact
    assert res.exact == (res.guarantee != "bound")
    assert res.quantity == ("exact" if res.exact else "upper-bound")


@st.composite
def geometries(draw):
    """A padded conv layer of every supported kind on a grid large enough that the certified
    bracket can close (1-D up to 160 entries, 2-D up to 20x20), small enough for dense truth."""
    nd = draw(st.sampled_from([1, 1, 2, 2, 3]))
    kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    groups = {"plain": 1, "grouped": 2, "depthwise": draw(st.integers(2, 4))}[kind]
    ci_g = 1 if kind == "depthwise" else draw(st.integers(1, 2))
    co_g = 1 if kind == "depthwise" else draw(st.integers(1, 2))
    cap = {1: 160, 2: 20, 3: 6}[nd] // max(1, ci_g * groups // 2)
    grid, ksize, stride, dilation, pads = [], [], [], [], []
    for _ in range(nd):
        n = draw(st.integers(4, max(4, cap)))
        k = draw(st.integers(1, 3))
        d = draw(st.sampled_from([1, 1, 2, 3]))
        s = draw(st.sampled_from([1, 1, 2]))
        reach = d * (k - 1)
        before = draw(st.integers(0, reach))
        after = draw(st.integers(0, reach))
        grid.append(n), ksize.append(k), dilation.append(d), stride.append(s)
        pads.append((min(before, n - 1), min(after, n - 1)))
    seed = draw(st.integers(0, 2**31 - 1))
    kernel = np.random.default_rng(seed).standard_normal((co_g * groups, ci_g, *ksize))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate"]))
    return kernel, tuple(grid), tuple(stride), tuple(dilation), groups, tuple(pads), mode


@settings(max_examples=40, deadline=None)
@given(geometries(), st.sampled_from([1e-2, 1e-4, 1e-6]), st.booleans())
def test_every_bracket_holds_the_dense_truth(case, tol, force_lanczos):
    kernel, grid, stride, dilation, groups, pads, mode = case
    if mode != "zeros" and any(max(p) >= n for p, n in zip(pads, grid, strict=True)):
        mode = "zeros"  # reflect needs pads under the input size
    try:
        want = truth(
            kernel, grid, stride=stride, pads=pads, dilation=dilation, groups=groups, mode=mode
        )
    except RuntimeError:  # the kernel does not fit the padded input: not a layer
        return
    with pytest.MonkeyPatch.context() as mp:
        if force_lanczos:
            mp.setattr(lanczos, "DENSE_LIMIT", 0)
        res = operator_norm(
            kernel, grid, stride=stride, padding=pads, dilation=dilation, groups=groups,
            padding_mode=mode, tol=tol,
        )  # fmt: skip
    assert_honest(res, want, tol)


@pytest.mark.parametrize("tol", [1e-3, 1e-4, 1e-6])
@pytest.mark.parametrize(
    ("shape", "grid", "stride", "pads", "out_pad"),
    [
        ((3, 2, 3, 3), (9, 11), 1, 1, 0),
        ((2, 3, 4, 4), (6, 7), 2, 1, 0),
        ((2, 2, 3), (40,), 3, 1, 2),
    ],
)
def test_transposed_brackets(tol, shape, grid, stride, pads, out_pad):
    kernel = np.random.default_rng(sum(shape)).standard_normal(shape)  # (c_in, c_out/g, *k)
    nd = len(grid)
    want = dense_singular_values(
        kernel, grid, stride=stride, padding=(pads,) * nd, dilation=1, transposed=True,
        output_padding=out_pad,
    )[0]  # fmt: skip
    res = operator_norm(
        kernel, grid, stride=stride, padding=pads, transposed=True, output_padding=out_pad, tol=tol
    )
    assert_honest(res, want, tol)


@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_large_grids_are_certified_by_the_bracket_alone(tol):
    """On a long 1-D grid the circular bound is within O((k/n)^2) of the truth and the windowed
    packet as close from below: at 1e-4 the bracket closes without Lanczos."""
    kernel = np.random.default_rng(4).standard_normal((2, 2, 3))
    want = truth(kernel, (600,), stride=1, pads=((1, 1),))
    res = operator_norm(kernel, (600,), padding=1, tol=tol)
    assert_honest(res, want, tol)
    if tol == 1e-4:
        assert res.guarantee == "certified" and "windowed wave packet (2 products)" in res.method


@pytest.mark.parametrize("ranked_in_float32", [False, True])
def test_the_windowed_packet_is_a_tight_lower_bound(ranked_in_float32, monkeypatch):
    """The lower end before any Lanczos: ‖Ax‖ for the windowed packet, below the truth and
    within 2e-4 of it on a 40x40 grid (the plain plane wave is ~1e-2 off). Large operators
    rank the candidates in float32 and measure the chosen one in float64: as certified."""
    from convaudit.engine.conv import Conv, LayerOperator
    from convaudit.engine.geometry import forward_geometry
    from convaudit.engine.runtime import runtime
    from convaudit.engine.sigma import window
    from convaudit.engine.sigma.continuous import circular_upper
    from convaudit.engine.sigma.padded import _cheap_lower, bound_grid

    if ranked_in_float32:
        monkeypatch.setattr(window, "RANK_IN_FLOAT32", 1)

    kernel = np.random.default_rng(11).standard_normal((1, 1, 3, 3))
    grid = (40, 40)
    want = truth(kernel, grid, stride=1, pads=((1, 1), (1, 1)))
    conv = Conv(torch.as_tensor(kernel), (1, 1), (1, 1), 1)
    op = LayerOperator(conv, forward_geometry(grid, (3, 3), (1, 1), (1, 1), ((1, 1),) * 2), "zeros")
    rt = runtime(EngineOptions(tol=1e-3))  # a tol at which the packet can close the bracket
    big, _ = bound_grid(op.geometry, "zeros")
    circ, _, used, _ = circular_upper(conv, big, rt)
    lower, x, products = _cheap_lower(op, circ, used, rt)
    # the packet's real and imaginary parts (and the chosen one again in float64)
    assert products == (3 if ranked_in_float32 else 2)
    assert x is not None and abs(float(x.norm()) - 1) < 1e-12
    assert lower <= want * (1 + SLACK)
    assert lower >= want * (1 - 2e-4)


@pytest.mark.parametrize("limit_factor", [0.9, 0.999, 1.001, 1.1])
def test_a_gate_limit_stops_refinement_once_decided(limit_factor):
    """With a limit, the bracket is refined only until it lies on one side of the limit (or is
    within tol); either way it holds the truth and decides the limit correctly."""
    from convaudit.engine.conv import Conv, LayerOperator
    from convaudit.engine.geometry import forward_geometry
    from convaudit.engine.runtime import runtime
    from convaudit.engine.sigma.methods import conv_norm

    kernel = np.random.default_rng(5).standard_normal((3, 2, 3, 3))
    grid = (14, 14)
    want = truth(kernel, grid, stride=1, pads=((1, 1), (1, 1)))
    conv = Conv(torch.as_tensor(kernel), (1, 1), (1, 1), 1)
    op = LayerOperator(conv, forward_geometry(grid, (3, 3), (1, 1), (1, 1), ((1, 1),) * 2), "zeros")
    limit = want * limit_factor
    res = conv_norm(op, "exact", runtime(EngineOptions(tol=1e-6, limit=limit)))
    assert res.lower <= want * (1 + SLACK) <= res.upper * (1 + 2 * SLACK)
    decided = res.upper <= limit or res.lower > limit
    assert decided or res.exact
    # the gate compares the reported value: it must land on the truth's side of the limit
    if decided:
        assert (res.value > limit) == (want > limit)


def test_no_limit_refinement_for_an_unlimited_layer():
    """limit = inf: the cheap bracket, labelled as what it is, no Lanczos."""
    from convaudit.engine.conv import Conv, LayerOperator
    from convaudit.engine.geometry import forward_geometry
    from convaudit.engine.runtime import runtime
    from convaudit.engine.sigma.methods import conv_norm

    kernel = np.random.default_rng(6).standard_normal((3, 2, 3, 3))
    grid = (12, 12)
    want = truth(kernel, grid, stride=1, pads=((1, 1), (1, 1)))
    conv = Conv(torch.as_tensor(kernel), (1, 1), (1, 1), 1)
    op = LayerOperator(conv, forward_geometry(grid, (3, 3), (1, 1), (1, 1), ((1, 1),) * 2), "zeros")
    res = conv_norm(op, "exact", runtime(EngineOptions(tol=1e-4, limit=float("inf"))))
    assert res.iterations <= 3 and res.lower <= want * (1 + SLACK) <= res.upper
    assert_honest(res, want, 1e-4)


def test_depthwise_long_sequence_is_solved_per_group():
    """A depthwise Conv1d: 24 independent 1-D problems; every bracket holds the largest group's
    dense truth, and most groups are settled by their brackets."""
    rng = np.random.default_rng(8)
    groups, n = 12, 200
    kernel = rng.standard_normal((groups, 1, 3))
    pads = ((2, 2),)
    per_group = [
        truth(kernel[g : g + 1], (n,), stride=1, pads=pads, dilation=2) for g in range(groups)
    ]
    want = max(per_group)
    for tol in (1e-4, 1e-6):
        res = operator_norm(kernel, (n,), padding=pads, dilation=2, groups=groups, tol=tol)
        assert "per group" in res.method
        assert_honest(res, want, tol)


def test_thick_restart_runs_independent_problems_side_by_side():
    """Batched: each problem converges to its own top eigenpair, and one that converges early
    keeps its vectors while the others go on."""
    rng = np.random.default_rng(3)
    n, batch = 600, 3
    spectra = np.stack([rng.uniform(0, 0.9, n) for _ in range(batch)])
    spectra[0, 5] = 1.0  # an isolated top: converges fast
    spectra[1, 7], spectra[1, 8] = 2.0, 2.0 - 1e-3
    spectra[2, 1] = 0.95
    diag = torch.from_numpy(spectra)

    def gram(x):
        return diag.reshape(batch, n) * x.reshape(batch, n)

    v0 = torch.from_numpy(rng.standard_normal((batch, n)))
    ritz, count, converged, stopped, _ = lanczos._thick_restart(
        gram, torch.Size([1, n]), v0, tol=1e-10, max_products=3000
    )
    assert bool(converged.all()) and not bool(stopped.any())
    for b in range(batch):
        y = ritz[b, 0] / ritz[b, 0].norm()
        assert abs(float(y @ gram(torch.stack([y] * batch))[b]) - spectra[b].max()) <= 1e-8
    assert bool((count >= 2).all())


def test_thick_restart_stops_at_the_level_asked_for():
    rng = np.random.default_rng(4)
    n = 2000
    spectrum = np.concatenate([1 - 1e-5 * np.arange(20), rng.uniform(0, 0.99, n - 20)])
    diag = torch.from_numpy(spectrum)
    level = torch.tensor([0.98])
    ritz, _, converged, stopped, products = lanczos._thick_restart(
        lambda x: diag * x, torch.Size([1, n]), torch.ones(1, n, dtype=torch.float64),
        tol=1e-12, max_products=3000, stop_theta=level,
    )  # fmt: skip
    assert bool(stopped[0]) and not bool(converged[0])
    y = ritz[0, 0] / ritz[0, 0].norm()
    assert float(y @ (diag * y)) >= 0.98 * (1 - 1e-12) and products < 100


@given(
    st.floats(1e-6, 1e6),
    st.sampled_from([1e-2, 1e-4, 1e-6]),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_a_pinned_bracket_puts_its_midpoint_within_tol_of_any_value_in_it(lower, tol, a, b):
    """The analytic rule behind 'certified': upper <= lower·(1 + tol)² leaves √(lower·upper)
    within tol (relative) of every σ in [lower, upper]."""
    upper = lower * (1 + tol) ** (2 * a)
    sigma = lower * (upper / lower) ** b
    assert pins(lower, upper, tol)
    assert abs(midpoint(lower, upper) - sigma) <= tol * sigma * (1 + 1e-12)
    assert not pins(lower, lower * (1 + tol) ** 2 * (1 + 1e-9), tol)


def test_the_window_is_built_only_where_it_can_close_the_bracket_cheaply():
    """Many channels on a small grid (512 at 7x7): the packet's channel eigenproblems cost more
    than 10 products and the bracket stays wide anyway; 64 channels at 56x56 and tol 1e-4: it
    pays; the same at 1e-6, or at 28x28, cannot close the bracket."""
    from convaudit.engine.conv import Conv, LayerOperator
    from convaudit.engine.geometry import forward_geometry
    from convaudit.engine.sigma.padded import window_pays

    def layer(channels, n):
        conv = Conv(torch.zeros(channels, channels, 3, 3, dtype=torch.float64), (1, 1), (1, 1), 1)
        geometry = forward_geometry((n, n), (3, 3), (1, 1), (1, 1), ((1, 1),) * 2)
        return LayerOperator(conv, geometry, "zeros")

    assert not window_pays(layer(512, 7), 1e-4)
    assert window_pays(layer(64, 56), 1e-4) and window_pays(layer(64, 256), 1e-4)
    # a grid too coarse for the bracket to close at tol: the packet would only seed Lanczos
    assert not window_pays(layer(64, 56), 1e-6) and not window_pays(layer(64, 28), 1e-4)


def test_a_layer_without_the_window_keeps_an_honest_bracket(monkeypatch):
    """Lanczos from its seeded random vector alone (no packet): the bracket still holds the
    dense truth and is labelled no tighter than it is."""
    from convaudit.engine.sigma import padded

    monkeypatch.setattr(padded, "window_pays", lambda op, tol: False)
    kernel = np.random.default_rng(8).standard_normal((3, 2, 3, 3))
    want = truth(kernel, (24, 24), stride=1, pads=((1, 1), (1, 1)))
    for tol in (1e-4, 1e-6):
        res = operator_norm(kernel, (24, 24), padding=1, tol=tol)
        assert_honest(res, want, tol)
        assert "windowed" not in res.method
