"""The fast σ_max path (power lower bound, Gram-iteration upper bound) against dense truth."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from oracle import circular_singular_values
from strategies import conv_cases

from convaudit.engine.circular_norm import _certify_below, _power_lower, circular_sigma_max
from convaudit.engine.results import EngineOptions
from convaudit.engine.runtime import runtime

RT = runtime(EngineOptions())


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_bracket_contains_truth_and_closes(case):
    kernel, grid, stride, dilation, groups = case
    want = circular_singular_values(kernel, grid, stride=stride, dilation=dilation, groups=groups)[
        0
    ]
    res = circular_sigma_max(
        torch.as_tensor(kernel),
        grid,
        stride=stride,
        dilation=dilation,
        groups=groups,
        rt=RT,
        tol=1e-6,
    )
    assert res.lower <= want * (1 + 1e-12)
    assert res.upper >= want * (1 - 1e-12)
    assert res.upper <= res.lower * (1 + 1e-6) + 1e-300


def test_cholesky_certificate_and_power_lower_bound():
    rng = np.random.default_rng(0)
    m = torch.as_tensor(rng.standard_normal((20, 6, 6)) + 1j * rng.standard_normal((20, 6, 6)))
    gram = m.mH @ m
    lam = torch.linalg.eigvalsh(gram)[:, -1]
    for factor in (0.5, 0.99, 0.999999, 1.000001, 1.01, 2.0):
        proven = _certify_below(gram, float(lam.max()) * factor)
        # never certifies a matrix whose λ_max is above μ; certifies every one well below it
        assert not torch.any(proven & (lam > lam.max() * factor))
        assert torch.all(proven[lam < lam.max() * factor * (1 - 1e-9)])
    for steps in range(0, 4):
        low, _ = _power_lower(gram, steps)
        assert torch.all(low <= lam * (1 + 1e-12))


def test_float32_bracket():
    kernel = np.random.default_rng(1).standard_normal((8, 8, 3, 3))
    want = circular_singular_values(kernel, (8, 8), stride=1, dilation=1)[0]
    rt32 = runtime(EngineOptions(dtype="float32"))
    res = circular_sigma_max(
        torch.as_tensor(kernel, dtype=torch.float32),
        (8, 8),
        stride=(1, 1),
        dilation=(1, 1),
        groups=1,
        rt=rt32,
        tol=1e-5,
    )
    assert res.lower <= want * (1 + 1e-6) and res.upper >= want * (1 - 1e-6)
    assert abs(res.value - want) <= 1e-6 * want  # MATH.md §5: float32 σ_max to ~1e-7
