"""The per-op Lipschitz constants, against torch's own implementations of the ops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convaudit.network.rules import (
    RuleError,
    activation_constant,
    avgpool_bound,
    global_avgpool_bound,
    maxpool_bound,
    windows_per_pixel,
)

GRID = torch.linspace(-12, 12, 480_001, dtype=torch.float64)

TORCH_FNS = {
    "relu": (F.relu, {}),
    "relu6": (F.relu6, {}),
    "tanh": (torch.tanh, {}),
    "sigmoid": (torch.sigmoid, {}),
    "softplus": (lambda x: F.softplus(x, beta=3.0), {}),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), {"alpha": 0.2}),
    "elu": (lambda x: F.elu(x, 1.7), {"alpha": 1.7}),
    "selu": (F.selu, {}),
    "celu": (lambda x: F.celu(x, 0.5), {"alpha": 0.5}),
    "gelu": (F.gelu, {}),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), {}),
    "silu": (F.silu, {}),
    "mish": (F.mish, {}),
    "hardswish": (F.hardswish, {}),
    "hard_sigmoid": (F.hardsigmoid, {"alpha": 1 / 6}),
}


@pytest.mark.parametrize("fn", sorted(TORCH_FNS))
def test_activation_constant_is_the_sup_of_the_derivative(fn):
    func, attrs = TORCH_FNS[fn]
    x = GRID.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(func(x).sum(), x)
    sup = float(grad.abs().max())
    constant = activation_constant({"fn": fn, **attrs})
    # certified: never below the real sup (torch's hardsigmoid backward rounds 1/6 to float32)
    assert sup <= constant * (1 + 1e-7)
    assert sup >= constant - 2e-4  # and tight (the grid step is 5e-5)


def test_prelu_uses_its_largest_slope():
    assert activation_constant({"fn": "prelu", "slope": np.array([0.25, -1.5])}) == 1.5
    assert activation_constant({"fn": "prelu", "slope": np.array([0.25])}) == 1.0
    with pytest.raises(RuleError):
        activation_constant({"fn": "prelu"})


def test_softmax_jacobian_norm_is_at_most_one_half_and_reaches_it():
    logits = torch.randn(300, 6, dtype=torch.float64) * 4
    logits[0] = torch.tensor([0.0, 0.0, -60, -60, -60, -60])  # p = (1/2, 1/2, 0, ...)
    norms = []
    for row in logits:
        jac = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, 0), row)
        norms.append(float(torch.linalg.matrix_norm(jac, 2)))
    bound = activation_constant({"fn": "softmax"})
    assert max(norms) <= bound
    assert norms[0] == pytest.approx(bound, rel=1e-12)


def test_unknown_and_discontinuous_activations_have_no_rule():
    for fn in ("thresholded_relu", "exp", ""):
        with pytest.raises(RuleError):
            activation_constant({"fn": fn})


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 6), s=st.integers(1, 5), d=st.integers(1, 4))
def test_windows_per_pixel_matches_enumeration(k, s, d):
    n = 60
    count = np.zeros(n * s + k * d, int)
    for i in range(n):
        for j in range(k):
            count[i * s + j * d] += 1
    interior = count[k * d : (n - 1) * s + 1]  # away from the edges
    assert windows_per_pixel(k, s, d) >= count.max()
    if len(interior):
        assert windows_per_pixel(k, s, d) == interior.max()


def test_maxpool_bound_is_reached_by_a_spike():
    attrs = {"kernel": (3, 3), "stride": (1, 1), "padding": ((1, 1), (1, 1))}
    assert maxpool_bound(attrs) == 3.0
    x = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    y = x.clone()
    y[0, 0, 3, 3] = 1.0  # the max of all 9 windows that cover it
    ratio = (F.max_pool2d(y, 3, 1, 1) - F.max_pool2d(x, 3, 1, 1)).norm() / (y - x).norm()
    assert float(ratio) == pytest.approx(3.0)
    assert maxpool_bound({"kernel": (2, 2), "stride": (2, 2)}) == 1.0


def _avgpool_matrix_norm(n, k, s, pad, include, ceil_mode) -> float:
    basis = torch.eye(n * n, dtype=torch.float64).reshape(n * n, 1, n, n)
    out = F.avg_pool2d(basis, k, s, pad, ceil_mode=ceil_mode, count_include_pad=include)
    return float(torch.linalg.matrix_norm(out.reshape(n * n, -1).T, 2))


@pytest.mark.parametrize(
    ("n", "k", "s", "pad", "include", "ceil_mode"),
    [
        (8, 2, 2, 0, True, False),
        (8, 3, 1, 1, True, False),
        (8, 3, 1, 1, False, False),
        (9, 3, 2, 1, False, True),
        (9, 3, 2, 1, True, True),
        (7, 2, 2, 0, False, True),
        (6, 3, 3, 0, True, False),
    ],
)
def test_avgpool_bound_is_the_exact_operator_norm(n, k, s, pad, include, ceil_mode):
    truth = _avgpool_matrix_norm(n, k, s, pad, include, ceil_mode)
    attrs = {
        "kernel": (k, k),
        "stride": (s, s),
        "padding": ((pad, pad),) * 2,
        "count_include_pad": include,
        "ceil_mode": ceil_mode,
    }
    assert avgpool_bound({**attrs, "input_size": (n, n)}) == pytest.approx(truth, rel=1e-10)
    assert avgpool_bound({**attrs, "input_size": (n, n)}) >= truth
    assert avgpool_bound(attrs) >= truth * (1 - 1e-12)  # size-independent Schur bound


def test_global_avgpool_norm():
    n = 5
    basis = torch.eye(2 * n * n, dtype=torch.float64).reshape(-1, 2, n, n)
    matrix = F.adaptive_avg_pool2d(basis, 1).reshape(2 * n * n, -1).T
    truth = float(torch.linalg.matrix_norm(matrix, 2))
    assert global_avgpool_bound({"input_size": (n, n)}) == pytest.approx(truth, rel=1e-12)
    assert global_avgpool_bound({}) == 1.0 >= truth
    assert math.isclose(truth, 1 / n)
