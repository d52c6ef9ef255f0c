"""The cuSOLVER ctypes binding without a GPU: prototypes against the documented C signatures,
and every call end to end against a host stand-in library written from the documented
contract (tests/engine/fake_cusolver.c), checked against numpy's LAPACK."""

from __future__ import annotations

import ctypes
import ctypes.util
import re

import numpy as np
import pytest
import torch

from convaudit.engine.spectrum import cusolver
from convaudit.engine.spectrum.cusolver import (
    HEEVJ_ROUTINES,
    PROTOTYPES,
    CusolverError,
    CusolverUnavailable,
    HeevjBatched,
    SyevBatched,
    bind,
    open_library,
)

# The C prototypes as cuSOLVER's documentation and cusolverDn.h / cusolver_common.h give them.
DOCUMENTED = """
cusolverStatus_t cusolverGetVersion(int *version);
cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *handle);
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t handle);
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t streamId);
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t *params);
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t params);
cusolverStatus_t cusolverDnCreateSyevjInfo(syevjInfo_t *info);
cusolverStatus_t cusolverDnDestroySyevjInfo(syevjInfo_t info);
cusolverStatus_t cusolverDnXsyevjSetSortEig(syevjInfo_t info, int sort_eig);
cusolverStatus_t cusolverDnXsyevBatched_bufferSize(cusolverDnHandle_t handle,
    cusolverDnParams_t params, cusolverEigMode_t jobz, cublasFillMode_t uplo, int64_t n,
    cudaDataType dataTypeA, const void *A, int64_t lda, cudaDataType dataTypeW, const void *W,
    cudaDataType computeType, size_t *workspaceInBytesOnDevice, size_t *workspaceInBytesOnHost,
    int64_t batchSize);
cusolverStatus_t cusolverDnXsyevBatched(cusolverDnHandle_t handle, cusolverDnParams_t params,
    cusolverEigMode_t jobz, cublasFillMode_t uplo, int64_t n, cudaDataType dataTypeA, void *A,
    int64_t lda, cudaDataType dataTypeW, void *W, cudaDataType computeType,
    void *bufferOnDevice, size_t workspaceInBytesOnDevice, void *bufferOnHost,
    size_t workspaceInBytesOnHost, int *info, int64_t batchSize);
""" + "".join(
    f"""
cusolverStatus_t cusolverDn{t}{kind}jBatched_bufferSize(cusolverDnHandle_t handle,
    cusolverEigMode_t jobz, cublasFillMode_t uplo, int n, const {el} *A, int lda,
    const {real} *W, int *lwork, syevjInfo_t params, int batchSize);
cusolverStatus_t cusolverDn{t}{kind}jBatched(cusolverDnHandle_t handle, cusolverEigMode_t jobz,
    cublasFillMode_t uplo, int n, {el} *A, int lda, {real} *W, {el} *work, int lwork,
    int *info, syevjInfo_t params, int batchSize);
"""
    for t, kind, el, real in [
        ("S", "syev", "float", "float"),
        ("D", "syev", "double", "double"),
        ("C", "heev", "cuComplex", "float"),
        ("Z", "heev", "cuDoubleComplex", "double"),
    ]
)

#: ABI class of each C parameter type (opaque handles are pointers; enums are ints)
_C_ABI = {
    "int": "int32",
    "cusolverEigMode_t": "int32",
    "cublasFillMode_t": "int32",
    "cudaDataType": "int32",
    "int64_t": "int64",
    "size_t": "size_t",
    "cusolverDnHandle_t": "ptr",
    "cusolverDnParams_t": "ptr",
    "syevjInfo_t": "ptr",
    "cudaStream_t": "ptr",
}


def _documented() -> dict[str, list[tuple[str, str | None]]]:
    """name -> [(ABI class, pointee of an out-parameter or None)]"""
    out = {}
    text = " ".join(DOCUMENTED.split())
    for name, params in re.findall(r"cusolverStatus_t (\w+)\(([^)]*)\);", text):
        abi = []
        for param in params.split(","):
            ctype, pname = param.replace("const ", "").strip().rsplit(" ", 1)
            if pname.startswith("*"):
                base = ctype.strip()
                if base.endswith("_t"):
                    pointee = base  # the call writes a handle
                elif base in ("int", "size_t") and pname != "*info":
                    pointee = base  # a host out-parameter (version, lwork, workspace sizes)
                else:
                    pointee = None  # a device array: A, W, work, info, the workspaces
                abi.append(("ptr", pointee))
            else:
                abi.append((_C_ABI[ctype.strip()], None))
        out[name] = abi
    return out


def _ctypes_abi(argtype) -> tuple[str, str | None]:
    if argtype is ctypes.c_void_p:
        return "ptr", None
    if hasattr(argtype, "_type_") and isinstance(argtype._type_, type):  # POINTER(...)
        pointee = {ctypes.c_int: "int", ctypes.c_size_t: "size_t", ctypes.c_void_p: "handle"}
        return "ptr", pointee[argtype._type_]
    sizes = {ctypes.c_int: "int32", ctypes.c_int64: "int64", ctypes.c_size_t: "size_t"}
    return sizes[argtype], None


def test_prototypes_match_the_documented_signatures():
    documented = _documented()
    assert set(documented) == set(PROTOTYPES)
    for name, argtypes in PROTOTYPES.items():
        got = [_ctypes_abi(a) for a in argtypes]
        want = documented[name]
        assert [g[0] for g in got] == [w[0] for w in want], name
        for (_, g_pointee), (_, w_pointee), argtype in zip(got, want, argtypes, strict=True):
            if w_pointee in ("int", "size_t"):  # written by the call: a typed pointer for byref
                assert g_pointee == w_pointee, (name, argtype)
            elif w_pointee is not None:  # cusolverDnHandle_t* etc.: the call writes a handle
                assert g_pointee == "handle", (name, argtype)


def test_enum_values_are_the_headers():
    # library_types.h, cusolver_common.h, cublas_api.h
    assert (cusolver.CUDA_R_32F, cusolver.CUDA_R_64F) == (0, 1)
    assert (cusolver.CUDA_C_32F, cusolver.CUDA_C_64F) == (4, 5)
    assert cusolver.CUSOLVER_EIG_MODE_NOVECTOR == 0
    assert cusolver.CUBLAS_FILL_MODE_LOWER == 0
    assert cusolver.XSYEV_TYPES[torch.complex128] == (5, 1, 5)
    assert cusolver.XSYEV_TYPES[torch.complex64] == (4, 0, 4)


def test_bind_sets_argtypes_and_restype(fake_cusolver_path):
    cdll = ctypes.CDLL(str(fake_cusolver_path))
    present = bind(cdll)
    assert present == set(PROTOTYPES)
    for name in present:
        fn = getattr(cdll, name)
        assert fn.argtypes == list(PROTOTYPES[name]) and fn.restype is ctypes.c_int


def test_library_without_syev_batched_is_detected(old_cusolver_path):
    lib = open_library(str(old_cusolver_path))
    assert lib.version == 11600 and "11.6.0" in lib.describe()
    why = SyevBatched.missing(lib)
    assert why is not None and "cusolverDnXsyevBatched" in why and "11.7.1" in why
    assert HeevjBatched.missing(lib) is None


def test_unloadable_or_foreign_library_is_unavailable(tmp_path):
    with pytest.raises(CusolverUnavailable, match="cannot load"):
        open_library(str(tmp_path / "libcusolver.so.11"))
    with pytest.raises(CusolverUnavailable, match="not a cuSOLVER library"):
        open_library(ctypes.util.find_library("m") or "libm.so.6")


def test_loaded_library_is_found_in_the_process_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n"
        "7f02-7f03 r-xp 0 08:01 2 /site/nvidia/cu13/lib/libcusolver.so.12\n"
        "7f04-7f05 r--p 0 08:01 2 /site/nvidia/cu13/lib/libcusolver.so.12\n"
    )
    assert cusolver._loaded_paths("libcusolver.so", str(maps)) == [
        "/site/nvidia/cu13/lib/libcusolver.so.12"
    ]
    assert cusolver._loaded_paths("libcusolver.so", str(tmp_path / "absent")) == []


def _hermitian(batch: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    x = torch.randn(batch, n, n, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return ((x + x.mH) / 2).contiguous()


DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]


@pytest.mark.parametrize("routine", [SyevBatched, HeevjBatched], ids=lambda r: r.name)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 7, 33])
def test_routines_end_to_end_match_lapack(fake_cusolver, routine, dtype, n):
    a = _hermitian(5, n, dtype, seed=n)
    want = np.linalg.eigvalsh(a.numpy().astype(np.complex128))
    got = routine(fake_cusolver).eigvalsh(a.clone())
    assert got.dtype == a.real.dtype and got.shape == (5, n)
    tol = 1e-12 if dtype in (torch.float64, torch.complex128) else 1e-5
    assert np.max(np.abs(got.numpy() - want)) <= tol * np.abs(want).max()


@pytest.mark.parametrize("routine", [SyevBatched, HeevjBatched], ids=lambda r: r.name)
def test_row_major_hermitian_needs_no_transpose(fake_cusolver, routine):
    # cuSOLVER reads column-major, lower triangle: that is the row-major upper triangle,
    # conjugated. Garbage in the row-major lower triangle (never read) changes nothing, and
    # the eigenvalues are those of A, not of a mangled matrix.
    a = _hermitian(3, 6, torch.complex128, seed=4)
    want = np.linalg.eigvalsh(a.numpy())
    spoiled = a.clone()
    rows, cols = torch.tril_indices(6, 6, offset=-1)
    spoiled[:, rows, cols] = 1e3 + 7j  # the row-major strictly lower part
    got = routine(fake_cusolver).eigvalsh(spoiled)
    assert np.max(np.abs(got.numpy() - want)) <= 1e-12 * np.abs(want).max()


def test_calls_use_the_given_stream_and_report_workspace(fake_cusolver, fake_hooks):
    hooks = fake_hooks
    a = _hermitian(4, 5, torch.complex128)
    before = hooks.fake_solver_calls()
    SyevBatched(fake_cusolver).eigvalsh(a.clone())
    assert hooks.fake_solver_calls() == before + 1
    assert hooks.fake_last_stream() is None  # a host stand-in: the null stream (0)
    # device bytes = batch·(n²·16 + 64) + 256, host 96 (fake_cusolver.c's formula)
    assert SyevBatched(fake_cusolver).workspace_bytes(a) == 4 * (25 * 16 + 64) + 256 + 96
    # Jacobi lwork = batch·(n² + 16) + 32 elements of 16 bytes
    assert HeevjBatched(fake_cusolver).workspace_bytes(a) == (4 * (25 + 16) + 32) * 16


def test_error_status_and_non_convergence_raise(fake_cusolver):
    a = _hermitian(3, 4, torch.float64)
    fake_cusolver.cdll.fake_fail(6, 0)  # CUSOLVER_STATUS_EXECUTION_FAILED
    with pytest.raises(CusolverError, match="EXECUTION_FAILED"):
        SyevBatched(fake_cusolver).eigvalsh(a.clone())
    fake_cusolver.cdll.fake_fail(0, 5)  # the last matrix did not converge
    with pytest.raises(CusolverError, match=r"info\[2\] = 5"):
        HeevjBatched(fake_cusolver).eigvalsh(a.clone())


def test_bad_input_is_refused_before_any_call(fake_cusolver):
    with pytest.raises(ValueError, match="contiguous"):
        SyevBatched(fake_cusolver).eigvalsh(_hermitian(2, 4, torch.float64).mT)
    with pytest.raises(ValueError, match="dtype"):
        SyevBatched(fake_cusolver).eigvalsh(torch.zeros(1, 2, 2, dtype=torch.float16))


def test_batch_limits_keep_32_bit_sizes():
    assert SyevBatched.max_batch(SyevBatched, 1024) * 1024 * 1024 <= 2**31 - 1
    assert HeevjBatched.max_batch(HeevjBatched, 64) * 4 * 64 * 64 <= 2**31 - 1
    assert SyevBatched.max_batch(SyevBatched, 100_000) == 1


def test_every_dtype_has_a_jacobi_routine():
    assert set(HEEVJ_ROUTINES) == set(cusolver.XSYEV_TYPES) == set(DTYPES)
