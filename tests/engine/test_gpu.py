"""CUDA against CPU, within dtype tolerance (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from convaudit.engine.api import operator_norm, singular_values

pytestmark = pytest.mark.gpu

CASES = [
    ((16, 8, 3, 3), (12, 12), 1, 1),
    ((32, 16, 3, 3), (16, 16), 2, 1),
    ((24, 1, 3, 3), (10, 10), 1, 24),
    ((8, 8, 3), (32,), 1, 1),
    ((4, 4, 3, 3, 3), (6, 6, 6), 1, 1),
    ((64, 32, 1, 1), (8, 8), 2, 1),
]


@pytest.mark.parametrize(("shape", "grid", "stride", "groups"), CASES)
@pytest.mark.parametrize(("dtype", "tol"), [("float64", 1e-12), ("float32", 2e-6)])
def test_cuda_spectrum_matches_cpu(shape, grid, stride, groups, dtype, tol):
    kernel = np.random.default_rng(0).standard_normal(shape)
    cpu = singular_values(kernel, grid, stride=stride, groups=groups, dtype="float64")
    gpu = singular_values(kernel, grid, stride=stride, groups=groups, dtype=dtype, device="cuda")
    assert gpu.shape == cpu.shape
    assert np.max(np.abs(gpu - cpu)) <= tol * cpu[0]


@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect"])
def test_cuda_operator_norm_matches_cpu(padding_mode):
    kernel = np.random.default_rng(1).standard_normal((16, 8, 3, 3))
    cpu = operator_norm(kernel, (12, 12), padding=1, padding_mode=padding_mode)
    gpu = operator_norm(kernel, (12, 12), padding=1, padding_mode=padding_mode, device="cuda")
    assert gpu.exact == cpu.exact
    assert abs(gpu.value - cpu.value) <= 1e-6 * cpu.value
    assert abs(gpu.upper - cpu.upper) <= 1e-9 * cpu.upper
