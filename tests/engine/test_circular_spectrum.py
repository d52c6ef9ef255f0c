"""Full circular spectra against the dense operator matrix (tests/oracle.py), float64 to 1e-10."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from oracle import circular_singular_values, dense_singular_values
from strategies import conv_cases

from convaudit.engine.api import singular_values
from convaudit.engine.spectrum.routes import route_svdvals
from convaudit.errors import UnsupportedLayerError


def assert_same_spectrum(got: np.ndarray, want: np.ndarray, rel: float = 1e-10) -> None:
    want = np.sort(want)[::-1]
    assert got.shape == want.shape
    assert np.all(np.diff(got) <= 0), "not sorted descending"
    scale = max(float(want[0]), 1e-300)
    assert np.max(np.abs(got - want)) <= rel * scale


@settings(max_examples=40, deadline=None)
@given(conv_cases())
def test_full_spectrum_matches_dense_operator(case):
    kernel, grid, stride, dilation, groups = case
    got = singular_values(kernel, grid, stride=stride, dilation=dilation, groups=groups)
    want = circular_singular_values(kernel, grid, stride=stride, dilation=dilation, groups=groups)
    assert_same_spectrum(got, want)


@settings(max_examples=25, deadline=None)
@given(conv_cases(max_dims=2))
def test_transposed_has_the_forward_spectrum(case):
    kernel, grid, stride, dilation, groups = case
    # The transposed conv on the alias grid is the adjoint of the forward conv on `grid`.
    alias = tuple(n // s for n, s in zip(grid, stride, strict=True))
    got = singular_values(
        kernel, alias, stride=stride, dilation=dilation, groups=groups, transposed=True
    )
    want = circular_singular_values(kernel, grid, stride=stride, dilation=dilation, groups=groups)
    assert_same_spectrum(got, want)


def test_depthwise_with_multiplier():
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((6, 1, 3, 3))  # 3 channels x multiplier 2
    got = singular_values(kernel, (5, 6), groups=3)
    assert_same_spectrum(
        got, circular_singular_values(kernel, (5, 6), stride=1, dilation=1, groups=3)
    )


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_dilation_coprime_and_not(dilation):
    kernel = np.random.default_rng(dilation).standard_normal((2, 3, 3, 3))
    got = singular_values(kernel, (6, 6), dilation=dilation)
    assert_same_spectrum(got, circular_singular_values(kernel, (6, 6), stride=1, dilation=dilation))


def test_kernel_larger_than_grid():
    # The paper's fft2(K, s=grid) crops this kernel (54 % error, MATH.md §1); we must not.
    kernel = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    got = singular_values(kernel, (3, 3))
    assert_same_spectrum(got, circular_singular_values(kernel, (3, 3), stride=1, dilation=1))


def test_stride_not_dividing_grid_uses_dense_operator():
    kernel = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    got = singular_values(kernel, (7, 5), stride=2)
    want = dense_singular_values(
        kernel,
        (7, 5),
        stride=(2, 2),
        padding=((1, 1), (1, 1)),
        dilation=(1, 1),
        padding_mode="circular",
    )
    assert_same_spectrum(got, want)


def test_stride_not_dividing_a_large_grid_is_refused():
    kernel = np.ones((64, 64, 3, 3))
    with pytest.raises(UnsupportedLayerError, match="too large"):
        singular_values(kernel, (33, 33), stride=2)


def test_analytic_dirac_scaled_and_orthogonal():
    dirac = np.zeros((4, 4, 3, 3))
    for c in range(4):
        dirac[c, c, 1, 1] = 1.0
    np.testing.assert_allclose(singular_values(dirac, (5, 4)), np.ones(80), atol=1e-14)
    kernel = np.random.default_rng(0).standard_normal((3, 3, 3, 3))
    np.testing.assert_allclose(
        singular_values(2.5 * kernel, (4, 4)), 2.5 * singular_values(kernel, (4, 4)), rtol=1e-12
    )
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 5)))
    np.testing.assert_allclose(
        singular_values(q[:, :, None, None], (6, 7)), np.ones(5 * 42), atol=1e-13
    )


def test_float32_precision_as_math_states():
    kernel = np.random.default_rng(4).standard_normal((8, 6, 3, 3))
    exact = singular_values(kernel, (8, 8))
    single = singular_values(kernel.astype(np.float32), (8, 8), dtype="float32")
    # MATH.md §5: every value to ~2e-7·σ_max absolute in float32.
    assert np.max(np.abs(single - exact)) <= 2e-6 * exact[0]
    assert abs(single[0] - exact[0]) <= 1e-6 * exact[0]


def test_accepts_torch_tensors_and_1d_3d():
    import torch

    k1 = torch.randn(2, 3, 3, dtype=torch.float64)
    assert_same_spectrum(
        singular_values(k1, (8,)), circular_singular_values(k1.numpy(), (8,), stride=1, dilation=1)
    )
    k3 = np.random.default_rng(5).standard_normal((2, 2, 2, 3, 2))
    assert_same_spectrum(
        singular_values(k3, (3, 4, 2), stride=(1, 2, 1)),
        circular_singular_values(k3, (3, 4, 2), stride=(1, 2, 1), dilation=1),
    )


@pytest.mark.parametrize(
    ("shape", "grid", "stride", "groups"),
    [
        ((3, 2, 1, 3, 3), (4, 6, 5), (1, 1, 1), 1),  # a Conv3d (1, 3, 3): its 2-D spectrum
        ((4, 1, 1, 2, 1), (3, 6, 2), (1, 2, 1), 2),  # two 1-tap axes, one strided axis, groups
        ((2, 3, 1, 3), (5, 6), (2, 1), 1),  # a 1-tap axis under stride 2 is not reduced
    ],
)
def test_one_tap_axes_spectrum_against_the_dense_operator(shape, grid, stride, groups):
    """Axes with a 1-tap kernel and stride 1 are computed once and repeated: the values and
    multiplicities must still be those of the whole operator."""
    kernel = np.random.default_rng(8).standard_normal(shape)
    want = circular_singular_values(kernel, grid, stride=stride, dilation=1, groups=groups)
    assert_same_spectrum(singular_values(kernel, grid, stride=stride, groups=groups), want)


def test_progress_callback_and_memory_budget():
    kernel = np.random.default_rng(6).standard_normal((4, 4, 3, 3))
    seen = []
    small = singular_values(
        kernel, (16, 16), max_memory=4096 * 16, progress=lambda d, t, w: seen.append((d, t))
    )
    assert seen and seen[-1][0] == seen[-1][1] and seen[-1][1] > 1
    assert_same_spectrum(small, singular_values(kernel, (16, 16)), rel=1e-13)


def test_bad_input_is_a_convaudit_error():
    with pytest.raises(UnsupportedLayerError, match="NaN"):
        singular_values(np.full((2, 2, 3, 3), np.nan), (4, 4))
    with pytest.raises(UnsupportedLayerError):
        singular_values(np.ones((2, 3)), (4, 4))
    with pytest.raises(UnsupportedLayerError, match="groups"):
        singular_values(np.ones((3, 1, 3, 3)), (4, 4), groups=2)


@pytest.mark.parametrize(
    "shape", [(6, 5, 9), (3, 12, 4), (2, 8, 8), (1, 1, 7), (4, 16, 48)], ids=str
)
@pytest.mark.parametrize("complex_", [False, True])
def test_cuda_route_singular_values_match_lapack(shape, complex_):
    # CUDA computes σ as the eigenvalues of [[0, A], [Aᴴ, 0]]; the route runs on any device,
    # so it is checked here against LAPACK's SVD, rank deficiency and zero blocks included.
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if complex_ else 0)
    a[0, :, : shape[2] // 2] = a[0, :, shape[2] // 2 : 2 * (shape[2] // 2)]  # rank-deficient
    a[-1] *= 1e-9
    if shape[0] > 2:
        a[1] = 0
    got = route_svdvals(torch.from_numpy(a), route="doubled").numpy()
    want = np.linalg.svd(a, compute_uv=False)
    assert got.shape == want.shape
    assert np.all(np.diff(got, axis=-1) <= 0)
    scale = want.max(axis=-1, keepdims=True)
    assert np.all(np.abs(got - want) <= 1e-13 * np.maximum(scale, 1e-300) + 1e-300)
