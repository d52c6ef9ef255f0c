"""What runs on a Dask worker: one task on one torch thread, and the chunk pool that fans a
large spectrum's frequency chunks out as tasks of their own.

Why one thread per task: the worker's threads (and the cluster's workers) are the parallelism,
and OpenMP threads on shared cores are slow beyond reason (measured on the 2-core build machine
under its usual load: a zoo of 6 models took 8.8 s with one thread per task, 392 s with two).
Why a fixed count at all: the engine's last bits depend on it (its frequency chunks are sized
from the thread count, and a multithreaded product may round differently), so every task runs
alike, and the report is byte-identical to a single-process run with one thread
(``OMP_NUM_THREADS=1``), however the cluster's workers were started.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from convaudit.engine.runtime import chunk_pool, intra_op_threads, single_threaded_blas

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskSettings:
    """Sent with every task. ``threads``: torch's thread count inside the task. ``fan_out_s``: a
    layer's remaining chunks become tasks of their own when, at the speed of its first chunk,
    they would take longer than this on one worker."""

    threads: int = 1
    fan_out_s: float = 2.0


def dask_setup(worker: object) -> None:
    """Preloaded into the workers of a local cluster: Ctrl-C is for the client, which cancels
    the run and closes them; a worker that saw it too would die with a traceback."""
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_task(fn: Callable[[T], R], item: T, settings: TaskSettings) -> R:
    """``fn(item)`` on a worker, on ``settings.threads`` threads, large spectra fanned out."""
    with intra_op_threads(settings.threads), chunk_pool(WorkerChunkPool(settings)):
        return fn(item)


def run_chunk(work: Callable[[slice], T], part: slice) -> T:
    """One chunk, as :func:`convaudit.engine.runtime.run_chunks` runs each of the spectrum's:
    one torch thread, single-threaded BLAS."""
    with intra_op_threads(1), single_threaded_blas():
        return work(part)


class WorkerChunkPool:
    """The engine's ChunkPool inside a cluster task: the first chunk here, and the others here
    too when they are quick, else as tasks of their own on the cluster (this task leaves its
    worker thread meanwhile, so that the chunks can use it)."""

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings

    def map(
        self,
        work: Callable[[slice], T],
        parts: Sequence[slice],
        progress: Callable[[int, int, str], None] | None,
        what: str,
    ) -> list[T]:
        total = len(parts)
        started = time.perf_counter()
        results = [run_chunk(work, parts[0])]
        rest = list(parts[1:])
        if (time.perf_counter() - started) * len(rest) <= self.settings.fan_out_s:
            for part in rest:
                results.append(run_chunk(work, part))
                if progress is not None:
                    progress(len(results), total, what)
            return results
        from distributed import worker_client

        with worker_client() as client:
            # One copy of the work (its kernel taps) per worker, not one per chunk.
            shared = client.scatter(work, hash=False)
            futures = client.map(run_chunk, [shared] * len(rest), rest, pure=False)
            try:
                results += client.gather(futures)
            finally:
                client.cancel([*futures, shared])
        if progress is not None:
            progress(total, total, what)
        return results
