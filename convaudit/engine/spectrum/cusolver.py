"""ctypes binding to cuSOLVER's batched symmetric/Hermitian eigensolvers (eigenvalues only).

The library is the ``libcusolver`` that the installed torch already loads: no new dependency.
Two routines, each diagonalising a contiguous batch of same-sized matrices in one call on the
stream it is given (torch's current stream):

- ``cusolverDnXsyevBatched`` (64-bit API, cuSOLVER >= 11.7.1, i.e. CUDA 12.6 Update 2): batched
  divide and conquer, any n; the problem is limited to n·lda·batch <= INT32_MAX.
- ``cusolverDn{S,D}syevjBatched`` / ``cusolverDn{C,Z}heevjBatched``: batched Jacobi; 32-bit
  sizes (n, lda, lwork, batch are ``int``).

Layout: cuSOLVER reads each matrix column-major with lda = n, torch stores it row-major, so
cuSOLVER sees the transpose. For a Hermitian A the transpose is conj(A), whose eigenvalues are
A's (they are real: conj(A)·x̄ = λ·x̄), and the full matrix is stored, so the lower triangle it
reads (fill mode LOWER) is conj(A)'s own. No copy is needed to change layout.

``PROTOTYPES`` lists the documented C signatures as ctypes types (tests check them against the
prototypes' text). Enum values are those of library_types.h, cusolver_common.h and cublas_api.h.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

# cudaDataType (library_types.h)
CUDA_R_32F, CUDA_R_64F, CUDA_C_32F, CUDA_C_64F = 0, 1, 4, 5
CUSOLVER_EIG_MODE_NOVECTOR = 0  # cusolverEigMode_t
CUBLAS_FILL_MODE_LOWER = 0  # cublasFillMode_t
CUSOLVER_STATUS_SUCCESS = 0
STATUS_NAMES = {
    1: "NOT_INITIALIZED",
    2: "ALLOC_FAILED",
    3: "INVALID_VALUE",
    4: "ARCH_MISMATCH",
    5: "MAPPING_ERROR",
    6: "EXECUTION_FAILED",
    7: "INTERNAL_ERROR",
    8: "MATRIX_TYPE_NOT_SUPPORTED",
    9: "NOT_SUPPORTED",
}
INT32_MAX = 2**31 - 1

_ptr, _int, _i64, _size = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_size_t
_out_ptr, _out_int, _out_size = (
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_int),
    ctypes.POINTER(ctypes.c_size_t),
)

#: Jacobi routine per dtype (the real ones are "sy", the complex ones "he")
HEEVJ_ROUTINES = {
    torch.float32: "cusolverDnSsyevjBatched",
    torch.float64: "cusolverDnDsyevjBatched",
    torch.complex64: "cusolverDnCheevjBatched",
    torch.complex128: "cusolverDnZheevjBatched",
}
#: (dataTypeA, dataTypeW, computeType) of cusolverDnXsyevBatched per dtype
XSYEV_TYPES = {
    torch.float32: (CUDA_R_32F, CUDA_R_32F, CUDA_R_32F),
    torch.float64: (CUDA_R_64F, CUDA_R_64F, CUDA_R_64F),
    torch.complex64: (CUDA_C_32F, CUDA_R_32F, CUDA_C_32F),
    torch.complex128: (CUDA_C_64F, CUDA_R_64F, CUDA_C_64F),
}

#: name -> argtypes; every routine returns cusolverStatus_t (an int enum)
PROTOTYPES: dict[str, tuple[Any, ...]] = {
    "cusolverGetVersion": (_out_int,),
    "cusolverDnCreate": (_out_ptr,),
    "cusolverDnDestroy": (_ptr,),
    "cusolverDnSetStream": (_ptr, _ptr),
    "cusolverDnCreateParams": (_out_ptr,),
    "cusolverDnDestroyParams": (_ptr,),
    "cusolverDnCreateSyevjInfo": (_out_ptr,),
    "cusolverDnDestroySyevjInfo": (_ptr,),
    "cusolverDnXsyevjSetSortEig": (_ptr, _int),
    # handle, params, jobz, uplo, n, dataTypeA, A, lda, dataTypeW, W, computeType,
    # workspaceInBytesOnDevice*, workspaceInBytesOnHost*, batchSize
    "cusolverDnXsyevBatched_bufferSize": (
        *(_ptr, _ptr, _int, _int, _i64, _int, _ptr, _i64, _int, _ptr, _int),
        *(_out_size, _out_size, _i64),
    ),
    # ..., bufferOnDevice, workspaceInBytesOnDevice, bufferOnHost, workspaceInBytesOnHost,
    # info, batchSize
    "cusolverDnXsyevBatched": (
        *(_ptr, _ptr, _int, _int, _i64, _int, _ptr, _i64, _int, _ptr, _int),
        *(_ptr, _size, _ptr, _size, _ptr, _i64),
    ),
}
for _routine in HEEVJ_ROUTINES.values():
    # handle, jobz, uplo, n, A, lda, W, lwork*, params, batchSize
    _query = f"{_routine}_bufferSize"
    PROTOTYPES[_query] = (_ptr, _int, _int, _int, _ptr, _int, _ptr, _out_int, _ptr, _int)
    # handle, jobz, uplo, n, A, lda, W, work, lwork, info, params, batchSize
    PROTOTYPES[_routine] = (_ptr, _int, _int, _int, _ptr, _int, _ptr, _ptr, _int, _ptr, _ptr, _int)
del _routine, _query
RESTYPE = ctypes.c_int


class CusolverUnavailable(Exception):
    """The routine cannot run here; ``str(exc)`` says why (shown by --debug)."""


class CusolverError(RuntimeError):
    """A cuSOLVER call returned an error status, or a matrix did not converge (info != 0)."""


def version_text(version: int | None) -> str:
    """CUSOLVER_VERSION (major·1000 + minor·100 + patch) as text."""
    if version is None:
        return "cuSOLVER (version unknown)"
    return f"cuSOLVER {version // 1000}.{version % 1000 // 100}.{version % 100}"


@dataclass
class Library:
    """An opened libcusolver: bound prototypes, version, and one handle per device."""

    path: str
    cdll: Any
    symbols: frozenset[str]
    version: int | None
    _sessions: dict[str, Session] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def has(self, name: str) -> bool:
        return name in self.symbols

    def describe(self) -> str:
        return f"{version_text(self.version)} at {self.path}"

    def call(self, name: str, *args: Any) -> None:
        status = int(getattr(self.cdll, name)(*args))
        if status != CUSOLVER_STATUS_SUCCESS:
            raise CusolverError(
                f"{name} returned CUSOLVER_STATUS_{STATUS_NAMES.get(status, status)}"
            )

    def session(self, device: torch.device) -> Session:
        """The handle (with params and Jacobi info) for ``device``, created once, kept for the
        process: destroying it at exit could run after CUDA's own teardown."""
        key = str(device)
        with self._lock:
            if key not in self._sessions:
                with _on_device(device):
                    self._sessions[key] = Session.create(self)
            return self._sessions[key]


@dataclass(frozen=True)
class Session:
    handle: int
    params: int
    jacobi: int

    @classmethod
    def create(cls, lib: Library) -> Session:
        handle, params, jacobi = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        lib.call("cusolverDnCreate", ctypes.byref(handle))
        if lib.has("cusolverDnCreateParams"):
            lib.call("cusolverDnCreateParams", ctypes.byref(params))
        if lib.has("cusolverDnCreateSyevjInfo"):
            lib.call("cusolverDnCreateSyevjInfo", ctypes.byref(jacobi))
            lib.call("cusolverDnXsyevjSetSortEig", jacobi, 1)  # ascending, as syevBatched
        return cls(handle.value or 0, params.value or 0, jacobi.value or 0)


def bind(cdll: Any) -> frozenset[str]:
    """Set argtypes/restype of every routine in PROTOTYPES that ``cdll`` exports."""
    present = set()
    for name, argtypes in PROTOTYPES.items():
        try:
            fn = getattr(cdll, name)
        except AttributeError:
            continue
        fn.argtypes = list(argtypes)
        fn.restype = RESTYPE
        present.add(name)
    return frozenset(present)


def open_library(path: str) -> Library:
    try:
        cdll = ctypes.CDLL(path)
    except OSError as exc:
        raise CusolverUnavailable(f"cannot load {path}: {exc}") from None
    symbols = bind(cdll)
    if "cusolverDnCreate" not in symbols:
        raise CusolverUnavailable(f"{path} is not a cuSOLVER library (no cusolverDnCreate)")
    version = None
    if "cusolverGetVersion" in symbols:
        out = ctypes.c_int()
        if cdll.cusolverGetVersion(ctypes.byref(out)) == CUSOLVER_STATUS_SUCCESS:
            version = out.value
    return Library(path, cdll, symbols, version)


def find_library() -> str | None:
    """The libcusolver torch uses: one already loaded (torch loads it lazily with its CUDA
    linalg library), else torch's lib folder, the nvidia-cusolver wheels, the linker path."""
    loaded = _loaded_paths("libcusolver.so")
    if loaded:
        return loaded[0]
    roots = [os.path.join(os.path.dirname(torch.__file__), "lib")]
    for entry in sys.path:
        roots += glob.glob(os.path.join(entry, "nvidia", "*", "lib"))
    for root in roots:
        found = sorted(glob.glob(os.path.join(root, "libcusolver.so*")))
        if found:
            return found[-1]
    return ctypes.util.find_library("cusolver")


def _loaded_paths(stem: str, maps: str = "/proc/self/maps") -> list[str]:
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            paths = {line.split()[-1] for line in f if stem in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith(stem))


@contextlib.contextmanager
def _on_device(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:  # a host stand-in for the library (tests): nothing to select
        yield


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def _real(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _check(a: torch.Tensor) -> tuple[int, int]:
    if a.ndim != 3 or a.shape[1] != a.shape[2] or not a.is_contiguous():
        raise ValueError(f"need a contiguous (batch, n, n) tensor, got {tuple(a.shape)}")
    if a.dtype not in XSYEV_TYPES:
        raise ValueError(f"unsupported dtype {a.dtype}")
    return int(a.shape[0]), int(a.shape[1])


def _finish(info: torch.Tensor, routine: str) -> None:
    """Raise on a non-zero info (this synchronises the stream: the host workspace stays alive
    in the caller's frame until then)."""
    bad = torch.nonzero(info).flatten()
    if bad.numel():
        k = int(bad[0])
        raise CusolverError(
            f"{routine}: info[{k}] = {int(info[k])} ({bad.numel()} of {info.numel()} matrices)"
        )


class SyevBatched:
    """cusolverDnXsyevBatched, eigenvalues only."""

    name = "cusolver-syevBatched"
    symbol = "cusolverDnXsyevBatched"

    def __init__(self, lib: Library):
        self.lib = lib

    @classmethod
    def missing(cls, lib: Library) -> str | None:
        if lib.has(cls.symbol) and lib.has(f"{cls.symbol}_bufferSize"):
            return None
        return f"{cls.symbol} is not in {lib.describe()} (needs cuSOLVER >= 11.7.1, CUDA >= 12.6.2)"

    def max_batch(self, n: int) -> int:
        return max(1, INT32_MAX // max(1, n * n))

    def _sizes(self, session: Session, a: torch.Tensor, w: torch.Tensor) -> tuple[int, int]:
        batch, n = _check(a)
        type_a, type_w, compute = XSYEV_TYPES[a.dtype]
        on_device, on_host = ctypes.c_size_t(), ctypes.c_size_t()
        self.lib.call(
            f"{self.symbol}_bufferSize",
            *(session.handle, session.params, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER),
            *(n, type_a, a.data_ptr(), n, type_w, w.data_ptr(), compute),
            *(ctypes.byref(on_device), ctypes.byref(on_host), batch),
        )
        return on_device.value, on_host.value

    def workspace_bytes(self, a: torch.Tensor) -> int:
        """Device + host workspace cuSOLVER asks for to solve the batch ``a``."""
        with _on_device(a.device):
            w = torch.empty(a.shape[:2], dtype=_real(a.dtype), device=a.device)
            return sum(self._sizes(self.lib.session(a.device), a, w))

    def eigvalsh(self, a: torch.Tensor) -> torch.Tensor:
        """Ascending eigenvalues ``(batch, n)`` of the Hermitian batch ``a`` (overwritten)."""
        batch, n = _check(a)
        session = self.lib.session(a.device)
        type_a, type_w, compute = XSYEV_TYPES[a.dtype]
        with _on_device(a.device):
            w = torch.empty(batch, n, dtype=_real(a.dtype), device=a.device)
            info = torch.zeros(batch, dtype=torch.int32, device=a.device)
            dev_bytes, host_bytes = self._sizes(session, a, w)
            dev_work = torch.empty(max(1, dev_bytes), dtype=torch.uint8, device=a.device)
            host_work = ctypes.create_string_buffer(max(1, host_bytes))
            self.lib.call("cusolverDnSetStream", session.handle, _stream(a.device))
            self.lib.call(
                self.symbol,
                *(session.handle, session.params, CUSOLVER_EIG_MODE_NOVECTOR),
                *(CUBLAS_FILL_MODE_LOWER, n, type_a, a.data_ptr(), n, type_w, w.data_ptr()),
                *(compute, dev_work.data_ptr(), dev_bytes, ctypes.addressof(host_work)),
                *(host_bytes, info.data_ptr(), batch),
            )
            _finish(info, self.symbol)
            del host_work  # only now: the call may read it until the stream has passed
        return w


class HeevjBatched:
    """cusolverDn{S,D}syevjBatched / {C,Z}heevjBatched (Jacobi), eigenvalues only."""

    name = "cusolver-heevjBatched"

    def __init__(self, lib: Library):
        self.lib = lib

    @classmethod
    def missing(cls, lib: Library) -> str | None:
        absent = [s for s in HEEVJ_ROUTINES.values() if not lib.has(s)]
        if not absent and lib.has("cusolverDnCreateSyevjInfo"):
            return None
        return f"{', '.join(absent) or 'cusolverDnCreateSyevjInfo'} not in {lib.describe()}"

    def max_batch(self, n: int) -> int:
        # lwork is an int too and grows with the batch (about n² elements per matrix): keep
        # a factor 4 away from its overflow
        return max(1, INT32_MAX // max(1, 4 * n * n))

    def _lwork(self, session: Session, a: torch.Tensor, w: torch.Tensor) -> int:
        batch, n = _check(a)
        lwork = ctypes.c_int()
        self.lib.call(
            f"{HEEVJ_ROUTINES[a.dtype]}_bufferSize",
            *(session.handle, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n),
            *(a.data_ptr(), n, w.data_ptr(), ctypes.byref(lwork), session.jacobi, batch),
        )
        if lwork.value < 0:
            raise CusolverError(f"{HEEVJ_ROUTINES[a.dtype]}_bufferSize: lwork {lwork.value}")
        return lwork.value  # in elements of a's dtype

    def workspace_bytes(self, a: torch.Tensor) -> int:
        with _on_device(a.device):
            w = torch.empty(a.shape[:2], dtype=_real(a.dtype), device=a.device)
            return self._lwork(self.lib.session(a.device), a, w) * a.element_size()

    def eigvalsh(self, a: torch.Tensor) -> torch.Tensor:
        batch, n = _check(a)
        session = self.lib.session(a.device)
        routine = HEEVJ_ROUTINES[a.dtype]
        with _on_device(a.device):
            w = torch.empty(batch, n, dtype=_real(a.dtype), device=a.device)
            info = torch.zeros(batch, dtype=torch.int32, device=a.device)
            lwork = self._lwork(session, a, w)
            work = torch.empty(max(1, lwork), dtype=a.dtype, device=a.device)
            self.lib.call("cusolverDnSetStream", session.handle, _stream(a.device))
            self.lib.call(
                routine,
                *(session.handle, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n),
                *(a.data_ptr(), n, w.data_ptr(), work.data_ptr(), lwork, info.data_ptr()),
                *(session.jacobi, batch),
            )
            _finish(info, routine)
        # Sorted by cuSOLVER (SetSortEig above); sorted again because callers take the top
        # entries by position and a Jacobi sweep order is not a contract worth trusting.
        return w.sort(dim=-1).values


ROUTINES = (SyevBatched, HeevjBatched)
