"""Atomic file output: write to a temporary file beside the destination, then rename.

A failure or Ctrl-C at any point leaves either the old destination or the complete new
one, never a partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from convaudit.errors import OutputError


def check_destination(dest: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse to clobber an existing file unless asked; fail early on a missing folder."""
    path = Path(dest)
    if path.exists() and not overwrite:
        raise OutputError(
            f"refusing to overwrite {path}",
            hint="choose another output path, or pass --force to replace it",
        )
    if not path.parent.exists():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in dest's folder; on success rename it onto dest."""
    path = Path(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.exists():
            # Keep the destination's permission bits when replacing it.
            with contextlib.suppress(OSError):
                os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(dest: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces dest only when the block succeeds."""
    with atomic_path(dest) as tmp, open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
