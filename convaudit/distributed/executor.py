"""The LayerExecutor of a Dask cluster: one task per item, results in item order.

Progress is fed by completed futures. A task that raises (bad input) ends the map with that
error, after the other tasks are cancelled; so does Ctrl-C. A worker that dies costs a retry of
the tasks it held: the scheduler gives them to another worker (``allowed-failures`` times,
Dask's default 3); tasks are not retried on exceptions, which are deterministic here.
"""

from __future__ import annotations

import concurrent.futures
import functools
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from convaudit.distributed.worker import TaskSettings, run_task
from convaudit.errors import ConvauditError, ResourceLimitError
from convaudit.executor import Progress

T = TypeVar("T")
R = TypeVar("R")


class ClusterLostError(ConvauditError):
    """The connection to the scheduler went away mid-run."""


class DaskExecutor:
    """Runs each item as one task on the cluster behind ``client`` (a distributed.Client)."""

    def __init__(self, client: Any, settings: TaskSettings, *, where: str) -> None:
        self.client = client
        self.settings = settings
        #: "N workers at ADDRESS", for the progress display
        self.where = where

    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        progress: Progress | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[R]:
        from distributed import as_completed

        total = len(items)
        if total == 0:
            return []
        run = functools.partial(run_task, fn, settings=self.settings)
        batch = uuid.uuid4().hex[:12]
        name = getattr(fn, "func", fn).__name__
        keys = [f"convaudit-{name}-{batch}-{i}" for i in range(total)]
        futures = self.client.map(run, items, key=keys, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * total
        if progress is not None:
            progress(0, total, "")
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                i = index[future.key]
                results[i] = _result(future, labels[i] if labels is not None else keys[i])
                future.release()  # the client keeps the result, the cluster need not
                if progress is not None:
                    progress(done, total, labels[i] if labels is not None else "")
        except BaseException:
            self.client.cancel(futures)
            raise
        return results

    def task_memory(self, requested: int | None) -> int | None:
        """The memory budget of one task: ``requested`` (--max-memory, per worker) shared among
        the threads of the busiest worker; by default a quarter of each worker's Dask memory
        limit, likewise shared (None where a worker sets no limit: the engine's default, a
        quarter of that machine's RAM)."""
        workers = list(self.client.scheduler_info()["workers"].values())
        threads = [max(1, int(w.get("nthreads") or 1)) for w in workers]
        if requested is not None:
            return max(1, requested // max(threads, default=1))
        limits = [int(w.get("memory_limit") or 0) for w in workers]
        if not limits or not all(limits):
            return None
        return min(limit // n for limit, n in zip(limits, threads, strict=True)) // 4


def _result(future: Any, label: str) -> Any:
    """The task's value, or its own exception; a task that killed its workers, or a lost
    cluster, as one ConvauditError."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise ResourceLimitError(
            f"{label}: every worker that ran it died (the scheduler gave up after "
            "Dask's allowed-failures)",
            hint="the likeliest cause is memory: lower --max-memory, or give the workers more",
        ) from None
    except concurrent.futures.CancelledError:
        raise ClusterLostError(
            f"{label}: the task was cancelled: the Dask scheduler or this client's connection "
            "to it went away",
        ) from None
