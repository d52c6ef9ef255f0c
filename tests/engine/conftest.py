"""Engine test fixtures: a host stand-in for libcusolver (fake_cusolver.c), compiled once."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

FAKE_SOURCE = Path(__file__).with_name("fake_cusolver.c")


def _compile(tmp_path_factory: pytest.TempPathFactory, name: str, *flags: str) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler for the stand-in cuSOLVER library")
    target = tmp_path_factory.mktemp("fake_cusolver") / f"lib{name}.so"
    cmd = [compiler, "-shared", "-fPIC", "-O2", *flags, "-o", str(target), str(FAKE_SOURCE), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True)
    return target


@pytest.fixture(scope="session")
def fake_cusolver_path(tmp_path_factory) -> Path:
    """cuSOLVER 11.7.1: both batched routines."""
    return _compile(tmp_path_factory, "fakecusolver")


@pytest.fixture(scope="session")
def old_cusolver_path(tmp_path_factory) -> Path:
    """cuSOLVER 11.6.0: no cusolverDnXsyevBatched, the Jacobi routines only."""
    return _compile(tmp_path_factory, "oldcusolver", "-DFAKE_NO_XSYEV", "-DFAKE_VERSION=11600")


@pytest.fixture
def fake_cusolver(fake_cusolver_path):
    """The opened stand-in library; failure injection is reset after each test."""
    from convaudit.engine.spectrum.cusolver import open_library

    lib = open_library(str(fake_cusolver_path))
    yield lib
    lib.cdll.fake_fail(0, 0)


@pytest.fixture
def fake_hooks(fake_cusolver) -> ctypes.CDLL:
    """The stand-in's test hooks: fake_last_stream(), fake_solver_calls(), fake_fail()."""
    cdll = fake_cusolver.cdll
    cdll.fake_last_stream.restype = ctypes.c_void_p
    cdll.fake_solver_calls.restype = ctypes.c_long
    return cdll
