"""Start a local Dask cluster (``--workers N``) or connect to one (``--scheduler ADDRESS``).

:func:`open_cluster` is a context manager giving a :class:`DaskExecutor`: it waits for a worker,
checks that every worker runs this convaudit, and closes what it opened on the way out (a local
cluster's worker processes included), also on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from convaudit import __version__
from convaudit.distributed.executor import DaskExecutor
from convaudit.distributed.worker import TaskSettings
from convaudit.errors import ConfigError

#: seconds to reach the scheduler, and to wait for its first worker
CONNECT_TIMEOUT_S = 30
WORKER_TIMEOUT_S = 60
INSTALL_HINT = "pip install 'convaudit[distributed]'"


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: ``workers`` local worker processes, or the scheduler at ``scheduler``."""

    workers: int | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if (self.workers is None) == (self.scheduler is None):
            raise ConfigError("give either --workers N or --scheduler ADDRESS, not both")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "--workers and --scheduler need Dask (the distributed package), which is not installed",
            hint=INSTALL_HINT,
        ) from None
    return distributed


def _worker_version() -> str:
    return __version__


def _plural(n: int) -> str:
    return f"{n} worker{'s' if n != 1 else ''}"


def _check_workers(client: Any, address: str) -> int:
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT_S)
    except (TimeoutError, OSError):
        raise ConfigError(
            f"no Dask worker joined the scheduler at {address} within {WORKER_TIMEOUT_S} s",
            hint=f"start some: dask worker {address}",
        ) from None
    try:
        versions = client.run(_worker_version)
    except Exception as exc:  # the workers cannot even unpickle a convaudit function
        raise ConfigError(
            f"the Dask workers at {address} cannot run convaudit: {type(exc).__name__}: {exc}",
            hint=f"install convaudit {__version__} on every worker ({INSTALL_HINT})",
        ) from None
    wrong = sorted({v for v in versions.values() if v != __version__})
    if wrong:
        raise ConfigError(
            f"the Dask workers at {address} run convaudit {', '.join(wrong)}, this is {__version__}",
            hint=f"install convaudit {__version__} on every worker",
        )
    return len(versions)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the local cluster spawns its worker processes: they inherit that,
    so a Ctrl-C reaches only this process, which cancels the run and closes them (a worker
    that its nanny restarts later ignores it by :func:`worker.dask_setup`)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: the caller owns the signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def open_cluster(spec: ClusterSpec) -> Iterator[DaskExecutor]:
    """A DaskExecutor on the cluster ``spec`` names; everything this opened is closed after."""
    distributed = _require_distributed()
    settings = TaskSettings()
    with contextlib.ExitStack() as stack:
        if spec.workers is not None:
            with _sigint_ignored():
                cluster = stack.enter_context(
                    distributed.LocalCluster(
                        n_workers=spec.workers,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=None,
                        silence_logs=logging.CRITICAL,  # our errors come back as exceptions
                        preload=["convaudit.distributed.worker"],
                    )
                )
            client = stack.enter_context(distributed.Client(cluster))
            address = cluster.scheduler_address
        else:
            address = str(spec.scheduler)
            try:
                client = stack.enter_context(distributed.Client(address, timeout=CONNECT_TIMEOUT_S))
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(
                    f"cannot connect to the Dask scheduler at {address}: {exc}",
                    hint="is `dask scheduler` running there? addresses look like tcp://host:8786",
                ) from None
        count = _check_workers(client, address)
        yield DaskExecutor(client, settings, where=f"{_plural(count)} at {address}")
