"""Is a file Keras? Decided from its first bytes (and a zip's member names) with the standard
library only, so that detecting a file's format never imports h5py."""

from __future__ import annotations

import zipfile
from pathlib import Path

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"


def is_hdf5(head: bytes) -> bool:
    # The superblock may follow a user block of 512, 1024, 2048 ... bytes.
    return any(head[off : off + 8] == HDF5_SIGNATURE for off in (0, 512, 1024, 2048))


def sniff(path: Path, head: bytes) -> bool:
    """HDF5 (only convaudit's Keras reader reads it), or a zip with a Keras model's members."""
    if is_hdf5(head):
        return True  # a non-Keras HDF5 file gets a precise error from the reader
    if not head.startswith(b"PK\x03\x04"):
        return False
    if path.suffix.lower() == ".keras":
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):  # ValueError: member name not UTF-8
        return False
    return CONFIG_MEMBER in names and WEIGHTS_MEMBER in names
