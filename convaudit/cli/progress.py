"""A progress bar on stderr that appears only for runs longer than about a second: layers done
of all, elapsed time and an estimate of the time left (from the layers done so far).

None at all when stderr is not a terminal, with --quiet, or for machine formats: callers pass
``enabled=False`` then, and the callback becomes a no-op.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

#: seconds a run must take before the bar appears
DELAY_S = 1.0


def stderr_is_tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class LazyProgress:
    """Context manager giving a ``progress(done, total, what)`` callback for the analysis."""

    def __init__(self, description: str, *, enabled: bool) -> None:
        self.description = description
        self.enabled = enabled
        self._started_at = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> LazyProgress:
        self._started_at = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _start(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[what]}"),
            # Only enabled when stderr is a terminal, so forcing terminal mode is safe.
            console=Console(stderr=True, force_terminal=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=total, what="")

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._started_at < DELAY_S:
                return
            self._start(total)
        assert self._bar is not None and self._task is not None
        self._bar.update(self._task, completed=done, total=total, what=what)

    def relabel(self, description: str) -> None:
        """Next model of a multi-model run: new label, the bar keeps its place."""
        self.description = description
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=description, completed=0)
