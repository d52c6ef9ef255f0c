"""Fixtures of the distributed tests: a real Dask cluster on loopback (see dask_loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dask_loopback import LoopbackCluster, start_cluster, stop_cluster


@pytest.fixture(scope="session")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    """Scheduler + two workers, shared by the tests that do not break them."""
    cluster = start_cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
