"""analyse_layer / layer_upper_bound on IR layers, against dense operator matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from oracle import circular_singular_values, dense_singular_values

from convaudit.engine.layer import analyse_layer, layer_upper_bound
from convaudit.engine.results import EngineOptions
from convaudit.errors import UnsupportedLayerError
from convaudit.ir import BatchNormParams, ConvLayer, DenseLayer

RNG = np.random.default_rng(11)


def conv(
    kernel, *, input_size=(6, 6), stride=(1, 1), dilation=(1, 1), padding=((1, 1), (1, 1)), **kw
):
    return ConvLayer("c", kernel, stride, dilation, padding, input_size=input_size, **kw)


def bn(channels):
    return BatchNormParams(
        gamma=RNG.uniform(0.2, 3, channels),
        beta=RNG.standard_normal(channels),
        mean=RNG.standard_normal(channels),
        var=RNG.uniform(0.1, 2, channels),
        eps=1e-5,
    )


def test_zero_padded_layer_sigma_is_exact_and_spectrum_is_circular():
    kernel = RNG.standard_normal((4, 3, 3, 3))
    spec = analyse_layer(conv(kernel, stride=(2, 2)))
    want = dense_singular_values(
        kernel, (6, 6), stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1)
    )[0]
    assert spec.status == "ok" and spec.sigma_max is not None
    assert spec.sigma_max.exact and abs(spec.sigma_max.value - want) <= 1e-6 * want
    assert spec.sigma_max.operator == "zeros" and spec.sigma_max.upper >= want
    circ = np.sort(circular_singular_values(kernel, (6, 6), stride=2, dilation=1))[::-1]
    assert spec.spectrum_operator == "circular" and spec.spectrum_grid == (6, 6)
    np.testing.assert_allclose(spec.singular_values, circ, atol=1e-10 * circ[0])
    assert spec.sigma_min == pytest.approx(circ[-1], abs=1e-10 * circ[0])
    assert spec.condition == pytest.approx(circ[0] / circ[-1], rel=1e-8)
    assert spec.stable_rank == pytest.approx(np.sum(circ**2) / circ[0] ** 2, rel=1e-10)


def test_upper_bound_mode_and_layer_upper_bound_are_certified():
    kernel = RNG.standard_normal((3, 3, 3, 3))
    layer = conv(kernel, input_size=(5, 7))
    want = dense_singular_values(
        kernel, (5, 7), stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1)
    )[0]
    spec = analyse_layer(layer, sigma="upper-bound")
    assert spec.sigma_max.quantity == "upper-bound" and spec.sigma_max.value >= want
    bound = layer_upper_bound(layer)
    assert bound.upper >= want and bound.value == bound.upper


def test_circular_layer_exact_from_spectrum():
    kernel = RNG.standard_normal((4, 4, 3, 3))
    spec = analyse_layer(conv(kernel, padding_mode="circular"))
    want = circular_singular_values(kernel, (6, 6), stride=1, dilation=1)[0]
    assert spec.sigma_max.exact and spec.sigma_max.operator == "circular"
    assert abs(spec.sigma_max.value - want) <= 1e-12 * want and spec.sigma_max.upper >= want


def test_bn_folding_changes_the_spectrum_as_the_folded_kernel():
    kernel = RNG.standard_normal((4, 3, 3, 3))
    layer = conv(kernel, bn=bn(4))
    folded = kernel * layer.bn.scale[:, None, None, None]
    spec = analyse_layer(layer, fold_bn=True)
    want = dense_singular_values(
        folded, (6, 6), stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1)
    )[0]
    assert spec.bn_folded and abs(spec.sigma_max.value - want) <= 1e-6 * want
    plain = analyse_layer(layer)
    assert not plain.bn_folded and plain.sigma_max.value != pytest.approx(spec.sigma_max.value)
    assert layer_upper_bound(layer, fold_bn=True).upper >= want


def test_transposed_layer_with_bn_uses_its_output_grid():
    kernel = RNG.standard_normal((3, 2, 3, 3))  # ConvTranspose weight (c_in, c_out/g, k, k)
    layer = ConvLayer(
        "t",
        kernel,
        (2, 2),
        (1, 1),
        ((1, 1), (1, 1)),
        transposed=True,
        output_padding=(1, 1),
        input_size=(4, 4),
        bn=bn(2),
    )
    spec = analyse_layer(layer, fold_bn=True)
    folded = layer.folded_kernel()
    want = dense_singular_values(
        folded,
        (4, 4),
        stride=(2, 2),
        padding=(1, 1),
        dilation=(1, 1),
        transposed=True,
        output_padding=(1, 1),
    )[0]
    assert spec.sigma_max.exact and abs(spec.sigma_max.value - want) <= 1e-6 * want
    assert spec.spectrum_grid == (8, 8)


def test_depthwise_1d_and_3d_layers():
    k1 = RNG.standard_normal((6, 1, 5))
    layer = ConvLayer("d", k1, (1,), (2,), ((4, 4),), groups=3, input_size=(9,))
    want = dense_singular_values(k1, (9,), stride=(1,), padding=((4, 4),), dilation=(2,), groups=3)[
        0
    ]
    assert abs(analyse_layer(layer).sigma_max.value - want) <= 1e-6 * want
    k3 = RNG.standard_normal((2, 2, 3, 3, 3))
    layer = ConvLayer("v", k3, (1, 1, 1), (1, 1, 1), ((1, 1),) * 3, input_size=(3, 4, 3))
    want = dense_singular_values(
        k3, (3, 4, 3), stride=(1, 1, 1), padding=((1, 1),) * 3, dilation=(1, 1, 1)
    )[0]
    assert abs(analyse_layer(layer).sigma_max.value - want) <= 1e-6 * want


def test_unknown_input_size_gives_the_size_independent_bound():
    kernel = RNG.standard_normal((3, 3, 3, 3))
    spec = analyse_layer(conv(kernel, input_size=None))
    assert spec.sigma_max.operator == "any-size" and spec.sigma_max.quantity == "upper-bound"
    assert spec.singular_values is None and spec.notes
    for n in (3, 8, 13):
        want = dense_singular_values(
            kernel, (n, n), stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1)
        )[0]
        assert spec.sigma_max.upper >= want


def test_reflect_unknown_size_bound_includes_padding_gain():
    kernel = RNG.standard_normal((2, 2, 3, 3))
    spec = analyse_layer(conv(kernel, input_size=None, padding_mode="reflect"))
    for n in (2, 3, 6):
        want = dense_singular_values(
            kernel,
            (n, n),
            stride=(1, 1),
            padding=((1, 1), (1, 1)),
            dilation=(1, 1),
            padding_mode="reflect",
        )[0]
        assert spec.sigma_max.upper >= want


def test_non_finite_and_zero_kernels():
    bad = RNG.standard_normal((2, 2, 3, 3))
    bad[0, 0, 0, 0] = np.nan
    spec = analyse_layer(conv(bad))
    assert spec.status == "non-finite" and spec.sigma_max is None
    with pytest.raises(UnsupportedLayerError):
        layer_upper_bound(conv(bad))
    zero = analyse_layer(conv(np.zeros((2, 2, 3, 3))))
    assert zero.status == "zero" and zero.sigma_max.value == 0 and zero.sigma_max.exact


def test_dense_layer_exact_svd():
    w = RNG.standard_normal((5, 7))
    spec = analyse_layer(DenseLayer("fc", w))
    sv = np.linalg.svd(w, compute_uv=False)
    assert spec.sigma_max.exact and spec.sigma_max.value == pytest.approx(sv[0], rel=1e-14)
    assert spec.sigma_min == pytest.approx(sv[-1]) and spec.condition == pytest.approx(
        sv[0] / sv[-1]
    )
    assert layer_upper_bound(DenseLayer("fc", w)).upper >= sv[0]


def test_large_layer_skips_spectrum_unless_full():
    kernel = np.random.default_rng(0).standard_normal((512, 512, 3, 3)).astype(np.float32)
    layer = conv(kernel, input_size=(64, 64))
    spec = analyse_layer(layer, sigma="none", options=EngineOptions(dtype="float32"))
    assert spec.singular_values is None and any("full=True" in n for n in spec.notes)
    assert spec.sigma_max is None
    assert math.isfinite(layer_upper_bound(conv(kernel[:8, :8], input_size=(6, 6))).upper)
