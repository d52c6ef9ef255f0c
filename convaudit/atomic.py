"""Atomic file output: write to a temporary file beside the destination, then rename.

A failure or Ctrl-C at any point leaves either the old destination or the complete new
one, never a partial file, and never a stray temporary file. Nothing here reads or touches
any file other than the destination and its temporary.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from convaudit.errors import OutputError


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_destination(
    dest: str | os.PathLike[str],
    *,
    overwrite: bool,
    protect: Iterable[str | os.PathLike[str]] = (),
    protect_hint: str = "choose another output path (-o), or pass --in-place to replace the input",
) -> Path:
    """Refuse to clobber an existing file unless asked; fail early on a bad folder.

    ``protect``: files that must never be the destination, whatever ``overwrite`` says
    (e.g. the input model, unless the user asked for ``--in-place``).
    """
    path = Path(dest)
    for keep in protect:
        if _same_file(path, Path(keep)):
            raise OutputError(f"refusing to overwrite the input {path}", hint=protect_hint)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder", hint="give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(
            f"refusing to overwrite {path}",
            hint="choose another output path, or pass --force to replace it",
        )
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: folder {path.parent} is not writable")
    return path


def _discard(tmp: Path) -> None:
    """Remove the temporary file, even if a second Ctrl-C arrives meanwhile."""
    while True:
        try:
            tmp.unlink(missing_ok=True)
            return
        except KeyboardInterrupt:
            continue
        except OSError:
            return


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; best effort (not every file system allows it).
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _output_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in dest's folder; on success rename it onto dest.

    The temporary file exists (empty) when the block starts; the block may overwrite it in any
    way. On any exception, KeyboardInterrupt included, it is removed and dest is untouched.
    """
    path = Path(dest)
    tmp: Path | None = None
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise _output_error(path, exc) from None
        tmp = Path(tmp_name)
        os.close(fd)
        yield tmp
        try:
            mode = path.stat().st_mode & 0o7777 if path.exists() else _new_file_mode()
            os.chmod(tmp, mode)  # mkstemp makes 0600; give the file the mode a user expects
            os.replace(tmp, path)
        except OSError as exc:
            raise _output_error(path, exc) from None
        _fsync_folder(path.parent)
    except BaseException:
        if tmp is not None:
            _discard(tmp)
        raise


@contextlib.contextmanager
def atomic_open(dest: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces dest only when the block succeeds."""
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open writes a whole new file (mode w, wt or wb), not {mode!r}")
    with atomic_path(dest) as tmp:
        try:
            with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _output_error(Path(dest), exc) from None
