"""``--workers N`` / ``--scheduler ADDRESS``: where a command runs its per-layer work.

Without either (nor ``CONVAUDIT_SCHEDULER``, nor ``scheduler`` in the config file) the commands
run in this process exactly as before, and neither convaudit.distributed nor Dask is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from convaudit.errors import ConfigError

if TYPE_CHECKING:
    from convaudit.distributed import ClusterSpec, DaskExecutor

SCHEDULER_ENV = "CONVAUDIT_SCHEDULER"

#: how asyncio reports a future that died with an exception nobody read
_ORPHAN_REPORTS = ("Future exception was never retrieved", "Task exception was never retrieved")


def cluster_spec(
    workers: int | None, scheduler: str | None, *, fallback: str | None = None
) -> ClusterSpec | None:
    """What the command line asks for (``--workers`` and ``--scheduler`` exclude each other),
    else ``fallback`` (the environment or config file's scheduler); None: run here."""
    if workers is not None and scheduler is not None:
        raise ConfigError("give either --workers N or --scheduler ADDRESS, not both")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    address = scheduler if workers is None else None
    if workers is None and not address:
        address = fallback
    if workers is None and not address:
        return None
    from convaudit.distributed import ClusterSpec

    return ClusterSpec(workers=workers, scheduler=address or None)


def configured_scheduler(config_file: Path | None = None) -> str | None:
    """``CONVAUDIT_SCHEDULER``, else ``scheduler`` in the config file ``convaudit check`` reads
    (found from the current folder upwards; only that key is read here)."""
    from convaudit.gate.config import scheduler_setting

    return os.environ.get(SCHEDULER_ENV) or scheduler_setting(config_file)


@contextlib.contextmanager
def open_executor(spec: ClusterSpec | None, *, quiet: bool) -> Iterator[DaskExecutor | None]:
    """The cluster's executor for the ``with`` block (None: no cluster asked for)."""
    if spec is None:
        yield None
        return
    from convaudit.cli.app import debug_enabled
    from convaudit.distributed import open_cluster

    if not debug_enabled():
        _drop_orphaned_future_reports()
    with open_cluster(spec) as executor:
        if not quiet:
            sys.stderr.write(f"running on {executor.where}\n")
            sys.stderr.flush()
        yield executor


def _drop_orphaned_future_reports() -> None:
    """Keep asyncio's "exception was never retrieved" off stderr for the rest of the process.

    A Ctrl-C stops Dask's event loop with some of its internal waits pending (a batched send's
    timer, say); when those futures are collected, at exit, asyncio logs their TimeoutError after
    our ``error: interrupted``. They are Dask's bookkeeping, not a result of ours: our errors
    reach us as exceptions. Other asyncio messages still print; CONVAUDIT_DEBUG keeps all.
    """
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _OrphanedFutureFilter) for f in logger.filters):
        logger.addFilter(_OrphanedFutureFilter())


class _OrphanedFutureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ORPHAN_REPORTS)
