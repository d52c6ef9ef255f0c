"""Eigensolver selection, fallback, batching within a memory budget, and the two routes from
σ to eigenvalues, on the CPU (cuSOLVER through the host stand-in library), against LAPACK."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch

from convaudit.engine.spectrum import eigensolvers
from convaudit.engine.spectrum.cusolver import CusolverUnavailable, HeevjBatched, SyevBatched
from convaudit.engine.spectrum.eigensolvers import (
    NumpyLapack,
    Selection,
    TorchEigvalsh,
    plan_batch,
    prefer,
    recording,
    select,
)
from convaudit.engine.spectrum.routes import doubled, gram, route_svdvals, svdvals
from convaudit.errors import ConfigError


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """Each test sees no cached selection, library, demotion or failure."""
    monkeypatch.setattr(eigensolvers, "_selections", {})
    monkeypatch.setattr(eigensolvers, "_library", None)
    monkeypatch.setattr(eigensolvers, "_broken", set())
    monkeypatch.setattr(eigensolvers, "_failures", [])
    monkeypatch.setattr(eigensolvers, "_preference", None)
    monkeypatch.delenv("CONVAUDIT_EIGENSOLVER", raising=False)


def _blocks(shape, complex_=True, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if complex_ else 0)
    return a


# --- the routes -----------------------------------------------------------------------------


def test_doubled_matrix_is_the_jordan_wielandt_matrix():
    b = torch.from_numpy(_blocks((2, 3, 5)))
    h = doubled(b).numpy()
    assert h.shape == (2, 8, 8)
    np.testing.assert_array_equal(h[:, :3, 3:], b.numpy())
    np.testing.assert_array_equal(h[:, 3:, :3], np.conj(b.numpy()).transpose(0, 2, 1))
    np.testing.assert_array_equal(h[:, :3, :3], 0)
    np.testing.assert_array_equal(h[:, 3:, 3:], 0)
    np.testing.assert_allclose(h, np.conj(h).transpose(0, 2, 1))


@pytest.mark.parametrize("shape", [(4, 3, 7), (4, 7, 3)])
def test_gram_takes_the_smaller_side(shape):
    b = _blocks(shape)
    g = gram(torch.from_numpy(b)).numpy()
    k = min(shape[1:])
    assert g.shape == (shape[0], k, k)
    want = (
        b @ np.conj(b).transpose(0, 2, 1)
        if shape[1] <= shape[2]
        else np.conj(b).transpose(0, 2, 1) @ b
    )
    np.testing.assert_allclose(g, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", [(6, 5, 9), (3, 12, 4), (2, 1, 1), (4, 16, 48)], ids=str)
def test_doubled_route_matches_lapack_svd_rank_deficiency_included(shape):
    a = _blocks(shape, seed=sum(shape))
    a[0, :, : shape[2] // 2] = a[0, :, shape[2] // 2 : 2 * (shape[2] // 2)]
    a[-1] *= 1e-9
    want = np.linalg.svd(a, compute_uv=False)
    got = route_svdvals(torch.from_numpy(a), route="doubled").numpy()
    scale = want.max(axis=-1, keepdims=True)
    assert np.all(np.abs(got - want) <= 1e-13 * scale)


def test_gram_route_accuracy_is_that_of_the_squared_problem():
    # Well conditioned: as accurate as LAPACK's SVD, to the conditioning allowance.
    a = _blocks((8, 6, 10), seed=3)
    want = np.linalg.svd(a, compute_uv=False)
    got = route_svdvals(torch.from_numpy(a), route="gram").numpy()
    assert np.all(np.abs(got - want) <= 1e-12 * want[:, :1])
    # Exactly rank-deficient: a zero σ comes out at most about √(n·u)·σ_max, not 1e-15·σ_max.
    b = a.copy()
    b[:, :, 5:] = 0  # rank 5 of 6
    want = np.linalg.svd(b, compute_uv=False)
    got = route_svdvals(torch.from_numpy(b), route="gram").numpy()
    err = np.abs(got - want) / want[:, :1]
    assert np.all(err <= np.sqrt(10 * np.finfo(float).eps))
    assert np.all(err[:, :5] <= 1e-12)  # the nonzero ones keep full accuracy


def test_route_shapes_and_empty_batches():
    out = route_svdvals(torch.zeros(2, 3, 0, 4, 5, dtype=torch.float64))
    assert out.shape == (2, 3, 0, 4)
    assert route_svdvals(torch.zeros(3, 0, 4, dtype=torch.float64)).shape == (3, 0)
    with pytest.raises(ValueError, match="route"):
        route_svdvals(torch.ones(1, 2, 2, dtype=torch.float64), route="qr")


def test_svdvals_on_the_cpu_is_lapack_and_recorded():
    a = _blocks((3, 4, 6))
    with recording() as used:
        got = svdvals(torch.from_numpy(a))
    np.testing.assert_allclose(got, np.linalg.svd(a, compute_uv=False), rtol=1e-13)
    assert used == {"numpy-lapack"}
    with prefer(backend="torch-eigvalsh"), recording() as used:
        got = svdvals(torch.from_numpy(a))
    np.testing.assert_allclose(got, np.linalg.svd(a, compute_uv=False), rtol=1e-12)
    assert used == {"torch-eigvalsh"}


# --- batching within the memory budget --------------------------------------------------------


def test_plan_batch():
    assert plan_batch(100, 10, 5, None, 1000) == 100
    assert plan_batch(100, 10, 5, 150, 1000) == 10
    assert plan_batch(100, 10, 5, 3, 1000) == 1  # never below one matrix
    assert plan_batch(100, 10, 5, None, 7) == 7  # the routine's 32-bit limit
    assert plan_batch(3, 10, 5, 10**9, 1000) == 3


class CountingSolver:
    """numpy's LAPACK with cuSOLVER-like affine workspace: records every call's batch."""

    name = "numpy-lapack"

    def __init__(self, per_matrix: int, fixed: int):
        self.per_matrix, self.fixed, self.batches = per_matrix, fixed, []

    def max_batch(self, n):
        return 10**9

    def workspace_bytes(self, a):
        return self.fixed + self.per_matrix * a.shape[0]

    def eigvalsh(self, a):
        self.batches.append(a.shape[0])
        return NumpyLapack().eigvalsh(a)


@pytest.mark.parametrize("budget", [None, 10**9, 200_000, 50_000, 1])
def test_batches_stay_within_the_budget(budget):
    b = torch.from_numpy(_blocks((37, 6, 9)))
    solver = CountingSolver(per_matrix=3000, fixed=20_000)
    got = route_svdvals(b, route="doubled", budget=budget, selection=Selection(solver))
    np.testing.assert_allclose(got.numpy(), np.linalg.svd(b.numpy(), compute_uv=False), rtol=1e-12)
    assert sum(solver.batches) == 37
    n = 15
    per_matrix = n * n * 16 + n * 8 + 4
    for batch in solver.batches:
        if budget is not None and batch > 1:
            assert batch * per_matrix + solver.workspace_bytes(torch.zeros(batch)) <= budget
    if budget is None or budget >= 10**9:
        assert solver.batches == [37]
    if budget == 1:
        assert solver.batches == [1] * 37


def test_cusolver_batches_within_budget_end_to_end(fake_cusolver, fake_hooks):
    hooks = fake_hooks
    b = torch.from_numpy(_blocks((25, 5, 7)))
    want = np.linalg.svd(b.numpy(), compute_uv=False)
    before = hooks.fake_solver_calls()
    n = 12
    one = n * n * 16 + n * 8 + 4 + (n * n * 16 + 64)  # storage + device workspace per matrix
    budget = 6 * one + 256 + 96  # six matrices per call (plus the workspace's fixed part)
    with recording() as used:
        got = route_svdvals(b, budget=budget, selection=Selection(SyevBatched(fake_cusolver)))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-13 * want.max())
    assert used == {"cusolver-syevBatched"}
    calls = hooks.fake_solver_calls() - before
    assert calls == 5  # 6+6+6+6+1: never more than the budget holds


# --- fallback at run time ------------------------------------------------------------------------


def test_a_failing_call_is_redone_by_torch_and_not_retried(fake_cusolver, fake_hooks):
    hooks = fake_hooks
    fake_cusolver.cdll.fake_fail(0, 3)  # the last matrix "did not converge"
    b = torch.from_numpy(_blocks((4, 3, 5)))
    want = np.linalg.svd(b.numpy(), compute_uv=False)
    selection = Selection(HeevjBatched(fake_cusolver))
    with recording() as used:
        got = route_svdvals(b, selection=selection)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert used == {"torch-eigvalsh"}
    (failure,) = eigensolvers.runtime_failures()
    assert "cusolver-heevjBatched" in failure and "info[3] = 3" in failure
    # matrices of that size are not sent to the routine again; other sizes are
    calls = hooks.fake_solver_calls()
    fake_cusolver.cdll.fake_fail(0, 0)
    with recording() as used:
        route_svdvals(b, selection=selection)
        route_svdvals(torch.from_numpy(_blocks((2, 4, 5))), selection=selection)
    assert used == {"torch-eigvalsh", "cusolver-heevjBatched"}
    assert hooks.fake_solver_calls() == calls + 1


def test_recording_is_per_context_and_nests():
    a = torch.from_numpy(_blocks((2, 3, 3)))
    with recording() as outer:
        with recording() as inner:
            svdvals(a)
        with prefer(backend="torch-eigvalsh"):
            svdvals(a)
    assert inner == {"numpy-lapack"}
    assert outer == {"numpy-lapack", "torch-eigvalsh"}
    assert eigensolvers._logs == []


# --- selection ---------------------------------------------------------------------------------


def test_cpu_selection_and_its_overrides():
    assert isinstance(select("cpu", torch.complex128).solver, NumpyLapack)
    with prefer(backend="torch-eigvalsh"):
        assert isinstance(select("cpu", torch.complex128).solver, TorchEigvalsh)
    with prefer(backend="cusolver-syevBatched"), pytest.raises(ConfigError, match="CPU"):
        select("cpu", torch.complex128)
    with pytest.raises(ConfigError, match="unknown eigensolver"), prefer(backend="magma"):
        pass
    with pytest.raises(ConfigError, match="unknown route"), prefer(route="qr"):
        pass


def test_environment_variable_forces_a_backend(monkeypatch):
    monkeypatch.setenv("CONVAUDIT_EIGENSOLVER", "torch-eigvalsh")
    assert eigensolvers.preference().backend == "torch-eigvalsh"
    a = torch.from_numpy(_blocks((2, 3, 4)))
    with recording() as used:
        svdvals(a)
        with prefer(route="gram"):  # keeps the forced backend
            assert eigensolvers.preference() == eigensolvers.Preference("torch-eigvalsh", "gram")
    assert used == {"torch-eigvalsh"}
    monkeypatch.setenv("CONVAUDIT_EIGENSOLVER", "magma")
    with pytest.raises(ConfigError, match="CONVAUDIT_EIGENSOLVER"):
        svdvals(a)


def test_detection_on_this_torch_says_why_cusolver_is_unavailable(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: see test_eigensolvers_gpu.py")
    with pytest.raises(CusolverUnavailable) as exc:
        eigensolvers.torch_cusolver()
    assert str(exc.value) in ("torch is a CPU-only build", "torch sees no CUDA device")
    selection = select("cuda", torch.complex128)
    assert isinstance(selection.solver, TorchEigvalsh)
    assert [s.split(":")[0] for s in selection.skipped] == [
        "cusolver-syevBatched",
        "cusolver-heevjBatched",
    ]
    with prefer(backend="cusolver-syevBatched"), pytest.raises(ConfigError, match="not available"):
        select("cuda", torch.complex128)


def test_detection_refuses_rocm_and_cpu_only_builds(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.2.0", raising=False)
    with pytest.raises(CusolverUnavailable, match="ROCm"):
        eigensolvers._open_torch_cusolver()
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(CusolverUnavailable, match="CPU-only"):
        eigensolvers._open_torch_cusolver()
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CusolverUnavailable, match="no CUDA device"):
        eigensolvers._open_torch_cusolver()


def test_non_cuda_devices_use_torch():
    selection = eigensolvers._select(torch.device("meta"), torch.complex128, None)
    assert isinstance(selection.solver, TorchEigvalsh)
    assert "not a CUDA device" in selection.skipped[0]


@pytest.fixture
def host_cuda(monkeypatch):
    """Selection as on a CUDA device, with the stand-in library as torch's libcusolver and the
    self-test run on host tensors."""
    real_self_test = eigensolvers.self_test

    def use(lib):
        monkeypatch.setattr(eigensolvers, "torch_cusolver", lambda: lib)
        monkeypatch.setattr(
            eigensolvers,
            "self_test",
            lambda solver, device, dtype: real_self_test(solver, torch.device("cpu"), dtype),
        )
        return lambda **kw: eigensolvers._select(torch.device("cuda", 0), torch.complex128, **kw)

    return use


def test_cuda_selection_order_and_reasons(host_cuda, fake_cusolver, old_cusolver_path):
    from convaudit.engine.spectrum.cusolver import open_library

    choose = host_cuda(fake_cusolver)
    selection = choose(forced=None)
    assert isinstance(selection.solver, SyevBatched) and selection.skipped == ()
    assert selection.library == fake_cusolver.describe()
    assert isinstance(choose(forced="cusolver-heevjBatched").solver, HeevjBatched)
    assert isinstance(choose(forced="torch-eigvalsh").solver, TorchEigvalsh)

    choose = host_cuda(open_library(str(old_cusolver_path)))
    selection = choose(forced=None)
    assert isinstance(selection.solver, HeevjBatched)
    (why,) = selection.skipped
    assert why.startswith("cusolver-syevBatched:") and "11.7.1" in why
    with pytest.raises(ConfigError, match="cusolverDnXsyevBatched"):
        choose(forced="cusolver-syevBatched")


def test_a_routine_that_fails_its_self_test_is_skipped(host_cuda, fake_cusolver):
    choose = host_cuda(fake_cusolver)
    fake_cusolver.cdll.fake_fail(7, 0)  # CUSOLVER_STATUS_INTERNAL_ERROR on every solve
    selection = choose(forced=None)
    assert isinstance(selection.solver, TorchEigvalsh)
    assert len(selection.skipped) == 2
    assert all("self-test failed" in s and "INTERNAL_ERROR" in s for s in selection.skipped)


def test_self_test_catches_wrong_eigenvalues():
    class Wrong:
        name = "wrong"

        def eigvalsh(self, a):
            return torch.linalg.eigvalsh(a) * (1 + 1e-6)

    assert "off by" in eigensolvers.self_test(Wrong(), torch.device("cpu"), torch.complex128)
    assert eigensolvers.self_test(TorchEigvalsh(), torch.device("cpu"), torch.float32) is None


def test_debug_lines_say_what_was_chosen_and_what_ran():
    lines = eigensolvers.debug_lines("cpu", {"numpy-lapack"})
    assert lines == ["eigensolver on cpu: numpy-lapack", "eigensolvers that ran: numpy-lapack"]
    assert eigensolvers.debug_lines("cpu", set())[-1].endswith("none (no spectrum)")


# --- the report -------------------------------------------------------------------------------


def test_analysis_and_json_report_name_the_backend(tmp_path):
    from convaudit.analysis import analyse
    from convaudit.report.interface import RenderOptions
    from convaudit.report.json import render_spectrum_json, spectrum_schema

    report = analyse("sample_models/resnet_tiny.onnx", layers="stem|head")
    assert report.eigensolvers == ("numpy-lapack",)
    doc = json.loads(render_spectrum_json([report], RenderOptions()))
    assert doc["options"]["backend"] == "numpy-lapack"
    jsonschema.validate(doc, spectrum_schema())
    from dataclasses import replace

    mixed = replace(report, eigensolvers=("torch-eigvalsh", "cusolver-syevBatched"))
    none = replace(report, eigensolvers=())
    doc = json.loads(render_spectrum_json([mixed, none], RenderOptions()))
    assert doc["options"]["backend"] == "cusolver-syevBatched+torch-eigvalsh"
    jsonschema.validate(doc, spectrum_schema())
    doc = json.loads(render_spectrum_json([none], RenderOptions()))
    assert doc["options"]["backend"] is None
    jsonschema.validate(doc, spectrum_schema())
    doc["options"]["backend"] = "magma"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, spectrum_schema())
