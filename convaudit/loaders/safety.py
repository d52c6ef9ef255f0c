"""Guards every loader applies before trusting a file's declared sizes."""

from __future__ import annotations

import zipfile
from pathlib import Path

from convaudit.errors import ModelFileError

#: an archive may hold at most this much uncompressed data, in this many members
MAX_ARCHIVE_BYTES = 8 * 1024**3
MAX_ARCHIVE_MEMBERS = 100_000
#: a member may expand at most this many times its compressed size (zip bombs expand ~1000x)
MAX_COMPRESSION_RATIO = 200


def check_zip(path: Path, zf: zipfile.ZipFile) -> None:
    """Refuse zip bombs: cap member count, total uncompressed size and compression ratio."""
    infos = zf.infolist()
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise ModelFileError(f"cannot read {path}: archive has {len(infos)} members (limit {MAX_ARCHIVE_MEMBERS})")
    total = 0
    for info in infos:
        total += info.file_size
        if info.compress_size and info.file_size > 1024**2 and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
            raise ModelFileError(
                f"cannot read {path}: archive member {info.filename!r} expands "
                f"{info.file_size // max(info.compress_size, 1)}x (a zip bomb?)"
            )
    if total > MAX_ARCHIVE_BYTES:
        raise ModelFileError(f"cannot read {path}: archive would expand to {total} bytes (limit {MAX_ARCHIVE_BYTES})")


def check_declared_bytes(path: Path, what: str, declared: int, available: int) -> None:
    """A tensor may not declare more bytes than the file (or archive member) holds."""
    if declared < 0 or declared > available:
        raise ModelFileError(
            f"cannot read {path}: {what} declares {declared} bytes but only {available} are present (corrupt or truncated file)"
        )
