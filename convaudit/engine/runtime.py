"""Where and how the engine computes: device, dtype, memory budget, chunks, worker threads."""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from convaudit.engine.results import EngineOptions
from convaudit.errors import ConfigError, ResourceLimitError

T = TypeVar("T")

#: bytes one frequency block needs beyond its own storage (LAPACK copies, workspace, output)
_WORK_FACTOR = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a CI runner's cgroup)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _own_running(tasks: str = "/proc/self/task") -> int:
    """This process's threads running or ready to run now (the reader included): torch's
    OpenMP workers spin for a while after every parallel region, and are no neighbours."""
    try:
        names = os.listdir(tasks)
    except OSError:
        return 1
    count = 0
    for name in names:
        try:
            with open(os.path.join(tasks, name, "stat"), encoding="ascii") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
        count += state == "R"
    return max(count, 1)


def _runnable_others(
    path: str = "/proc/loadavg", samples: int = 5, own: Callable[[], int] = _own_running
) -> int:
    """Other processes' tasks running or ready to run right now: the kernel's count of
    runnable tasks (the 4th field of /proc/loadavg) less this process's own (``own``: the
    reader and its spinning OpenMP workers, which counted as neighbours made every layer after
    the first run on one thread), the least of a few samples 2 ms apart so that a passing task
    is not counted. 0 where the OS does not say."""
    least = None
    for i in range(samples):
        try:
            with open(path, encoding="ascii") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        others = max(0, running - own())
        least = others if least is None else min(least, others)
        if i + 1 < samples:
            time.sleep(0.002)
    return least or 0


def free_cores() -> int:
    """Cores free for this process now: usable cores minus other runnable tasks, at least 1.

    An OpenMP parallel region ends at a barrier, and on a core shared with another busy
    process one of its threads is descheduled for a whole timeslice: on the 2-core test
    machine a 20x16384 float32 matrix-vector product took 17 ms on 2 threads beside other jobs
    and 0.026 ms on 1, and a 100-product Lanczos 13.4 s against 0.58 s. So the engine only
    spreads over the cores nobody else is using."""
    return max(1, usable_cores() - _runnable_others())


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[int]:
    """torch's intra-op threads set to ``threads`` meanwhile (restored afterwards)."""
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def engine_threads(rt: Runtime) -> Iterator[int]:
    """On CPU, torch's intra-op threads and numpy's BLAS/LAPACK threads at ``rt.threads`` (the
    free cores) while the engine runs; elsewhere unchanged. (numpy's OpenBLAS collapses like
    OpenMP beside other jobs: a 1280x512 SVD took 7.6 s on 2 threads on the loaded test machine.)"""
    if rt.device.type != "cpu":
        yield torch.get_num_threads()
        return
    with intra_op_threads(rt.threads), blas_threads(rt.threads):
        yield rt.threads


def total_memory() -> int:
    """Usable RAM in bytes: physical RAM, capped by a cgroup (container/CI) memory limit.

    Falls back to 8 GiB where the OS does not say.
    """
    try:
        physical = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        physical = 8 * 1024**3
    limit = _cgroup_memory_limit()
    return min(physical, limit) if limit else physical


_CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_memory_limit(paths: tuple[str, ...] = _CGROUP_LIMIT_FILES) -> int | None:
    """The cgroup v2 (or v1) memory limit, if one is set; a CI runner's RAM is often capped."""
    for path in paths:
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 reports "no limit" as a huge number
            return int(text)
    return None


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    real: torch.dtype
    complex: torch.dtype
    max_memory: int
    threads: int
    #: relative precision of σ_max asked for (certificates and Lanczos)
    tol: float = 1e-6
    #: a gate's limit on σ_max: refinement stops once the bracket lies on one side of it
    limit: float | None = None

    @property
    def itemsize(self) -> int:
        """Bytes of one complex entry."""
        return 16 if self.real == torch.float64 else 8


def runtime(options: EngineOptions) -> Runtime:
    """Resolve EngineOptions into torch objects; validate device and dtype."""
    if options.dtype not in ("float32", "float64"):
        raise ConfigError(f"unknown dtype {options.dtype!r}", hint="use float32 or float64")
    name = options.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "device cuda was requested but torch sees no CUDA device", hint="use cpu or auto"
        )
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"unknown device {options.device!r}", hint="use cpu, cuda or auto"
        ) from None
    real = torch.float64 if options.dtype == "float64" else torch.float32
    cplx = torch.complex128 if real == torch.float64 else torch.complex64
    budget = options.max_memory if options.max_memory is not None else total_memory() // 4
    threads = options.threads if options.threads else min(torch.get_num_threads(), free_cores())
    if device.type != "cpu":
        threads = 1  # one stream: the GPU batches internally
    if not options.tol > 0:
        raise ConfigError(f"tolerance must be positive, got {options.tol!r}")
    return Runtime(
        device, real, cplx, int(budget), max(1, int(threads)), options.tol, options.limit
    )


def chunk_size(rt: Runtime, per_item_bytes: int, total: int, *, what: str) -> int:
    """How many frequencies one chunk may hold so that all workers together stay in budget."""
    need = per_item_bytes * _WORK_FACTOR
    fit = rt.max_memory // (need * rt.threads)
    if fit < 1:
        raise ResourceLimitError(
            f"{what}: one frequency needs {need} bytes, over the memory budget of {rt.max_memory} bytes",
            hint="raise the memory budget (--max-memory), or ask for the cheaper certified "
            "sigma_max only (--sigma bound, no --full/--plot/--save-spectra)",
        )
    if rt.device.type == "cpu":
        # Several chunks per worker keep both the progress callback and the threads busy.
        fit = min(fit, max(1, -(-total // (4 * rt.threads))))
    return max(1, min(fit, total))


def blas_threads(threads: int) -> contextlib.AbstractContextManager[object]:
    """numpy's BLAS/LAPACK on at most ``threads`` threads meanwhile. No-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """numpy's BLAS/LAPACK on one thread per caller (our workers parallelise instead): OpenBLAS
    threads on small batched matrices oversubscribe the cores."""
    return blas_threads(1)


def chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


class ChunkPool(Protocol):
    """Runs ``distributable`` chunk work somewhere else (convaudit.distributed sets one inside
    a cluster task): ``[work(part) for part in parts]``, in chunk order."""

    def map(
        self,
        work: Callable[[slice], T],
        parts: Sequence[slice],
        progress: Callable[[int, int, str], None] | None,
        what: str,
    ) -> list[T]: ...


_CHUNK_POOL: contextvars.ContextVar[ChunkPool | None] = contextvars.ContextVar(
    "chunk_pool", default=None
)


@contextlib.contextmanager
def chunk_pool(pool: ChunkPool | None) -> Iterator[None]:
    """Within this context, :func:`run_chunks` hands distributable chunks to ``pool``."""
    token = _CHUNK_POOL.set(pool)
    try:
        yield
    finally:
        _CHUNK_POOL.reset(token)


def run_chunks(
    rt: Runtime,
    work: Callable[[slice], T],
    parts: Sequence[slice],
    progress: Callable[[int, int, str], None] | None,
    what: str,
    *,
    distributable: bool = False,
) -> list[T]:
    """Run ``work`` over the chunks, on worker threads on CPU (torch releases the GIL inside
    LAPACK), reporting progress in chunk order. Results come back in chunk order.

    With several workers, torch's own intra-op threads and numpy's BLAS threads are set to 1
    meanwhile: LAPACK on small matrices does not use them well, and workers x OpenMP (or
    OpenBLAS) threads would oversubscribe the cores.
    ``distributable``: ``work`` is a pure, picklable function of its chunk, so a
    :class:`ChunkPool` in context may run the chunks elsewhere.
    """
    elsewhere = _CHUNK_POOL.get() if distributable else None
    if elsewhere is not None and len(parts) > 1:
        return elsewhere.map(work, parts, progress, what)
    results: list[T] = []
    total = len(parts)
    if rt.threads <= 1 or total <= 1:
        for i, part in enumerate(parts):
            results.append(work(part))
            if progress is not None:
                progress(i + 1, total, what)
        return results
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_threaded_blas(), ThreadPoolExecutor(max_workers=rt.threads) as pool:
            for i, result in enumerate(pool.map(work, parts)):
                results.append(result)
                if progress is not None:
                    progress(i + 1, total, what)
    finally:
        torch.set_num_threads(previous)
    return results
