"""Which batched Hermitian eigensolver computes the full spectra: selection, fallback, batches.

Backends; their names are what the JSON report's ``options.backend`` and ``--debug`` say:

- ``cusolver-syevBatched``: cuSOLVER's batched divide and conquer (:mod:`.cusolver`), CUDA >= 12.6.2.
- ``cusolver-heevjBatched``: cuSOLVER's batched Jacobi.
- ``torch-eigvalsh``: ``torch.linalg.eigvalsh``. On CUDA it uses cuSOLVER's batched routine only
  up to n = 32 and loops over ``syevd`` per matrix beyond (pytorch/pytorch#175585): about 1 ms
  per 64×64 block on an H200, which is why the two above exist.
- ``numpy-lapack``: numpy's LAPACK on the CPU (``gesdd`` for singular values, see
  :func:`.routes.svdvals`).

On CUDA the first cuSOLVER routine that loads, exports its symbols and passes a self-test
against ``torch.linalg.eigvalsh`` on the device is used, else torch's (a ROCm or CPU-only
torch, no libcusolver found, or neither routine exported or passing). A call that fails at run time
(an error status, a matrix that did not converge) is redone by ``torch.linalg.eigvalsh``, and
that routine is not tried again for matrices of that size on that device. :func:`recording`
collects which backends actually ran.

The routes from singular values to these eigenproblems are in :mod:`.routes`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from convaudit.engine.spectrum import cusolver
from convaudit.engine.spectrum.cusolver import CusolverError, CusolverUnavailable, Library
from convaudit.errors import ConfigError

BACKENDS = ("cusolver-syevBatched", "cusolver-heevjBatched", "torch-eigvalsh", "numpy-lapack")
ROUTES = ("doubled", "gram")


class Solver(Protocol):
    """Ascending eigenvalues of a contiguous ``(batch, n, n)`` Hermitian batch."""

    name: str

    def max_batch(self, n: int) -> int: ...

    def workspace_bytes(self, a: torch.Tensor) -> int: ...

    def eigvalsh(self, a: torch.Tensor) -> torch.Tensor: ...


class TorchEigvalsh:
    name = "torch-eigvalsh"

    def max_batch(self, n: int) -> int:
        return sys.maxsize

    def workspace_bytes(self, a: torch.Tensor) -> int:
        return a.numel() * a.element_size()  # an estimate (its copy of the batch): torch won't say

    def eigvalsh(self, a: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(a)


class NumpyLapack:
    name = "numpy-lapack"

    def max_batch(self, n: int) -> int:
        return sys.maxsize

    def workspace_bytes(self, a: torch.Tensor) -> int:
        return a.numel() * a.element_size()

    def eigvalsh(self, a: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.linalg.eigvalsh(a.numpy()))


@dataclass(frozen=True)
class Selection:
    """The solver for one (device, dtype), with why the ones ahead of it were not used."""

    solver: Solver
    library: str | None = None  # e.g. "cuSOLVER 11.7.1 at /…/libcusolver.so.11"
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preference:
    backend: str | None = None  # None: the first available (see the module docstring)
    route: str = "doubled"


_lock = threading.RLock()
_preference: Preference | None = None  # None: CONVAUDIT_EIGENSOLVER, else the default
_selections: dict[tuple[str, torch.dtype, str | None], Selection] = {}
_library: Library | CusolverUnavailable | None = None
_broken: set[tuple[str, str, torch.dtype, int]] = set()  # (solver, device, dtype, n)
_failures: list[str] = []
_logs: list[set[str]] = []


@contextlib.contextmanager
def prefer(backend: str | None = None, route: str | None = None) -> Iterator[None]:
    """Force a backend and/or route meanwhile (benchmarks and device checks compare them);
    None keeps the one in force."""
    global _preference
    _check(backend, route)
    previous, current = _preference, preference()
    _preference = Preference(backend or current.backend, route or current.route)
    try:
        yield
    finally:
        _preference = previous


def preference() -> Preference:
    """The backend and route in force: :func:`prefer`'s, else ``CONVAUDIT_EIGENSOLVER`` (a
    backend name: the escape hatch should a cuSOLVER routine misbehave on some driver)."""
    if _preference is not None:
        return _preference
    backend = os.environ.get("CONVAUDIT_EIGENSOLVER") or None
    _check(backend, None, where="CONVAUDIT_EIGENSOLVER")
    return Preference(backend)


def _check(backend: str | None, route: str | None, where: str = "eigensolver") -> None:
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown {where} {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if route is not None and route not in ROUTES:
        raise ConfigError(f"unknown route {route!r}", hint=f"use one of {', '.join(ROUTES)}")


@contextlib.contextmanager
def recording() -> Iterator[set[str]]:
    """Collect the names of the backends that run meanwhile (in any thread)."""
    used: set[str] = set()
    with _lock:
        _logs.append(used)
    try:
        yield used
    finally:
        with _lock:
            _logs[:] = [log for log in _logs if log is not used]


def record(name: str) -> None:
    """Note that backend ``name`` ran (for every active :func:`recording`)."""
    with _lock:
        for log in _logs:
            log.add(name)


def runtime_failures() -> tuple[str, ...]:
    with _lock:
        return tuple(_failures)


def torch_cusolver() -> Library:
    """The libcusolver of the installed torch (opened once), or CusolverUnavailable."""
    global _library
    with _lock:
        if _library is None:
            try:
                _library = _open_torch_cusolver()
            except CusolverUnavailable as exc:
                _library = exc
        if isinstance(_library, CusolverUnavailable):
            raise _library
        return _library


def _open_torch_cusolver() -> Library:
    if getattr(torch.version, "hip", None):
        raise CusolverUnavailable("torch is a ROCm build (hipSOLVER, not cuSOLVER)")
    if torch.version.cuda is None:
        raise CusolverUnavailable("torch is a CPU-only build")
    if not torch.cuda.is_available():
        raise CusolverUnavailable("torch sees no CUDA device")
    # torch loads libcusolver lazily, with its CUDA linear algebra: one tiny call brings it in
    torch.linalg.eigvalsh(torch.ones(1, 1, dtype=torch.float64, device="cuda"))
    path = cusolver.find_library()
    if path is None:
        raise CusolverUnavailable(
            "no libcusolver among the loaded libraries, torch's lib folder, the nvidia "
            "wheels or the linker path"
        )
    return cusolver.open_library(path)


def self_test(solver: Solver, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when ``solver`` agrees with torch.linalg.eigvalsh on a random batch, else what went
    wrong. n = 40: past the n <= 32 that some cuSOLVER versions documented for batched Jacobi."""
    x = torch.randn(3, 40, 40, dtype=dtype, generator=torch.Generator().manual_seed(0))
    a = ((x + x.mH) / 2).to(device)
    want = torch.linalg.eigvalsh(a)
    try:
        got = solver.eigvalsh(a.clone())
    except (CusolverError, RuntimeError, ValueError) as exc:
        return f"self-test failed: {exc}"
    err = float((got - want).abs().max() / want.abs().max())
    tol = 1e-10 if dtype in (torch.float64, torch.complex128) else 1e-4
    if not err <= tol:  # also NaN
        return f"self-test off by {err:.1e} (relative) from torch.linalg.eigvalsh"
    return None


def _device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return torch.device("cuda", index)
    return device


def select(device: torch.device | str, dtype: torch.dtype) -> Selection:
    """The eigensolver for Hermitian batches of ``dtype`` on ``device`` (cached)."""
    device = _device(device)
    forced = preference().backend
    key = (str(device), dtype, forced)
    with _lock:
        if key not in _selections:
            _selections[key] = _select(device, dtype, forced)
        return _selections[key]


def _select(device: torch.device, dtype: torch.dtype, forced: str | None) -> Selection:
    skipped: list[str] = []
    if device.type == "cpu":
        candidates: list[Solver] = [NumpyLapack(), TorchEigvalsh()]
        if forced is None or forced in (c.name for c in candidates):
            return Selection(next(c for c in candidates if forced in (None, c.name)))
        raise ConfigError(f"eigensolver {forced} does not run on the CPU")
    library: Library | None = None
    if device.type != "cuda":
        skipped.append(f"cuSOLVER routines: {device.type} is not a CUDA device")
    else:
        try:
            library = torch_cusolver()
        except CusolverUnavailable as exc:
            skipped += [f"{routine.name}: {exc}" for routine in cusolver.ROUTINES]
    for routine in cusolver.ROUTINES:
        if library is None or forced not in (None, routine.name):
            continue
        why = routine.missing(library) or self_test(routine(library), device, dtype)
        if why is None:
            return Selection(routine(library), library.describe(), tuple(skipped))
        skipped.append(f"{routine.name}: {why}")
    described = None if library is None else library.describe()
    if forced not in (None, TorchEigvalsh.name):
        reasons = "; ".join(s for s in skipped if s.startswith(str(forced))) or "CPU only"
        raise ConfigError(f"eigensolver {forced} is not available on {device}: {reasons}")
    return Selection(TorchEigvalsh(), described, tuple(skipped))


def plan_batch(
    total: int, per_matrix: int, workspace_one: int, budget: int | None, max_batch: int
) -> int:
    """Matrices per call so that their storage (``per_matrix`` bytes each) and the workspace
    fit in ``budget``: cuSOLVER's grows affinely with the batch from ``workspace_one`` (one
    matrix), so ``workspace_one`` per matrix bounds it. At least 1, at most ``max_batch``."""
    fit = total if budget is None else budget // max(1, per_matrix + workspace_one)
    return max(1, min(total, max_batch, fit))


def batched_eigvalsh(
    build: Callable[[slice], torch.Tensor],
    total: int,
    *,
    budget: int | None = None,
    selection: Selection | None = None,
) -> torch.Tensor:
    """Ascending eigenvalues ``(total, n)`` of the Hermitian matrices that ``build(part)`` makes
    for a slice of ``range(total)``, in calls whose matrices, eigenvalues and workspace stay
    within ``budget`` bytes (one matrix per call at the least)."""
    first = build(slice(0, 1))
    n, dtype, device = int(first.shape[-1]), first.dtype, first.device
    solver = (selection or select(device, dtype)).solver
    if (solver.name, str(device), dtype, n) in _broken:
        solver = TorchEigvalsh()
    real = torch.empty(0, dtype=dtype).real.element_size()
    per_matrix = n * n * first.element_size() + n * real + 4  # matrix, eigenvalues, info
    try:
        size = plan_batch(
            total, per_matrix, solver.workspace_bytes(first), budget, solver.max_batch(n)
        )
    except CusolverError as exc:
        solver, size = _demote(solver, device, dtype, n, exc), 1
    results: list[torch.Tensor] = []
    start = 0
    while start < total:
        part = slice(start, min(total, start + size))
        a = build(part)
        try:
            if budget is not None and size > 1:
                need = (part.stop - part.start) * per_matrix + solver.workspace_bytes(a)
                if need > budget:
                    size //= 2
                    continue
            values = solver.eigvalsh(a)
        except CusolverError as exc:
            solver = _demote(solver, device, dtype, n, exc)
            values = solver.eigvalsh(build(part))  # `a` may have been overwritten
        record(solver.name)
        results.append(values)
        start = part.stop
    return torch.cat(results)


def _demote(
    solver: Solver, device: torch.device, dtype: torch.dtype, n: int, exc: Exception
) -> Solver:
    with _lock:
        _broken.add((solver.name, str(device), dtype, n))
        _failures.append(f"{solver.name} on {device}, {dtype}, n={n}: {exc}; redone by torch")
    return TorchEigvalsh()


def debug_lines(device: str, used: set[str] | frozenset[str]) -> list[str]:
    """What ``--debug`` prints: the selection for the spectra's complex128 blocks, and what ran."""
    selection = select(device, torch.complex128)
    head = f"eigensolver on {device}: {selection.solver.name}"
    lines = [head + (f" ({selection.library})" if selection.library else "")]
    lines += [f"eigensolver not used: {why}" for why in selection.skipped]
    lines += [f"eigensolver fallback: {why}" for why in runtime_failures()]
    lines.append("eigensolvers that ran: " + (", ".join(sorted(used)) or "none (no spectrum)"))
    return lines
