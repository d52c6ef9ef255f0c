"""Where the model-level services run their per-layer work.

:func:`convaudit.analysis.analyse`, :func:`convaudit.audit.audit_model` and
:func:`convaudit.clipping.clip_model` hand their layers to a :class:`LayerExecutor`:
``map(fn, items, progress=..., labels=...)`` returns ``[fn(item) for item in items]`` in item
order, whatever order the items finish in. The default, :data:`SEQUENTIAL`, runs them here one
after the other; :mod:`convaudit.distributed` runs them on a Dask cluster, so ``fn`` and the
items must pickle (module-level functions, ``functools.partial`` of them, numpy dataclasses).

Library code: never prints. This module imports none of its siblings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: progress(done, total, what)
Progress = Callable[[int, int, str], None]


class LayerExecutor(Protocol):
    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        progress: Progress | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[R]:
        """``[fn(item) for item in items]``, in item order; ``progress(done, total, label)``
        as items finish. An exception raised by ``fn`` ends the whole map."""
        ...


class SequentialExecutor:
    """In this process, in item order: ``progress(i, n, labels[i])`` before item ``i``, and
    ``progress(n, n, "")`` after the last."""

    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        progress: Progress | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[R]:
        results: list[R] = []
        total = len(items)
        for i, item in enumerate(items):
            if progress is not None:
                progress(i, total, labels[i] if labels is not None else "")
            results.append(fn(item))
        if progress is not None:
            progress(total, total, "")
        return results


SEQUENTIAL = SequentialExecutor()

__all__ = ["SEQUENTIAL", "LayerExecutor", "Progress", "SequentialExecutor"]
