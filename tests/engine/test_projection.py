"""Projection onto {‖conv‖₂ ≤ c}, checked against dense operator matrices (tests/oracle.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from oracle import dense_matrix, dense_singular_values

from convaudit.engine.projection.kernel import ProjectionOptions
from convaudit.engine.projection.layer import certified_sigma, project_layer, projection_target
from convaudit.ir import BatchNormParams, ConvLayer

RTOL = 1e-9  # float64 agreement between the FFT certificate and the dense SVD


@dataclass(frozen=True)
class Case:
    """One geometry: the ConvLayer and the same layer as the oracle runs it with torch."""

    id: str
    shape: tuple[int, ...]  # stored kernel shape
    input_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    groups: int = 1
    padding_mode: str = "zeros"
    transposed: bool = False
    output_padding: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def layer(self, kernel: np.ndarray, bn: BatchNormParams | None = None) -> ConvLayer:
        return ConvLayer(
            name=self.id,
            kernel=kernel,
            stride=self.stride,
            dilation=self.dilation,
            padding=self.padding,
            groups=self.groups,
            padding_mode=self.padding_mode,  # type: ignore[arg-type]
            transposed=self.transposed,
            output_padding=self.output_padding,
            input_size=self.input_size,
            bn=bn,
        )

    def dense_sigma(self, kernel: np.ndarray) -> float:
        return float(dense_singular_values(kernel, self.input_size, **self.geometry())[0])

    def geometry(self) -> dict[str, Any]:
        pad: Any = self.padding
        if self.transposed:
            pad = tuple(before for before, _ in self.padding)
        return dict(
            stride=self.stride,
            padding=pad,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
            transposed=self.transposed,
            output_padding=self.output_padding or 0,
        )


CASES = [
    Case("same-3x3", (4, 3, 3, 3), (6, 6), (1, 1), (1, 1), ((1, 1), (1, 1))),
    Case("valid-3x3", (4, 3, 3, 3), (6, 6), (1, 1), (1, 1), ((0, 0), (0, 0))),
    Case("stride-2", (4, 3, 3, 3), (8, 8), (2, 2), (1, 1), ((1, 1), (1, 1))),
    Case("stride-2-odd-input", (3, 2, 3, 3), (7, 7), (2, 2), (1, 1), ((1, 1), (1, 1))),
    Case("dilation-2", (3, 3, 3, 3), (7, 7), (1, 1), (2, 2), ((2, 2), (2, 2))),
    Case("groups-2", (4, 2, 3, 3), (6, 6), (1, 1), (1, 1), ((1, 1), (1, 1)), groups=2),
    Case("depthwise", (4, 1, 3, 3), (6, 6), (1, 1), (1, 1), ((1, 1), (1, 1)), groups=4),
    Case("depthwise-stride-2", (3, 1, 5, 5), (8, 8), (2, 2), (1, 1), ((2, 2), (2, 2)), groups=3),
    Case(
        "transposed-stride-2",
        (3, 2, 3, 3),
        (4, 4),
        (2, 2),
        (1, 1),
        ((1, 1), (1, 1)),
        transposed=True,
        output_padding=(1, 1),
    ),
    Case(
        "transposed-2x2-s2", (4, 2, 2, 2), (3, 3), (2, 2), (1, 1), ((0, 0), (0, 0)), transposed=True
    ),
    Case("rectangular", (3, 2, 3, 5), (5, 8), (1, 2), (1, 1), ((1, 1), (2, 2))),
    Case("asymmetric-pad", (3, 2, 3, 3), (6, 6), (1, 1), (1, 1), ((0, 2), (2, 0))),
    Case("kernel-larger-than-input", (2, 2, 5, 5), (3, 3), (1, 1), (1, 1), ((2, 2), (2, 2))),
    Case("1d", (4, 3, 5), (12,), (1,), (1,), ((2, 2),)),
    Case("1d-stride-dilation", (3, 3, 3), (12,), (2,), (2,), ((2, 2),)),
    Case("3d", (3, 2, 3, 3, 3), (4, 4, 4), (1, 1, 1), (1, 1, 1), ((1, 1),) * 3),
    Case(
        "circular", (4, 3, 3, 3), (6, 6), (1, 1), (1, 1), ((1, 1), (1, 1)), padding_mode="circular"
    ),
    Case(
        "circular-stride-2",
        (3, 3, 3, 3),
        (6, 6),
        (2, 2),
        (1, 1),
        ((1, 1), (1, 1)),
        padding_mode="circular",
    ),
    # 5 taps on a 3-cell torus: taps collide, the truncation shares each cell's change.
    Case(
        "circular-kernel-larger-than-grid",
        (2, 2, 5, 5),
        (3, 3),
        (1, 1),
        (1, 1),
        ((2, 2), (2, 2)),
        padding_mode="circular",
    ),
    Case("circular-1d-dilated", (3, 2, 3), (8,), (1,), (2,), ((2, 2),), padding_mode="circular"),
    Case("reflect", (3, 2, 3, 3), (6, 6), (1, 1), (1, 1), ((1, 1), (1, 1)), padding_mode="reflect"),
    Case(
        "replicate",
        (3, 2, 3, 3),
        (6, 6),
        (1, 1),
        (1, 1),
        ((1, 1), (1, 1)),
        padding_mode="replicate",
    ),
]


def kernel_for(case: Case, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(case.shape)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_projection_lands_in_the_ball_of_the_real_operator(case: Case) -> None:
    k0 = kernel_for(case)
    sigma0 = case.dense_sigma(k0)
    bound = 0.5 * sigma0
    layer = case.layer(k0)
    results = {
        m: project_layer(layer, bound, ProjectionOptions(method=m))
        for m in ("alternating", "rescale")
    }
    for method, res in results.items():
        dense = case.dense_sigma(res.kernel)
        assert dense <= bound * (1 + RTOL), (method, dense / bound)
        assert res.kernel.shape == k0.shape and res.kernel.dtype == k0.dtype
        assert not res.stats.unchanged
        # The certificate never under-states the dense truth.
        assert res.sigma_after >= dense * (1 - RTOL)
        assert res.sigma_before >= sigma0 * (1 - RTOL)
    alternating, rescale = results["alternating"], results["rescale"]
    assert alternating.stats.converged and alternating.stats.fallback == ""
    assert distance(alternating.kernel, k0) <= distance(rescale.kernel, k0) * (1 + 1e-12)
    assert alternating.stats.relative_change == pytest.approx(distance(alternating.kernel, k0))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_layer_inside_the_ball_is_returned_unchanged(case: Case) -> None:
    k0 = kernel_for(case, seed=1).astype(np.float32)
    layer = case.layer(k0)
    bound = 1.01 * certified_sigma(layer)
    assert case.dense_sigma(k0) <= bound
    for method in ("alternating", "dykstra", "rescale"):
        res = project_layer(layer, bound, ProjectionOptions(method=method))
        assert res.stats.unchanged and res.stats.iterations == 0
        assert res.kernel is k0
        assert res.kernel.tobytes() == kernel_for(case, seed=1).astype(np.float32).tobytes()


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.padding_mode == "zeros"], ids=lambda c: c.id
)
def test_certificate_grid_bounds_the_zero_padded_operator(case: Case) -> None:
    """The grid of MATH.md §2 is large enough: circular σ there ≥ dense zero-padded σ,
    for kernels built to make the zero-padded norm large."""
    for seed in range(3):
        k = kernel_for(case, seed) + 1.0  # a big DC component stresses the borders
        layer = case.layer(k)
        assert certified_sigma(layer) >= case.dense_sigma(k) * (1 - RTOL)
        assert projection_target(layer).operator == "zeros"


def one_shot_clip(kernel: np.ndarray, grid: tuple[int, int], bound: float) -> np.ndarray:
    """The paper's clip-then-truncate, written here with numpy (stride 1, no dilation)."""
    kh, kw = kernel.shape[2:]
    khat = np.fft.fft2(kernel, s=grid, axes=(2, 3)).transpose(2, 3, 0, 1)
    u, s, vh = np.linalg.svd(khat, full_matrices=False)
    clipped = (u * np.minimum(s, bound)[..., None, :]) @ vh
    torus = np.fft.ifft2(clipped.transpose(2, 3, 0, 1), axes=(2, 3)).real
    return torus[:, :, :kh, :kw]


def test_one_shot_clip_is_not_feasible_but_alternating_is() -> None:
    """Regression guard for the trap of MATH.md §3: one clip + truncate lands above the bound."""
    case = Case(
        "circular", (4, 4, 3, 3), (8, 8), (1, 1), (1, 1), ((1, 1), (1, 1)), padding_mode="circular"
    )
    k0 = kernel_for(case, seed=3)
    sigma0 = case.dense_sigma(k0)
    for fraction, least_excess in ((0.5, 1.10), (0.1, 1.3)):
        bound = fraction * sigma0
        one_shot = case.dense_sigma(one_shot_clip(k0, (8, 8), bound))
        assert one_shot > least_excess * bound
        capped = project_layer(case.layer(k0), bound, ProjectionOptions(max_iter=1))
        assert not capped.stats.converged and capped.stats.final_scale < 1 / least_excess
        res = project_layer(case.layer(k0), bound)
        assert res.stats.converged and res.stats.iterations > 1
        assert case.dense_sigma(res.kernel) <= bound * (1 + RTOL)


def test_dykstra_is_feasible_and_near_the_nearest_point() -> None:
    case = CASES[0]
    k0 = kernel_for(case, seed=4)
    bound = 0.6 * case.dense_sigma(k0)
    layer = case.layer(k0)
    dykstra = project_layer(layer, bound, ProjectionOptions(method="dykstra"))
    alternating = project_layer(layer, bound)
    rescale = project_layer(layer, bound, ProjectionOptions(method="rescale"))
    assert case.dense_sigma(dykstra.kernel) <= bound * (1 + RTOL)
    assert distance(dykstra.kernel, k0) <= distance(alternating.kernel, k0) * 1.01
    assert distance(dykstra.kernel, k0) < distance(rescale.kernel, k0)


@pytest.mark.parametrize("case", [CASES[0], CASES[8]], ids=lambda c: c.id)
def test_fold_bn_bounds_the_composite_and_keeps_zero_scale_channels(case: Case) -> None:
    k0 = kernel_for(case, seed=5)
    c_out = case.layer(k0).out_channels
    rng = np.random.default_rng(6)
    gamma = rng.uniform(0.5, 3.0, c_out) * rng.choice([-1, 1], c_out)
    gamma[1] = 0.0
    bn = BatchNormParams(
        gamma=gamma,
        beta=np.zeros(c_out),
        mean=rng.standard_normal(c_out),
        var=rng.uniform(0.1, 2, c_out),
        eps=1e-5,
    )
    layer = case.layer(k0, bn)
    composite0 = np.linalg.svd(
        np.diag(np.repeat(bn.scale, np.prod(case.layer(k0).output_size())))
        @ dense_matrix(k0, case.input_size, **case.geometry()),
        compute_uv=False,
    )[0]
    bound = 0.5 * composite0
    res = project_layer(layer, bound, fold_bn=True)
    assert res.bn_folded
    n_out = int(np.prod(layer.output_size()))
    dense = dense_matrix(res.kernel, case.input_size, **case.geometry())
    composite = np.linalg.svd(np.diag(np.repeat(bn.scale, n_out)) @ dense, compute_uv=False)[0]
    assert composite <= bound * (1 + RTOL)
    # Channel 1 has a zero BN scale: it never reaches the output and is left as it was.
    if case.transposed:
        np.testing.assert_array_equal(res.kernel[:, 1], k0[:, 1])
    else:
        np.testing.assert_array_equal(res.kernel[1], k0[1])


def test_float32_kernel_is_inside_the_ball_as_stored() -> None:
    case = CASES[2]
    k0 = kernel_for(case, seed=7).astype(np.float32)
    bound = 0.3 * case.dense_sigma(k0)
    for method in ("alternating", "rescale"):
        res = project_layer(case.layer(k0), bound, ProjectionOptions(method=method))
        assert res.kernel.dtype == np.float32
        assert case.dense_sigma(res.kernel.astype(np.float64)) <= bound


def test_one_by_one_kernel_needs_no_input_size_and_is_exact() -> None:
    k0 = np.random.default_rng(8).standard_normal((6, 4, 1, 1))
    layer = ConvLayer("pw", k0, (2, 2), (1, 1), ((0, 0), (0, 0)))
    res = project_layer(layer, 1.0)
    assert res.stats.iterations == 1 and res.target.exact
    w0, w = k0[:, :, 0, 0], res.kernel[:, :, 0, 0]
    u, s, vh = np.linalg.svd(w0, full_matrices=False)
    nearest = (u * np.minimum(s, 1.0)) @ vh
    np.testing.assert_allclose(w, nearest, atol=1e-9)
    assert (
        dense_singular_values(
            res.kernel, (6, 6), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1)
        )[0]
        <= 1.0
    )


def test_own_grid_is_not_a_certificate_but_ours_is() -> None:
    """MATH.md §2: K = [1, 0, -1] on n = 2 has circular norm 0 on its own grid and zero-padded
    norm 1. Projecting on the own grid would leave it untouched; ours must not."""
    case = Case("derivative", (1, 1, 3), (2,), (1,), (1,), ((1, 1),))
    k0 = np.array([[[1.0, 0.0, -1.0]]])
    assert case.dense_sigma(k0) == pytest.approx(1.0)
    assert certified_sigma(case.layer(k0)) >= 1.0 - RTOL
    res = project_layer(case.layer(k0), 0.5)
    assert not res.stats.unchanged
    assert case.dense_sigma(res.kernel) <= 0.5 * (1 + RTOL)


@pytest.mark.parametrize(
    ("shape", "stride", "dilation", "groups"),
    [
        ((3, 2, 3, 3), (1, 1), (1, 1), 1),
        ((4, 2, 3, 3), (2, 2), (1, 1), 2),
        ((2, 2, 3), (1,), (2,), 1),
    ],
    ids=["3x3", "strided-grouped", "1d-dilated"],
)
def test_unknown_input_size_is_certified_for_every_size(shape, stride, dilation, groups) -> None:
    """No input size: the projection is certified by the size-independent bound S, which holds
    for every input size and every zero padding (checked densely on several)."""
    k0 = np.random.default_rng(10).standard_normal(shape) + 0.5
    nd = len(shape) - 2
    layer = ConvLayer("free", k0, stride, dilation, ((1, 1),) * nd, groups=groups)
    res = project_layer(layer, 1.0)
    assert projection_target(layer).operator == "any-size" and res.sigma_after <= 1.0
    for n in (4, 6, 9):
        for pad in (0, 1, 2):
            if n + 2 * pad < dilation[0] * (shape[-1] - 1) + 1:
                continue  # the kernel does not fit
            size = (n,) * nd
            sigma = dense_singular_values(
                res.kernel,
                size,
                stride=stride,
                padding=((pad, pad),) * nd,
                dilation=dilation,
                groups=groups,
            )[0]
            assert sigma <= 1.0 + 1e-9, (n, pad)
