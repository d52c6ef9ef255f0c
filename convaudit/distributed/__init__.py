"""Run the per-layer work on a Dask cluster: ``pip install 'convaudit[distributed]'``.

Imported only when ``--workers``/``--scheduler`` (or ``CONVAUDIT_SCHEDULER``, or ``scheduler``
in the config file) asks for it; Dask itself only when a cluster is opened.

- :mod:`.cluster`: start a local cluster or connect to a scheduler, check the workers, close;
- :mod:`.executor`: :class:`DaskExecutor`, the LayerExecutor (convaudit.executor) that submits
  one task per layer and feeds progress from completed futures;
- :mod:`.worker`: what runs on a worker: the client's thread setting, and the chunk pool that
  fans a large spectrum's frequency chunks out as tasks of their own.

The models are read on the client; a task carries one layer (numpy arrays) and its options,
and its result comes back to the client, which merges them in layer order.
"""

from convaudit.distributed.cluster import ClusterSpec, open_cluster
from convaudit.distributed.executor import DaskExecutor

__all__ = ["ClusterSpec", "DaskExecutor", "open_cluster"]
