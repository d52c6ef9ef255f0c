"""The batched eigensolvers on a CUDA device, against the CPU (skipped without a GPU).

Every backend available on the card is forced in turn; each must agree with the CPU's LAPACK
to 1e-12·σ_max in float64 on the geometries of benchmarks/gpu_check.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convaudit.engine.api import singular_values
from convaudit.engine.spectrum import eigensolvers
from convaudit.engine.spectrum.cusolver import ROUTINES
from convaudit.engine.spectrum.eigensolvers import prefer, recording, select
from convaudit.engine.spectrum.routes import route_svdvals
from convaudit.errors import ConfigError

pytestmark = pytest.mark.gpu

CASES = [
    ((16, 8, 3, 3), (12, 12), 1, 1),
    ((32, 16, 3, 3), (16, 16), 2, 1),
    ((24, 1, 3, 3), (10, 10), 1, 24),
    ((8, 8, 3), (32,), 1, 1),
    ((4, 4, 3, 3, 3), (6, 6, 6), 1, 1),
    ((64, 32, 1, 1), (8, 8), 2, 1),
    ((128, 128, 3, 3), (14, 14), 1, 1),
]
BACKENDS = [r.name for r in ROUTINES] + ["torch-eigvalsh"]


def _forced(backend: str, dtype: torch.dtype = torch.complex128):
    with prefer(backend=backend):
        try:
            return select("cuda", dtype)
        except ConfigError as exc:
            pytest.skip(str(exc))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("shape", "grid", "stride", "groups"), CASES)
def test_every_backend_matches_the_cpu(backend, shape, grid, stride, groups):
    _forced(backend)
    kernel = np.random.default_rng(0).standard_normal(shape)
    cpu = singular_values(kernel, grid, stride=stride, groups=groups)
    with prefer(backend=backend), recording() as used:
        gpu = singular_values(kernel, grid, stride=stride, groups=groups, device="cuda")
    assert used == {backend}
    assert gpu.shape == cpu.shape
    assert np.max(np.abs(gpu - cpu)) <= 1e-12 * cpu[0]


@pytest.mark.parametrize("backend", [r.name for r in ROUTINES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128])
@pytest.mark.parametrize("n", [5, 33, 130])
def test_routines_match_lapack_on_a_side_stream(backend, dtype, n):
    solver = _forced(backend, dtype).solver
    x = torch.randn(7, n, n, dtype=dtype, generator=torch.Generator().manual_seed(n))
    a = (x + x.mH) / 2
    want = np.linalg.eigvalsh(a.numpy().astype(np.complex128))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # the routine must run on torch's current stream
        a_dev = a.to("cuda", non_blocking=True)
        got = solver.eigvalsh(a_dev.contiguous())
        got = got.cpu().numpy()
    tol = 1e-12 if dtype in (torch.float64, torch.complex128) else 2e-5
    assert np.max(np.abs(got - want)) <= tol * np.abs(want).max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_budget_batches_give_the_same_values(backend):
    selection = _forced(backend)
    b = torch.randn(300, 40, 72, dtype=torch.complex128, device="cuda")
    whole = route_svdvals(b, selection=selection)
    parts = route_svdvals(b, budget=2 * 112 * 112 * 16, selection=selection)
    assert torch.allclose(whole, parts, rtol=0, atol=1e-13 * float(whole.max()))


def test_gram_route_on_cuda():
    b = torch.randn(50, 48, 96, dtype=torch.complex128, device="cuda")
    want = np.linalg.svd(b.cpu().numpy(), compute_uv=False)
    got = route_svdvals(b, route="gram").cpu().numpy()
    # σ_min/σ_max of these random blocks is ~0.3: the squared problem loses little here
    assert np.max(np.abs(got - want)) <= 1e-12 * want.max()


def test_the_default_on_cuda_is_a_batched_routine_when_the_library_has_one():
    selection = select("cuda", torch.complex128)
    if not any(r.missing(eigensolvers.torch_cusolver()) is None for r in ROUTINES):
        pytest.skip(f"this cuSOLVER has no batched routine: {selection.skipped}")
    assert selection.solver.name in [r.name for r in ROUTINES], selection.skipped


def test_json_report_names_the_cuda_backend():
    from convaudit.analysis import analyse

    report = analyse("sample_models/resnet_tiny.onnx", device="cuda")
    allowed = {select("cuda", t).solver.name for t in (torch.float64, torch.complex128)}
    if eigensolvers.runtime_failures():
        allowed.add("torch-eigvalsh")
    assert report.eigensolvers and set(report.eigensolvers) <= allowed
