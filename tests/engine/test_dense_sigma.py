"""Dense layers too large for a quick full SVD: σ_max by Lanczos to the tolerance, against
numpy's SVD; the certified upper end, with and without the Cholesky certificate."""

from __future__ import annotations

import numpy as np
import pytest

from convaudit.engine import layer as layer_module
from convaudit.engine.layer import analyse_layer, layer_upper_bound
from convaudit.engine.results import EngineOptions
from convaudit.engine.runtime import runtime
from convaudit.engine.sigma.dense import dense_sigma_max
from convaudit.ir import DenseLayer


@pytest.mark.parametrize("shape", [(300, 1500), (1500, 300), (40, 60)])
@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_lanczos_value_and_bracket(shape, tol):
    w = np.random.default_rng(sum(shape)).standard_normal(shape)
    want = np.linalg.svd(w, compute_uv=False)[0]
    res = dense_sigma_max(w, runtime(EngineOptions(tol=tol)))
    assert res.lower <= want * (1 + 1e-12) <= res.upper * (1 + 1e-12)
    assert res.exact and abs(res.value - want) <= tol * want
    certified = dense_sigma_max(w, runtime(EngineOptions(tol=tol)), certify=True)
    assert want * (1 - 1e-12) <= certified.upper <= want * (1 + 2 * tol)


def test_a_large_dense_layer_skips_its_full_svd(monkeypatch):
    monkeypatch.setattr(layer_module, "CHEAP_SPECTRUM_WORK", 1e5)
    w = np.random.default_rng(1).standard_normal((1030, 1060)).astype(np.float32)
    dense = DenseLayer("fc", w)
    want = np.linalg.svd(w.astype(np.float64), compute_uv=False)[0]
    spec = analyse_layer(dense)
    assert spec.sigma_min is None and spec.singular_values is None
    assert any("full spectrum skipped" in note and "--full" in note for note in spec.notes)
    assert (
        spec.sigma_max.guarantee == "converged" and abs(spec.sigma_max.value - want) <= 1e-6 * want
    )
    full = analyse_layer(dense, full=True)  # forced: every value
    assert full.singular_values is not None and full.sigma_max.guarantee == "exact"
    bound = layer_upper_bound(dense)  # the network bound's factor: certified, and tight
    assert want * (1 - 1e-12) <= bound.upper <= want * (1 + 3e-6)
