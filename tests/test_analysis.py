"""The model-level analysis object: selection, skipped layers, naive product, progress, API."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import oracle
import pytest

import convaudit
from convaudit.analysis import NAIVE_PRODUCT_LABEL, AnalysisOptions, ModelReport, analyse
from convaudit.errors import ConfigError, UnsupportedLayerError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


@pytest.fixture(scope="module")
def signal_ir():
    return convaudit.load(SAMPLES / "signal_1d.onnx")


@pytest.fixture(scope="module")
def signal_report(signal_ir) -> ModelReport:
    return analyse(signal_ir, full=True)


def test_numbers_match_the_dense_operator(signal_ir, signal_report):
    assert [r.name for r in signal_report.layers] == [layer.name for layer in signal_ir.layers]
    for conv in signal_ir.convs:
        result = next(r for r in signal_report.layers if r.name == conv.name)
        truth = oracle.dense_singular_values(
            conv.kernel,
            conv.input_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
        )
        sigma = result.spectrum.sigma_max
        assert sigma.exact and sigma.value == pytest.approx(truth[0], rel=1e-4)  # tol 1e-4
        assert sigma.lower <= truth[0] * (1 + 1e-9) <= sigma.upper * (1 + 2e-9)
        assert result.geometry.kernel_shape == conv.kernel.shape
        assert result.geometry.input_size == conv.input_size


def test_dense_layer_is_its_matrix_norm(signal_ir, signal_report):
    (dense,) = signal_ir.denses
    result = next(r for r in signal_report.layers if r.name == dense.name)
    expected = np.linalg.svd(dense.weight.astype(np.float64), compute_uv=False)[0]
    assert result.spectrum.sigma_max.value == pytest.approx(expected, rel=1e-9)


def test_naive_product_is_labelled_and_correct(signal_report):
    naive = signal_report.summary.naive_product
    values = [r.spectrum.sigma_max.value for r in signal_report.layers]
    assert naive.value == pytest.approx(math.prod(values), rel=1e-12)
    assert naive.factors == len(values) and naive.complete
    assert naive.label == NAIVE_PRODUCT_LABEL and "NOT a certified" in naive.label
    _name, largest = signal_report.summary.largest_sigma_max
    assert largest == max(values)
    assert any("BatchNorm" in note for note in signal_report.summary.notes)


def test_fold_bn_changes_only_the_layer_with_bn(signal_ir, signal_report):
    folded = analyse(signal_ir, fold_bn=True)
    for plain, with_bn in zip(signal_report.layers, folded.layers, strict=True):
        has_bn = getattr(signal_ir.layer(plain.name), "bn", None) is not None
        assert with_bn.spectrum.bn_folded is has_bn
        if not has_bn:
            assert with_bn.spectrum.sigma_max.value == pytest.approx(plain.spectrum.sigma_max.value)
    assert not any("BatchNorm" in note for note in folded.summary.notes)


def test_layer_selection(signal_ir):
    report = analyse(signal_ir, AnalysisOptions(layers="conv[23]", sigma="bound"))
    assert [r.name for r in report.layers] == ["/conv2/Conv", "/conv3/Conv"]
    assert not report.summary.naive_product.complete
    with pytest.raises(ConfigError, match="matches no layer"):
        analyse(signal_ir, layers="nothing-like-this")
    with pytest.raises(ConfigError, match="regular expression"):
        analyse(signal_ir, layers="[")


def test_progress_reports_every_layer(signal_ir):
    calls: list[tuple[int, int, str]] = []
    analyse(
        signal_ir,
        sigma="bound",
        progress=lambda done, total, what: calls.append((done, total, what)),
    )
    n = len(signal_ir.layers)
    assert calls == [(i, n, layer.name) for i, layer in enumerate(signal_ir.layers)] + [(n, n, "")]


def test_unsupported_layer_becomes_a_skipped_layer(signal_ir, monkeypatch):
    import convaudit.engine.layer as engine_layer

    real = engine_layer.analyse_layer

    def refuse_conv2(layer, **kwargs):
        if layer.name == "/conv2/Conv":
            raise UnsupportedLayerError("stride 2 does not divide the grid")
        return real(layer, **kwargs)

    monkeypatch.setattr(engine_layer, "analyse_layer", refuse_conv2)
    report = analyse(signal_ir, sigma="bound")
    assert "/conv2/Conv" not in [r.name for r in report.layers]
    (skipped,) = report.skipped
    assert skipped.name == "/conv2/Conv" and "divide" in skipped.reason
    assert report.summary.layers_skipped == 1 and not report.summary.naive_product.complete


def test_report_is_frozen_and_accepts_a_path(signal_report):
    with pytest.raises(dataclasses.FrozenInstanceError):
        signal_report.path = "elsewhere"  # type: ignore[misc]
    from_path = analyse(SAMPLES / "signal_1d.onnx", sigma="bound")
    assert [r.name for r in from_path.layers] == [r.name for r in signal_report.layers]
    for bound, exact in zip(from_path.layers, signal_report.layers, strict=True):
        assert bound.spectrum.sigma_max.value >= exact.spectrum.sigma_max.value * (1 - 1e-9)
