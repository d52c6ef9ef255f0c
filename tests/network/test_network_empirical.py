"""The empirical lower bound: never above the truth, close to it where the search can find it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from oracle import dense_singular_values

from convaudit.network.empirical import SearchOptions, search_autograd, search_blackbox
from convaudit.network.empirical_runtime import onnx_blackbox


def test_blackbox_on_a_linear_map_finds_its_norm_from_below():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(7, 12))
    truth = float(np.linalg.norm(a, 2))
    fn = lambda xs: [a @ xs[0].reshape(12)]  # noqa: E731
    found = search_blackbox(
        fn, [(1, 12)], SearchOptions(trials=1, iterations=15, block=8), dtype=np.float64
    )
    assert found.value <= truth * (1 + 1e-12)
    assert found.value >= 0.99 * truth  # the block search spans the top direction quickly here


def test_blackbox_batched_and_unbatched_agree():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(5, 6))

    def one(xs):
        return [np.tanh(xs[0].reshape(-1, 6) @ a.T)]

    opts = SearchOptions(trials=2, iterations=3, block=4)
    plain = search_blackbox(one, [(1, 6)], opts, dtype=np.float64)
    batched = search_blackbox(one, [(1, 6)], opts, dtype=np.float64, batch=True)
    assert plain.value == pytest.approx(batched.value, rel=1e-12)
    assert plain.evaluations == batched.evaluations


def test_autograd_search_reaches_the_top_singular_value_of_a_linear_layer():
    torch.manual_seed(0)
    layer = nn.Linear(10, 6, bias=True).double()
    truth = float(torch.linalg.matrix_norm(layer.weight.detach(), 2))
    found = search_autograd(
        layer, [(1, 10)], SearchOptions(trials=1, iterations=30, ascent_steps=0)
    )
    assert truth * (1 - 1e-6) <= found.value <= truth * (1 + 1e-12)


def test_onnxruntime_runner_on_an_exported_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 3)
    ).eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 1, 5, 5),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
        )
    runner = onnx_blackbox(path, {})  # the dynamic batch dim defaults to 1
    assert runner.shapes == [(1, 1, 5, 5)] and runner.batch
    found = runner.search(SearchOptions(trials=1, iterations=4, block=6))
    # a certified upper bound of this chain: ||conv|| (dense oracle) * ||linear|| (ReLU is 1)
    conv = dense_singular_values(
        model[0].weight.detach().numpy(), (5, 5), stride=1, dilation=1, padding=((1, 1), (1, 1))
    )[0]
    upper = conv * float(torch.linalg.matrix_norm(model[3].weight.detach().double(), 2))
    assert 0 < found.value <= upper
