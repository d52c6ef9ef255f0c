"""Read an HDF5 file's metadata in a child process first, under a time limit.

libhdf5 can loop forever on some corruptions (a damaged global heap, where variable-length
strings such as Keras' ``model_config`` live), and does so inside one C call while holding
Python's GIL: nothing in this process could interrupt it, not even Ctrl-C. A child process that
walks every group and reads every attribute first turns such a file into one ``error:`` line
(exit 2). It costs one Python start with h5py, a fraction of a second. A child that fails with
an ordinary exception is fine: the in-process reader then reports the damage precisely.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from convaudit.errors import ModelFileError

#: seconds the child may take to read all metadata (a healthy file needs well under one);
#: the environment variable CONVAUDIT_HDF5_PROBE_SECONDS overrides it
PROBE_SECONDS = 30.0

_CHILD = r"""
import io, sys
import h5py

source = sys.argv[1]
f = h5py.File(io.BytesIO(sys.stdin.buffer.read()) if source == "-" else source, "r")


def read_attrs(name, obj=None):
    obj = f if obj is None else obj
    for key in obj.attrs:
        obj.attrs[key]


read_attrs("/")
f.visititems(read_attrs)
"""


def probe_hdf5(path: Path, data: bytes | None = None, *, seconds: float | None = None) -> None:
    """Raise ModelFileError if reading the metadata of ``path`` (or of the in-memory image
    ``data``, named ``path`` in messages) hangs or kills the reader."""
    if not sys.executable:  # an embedded interpreter: no child to start
        return
    if seconds is None:
        seconds = float(os.environ.get("CONVAUDIT_HDF5_PROBE_SECONDS", PROBE_SECONDS))
    source = "-" if data is not None else str(path)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, source],
            input=data if data is not None else b"",
            capture_output=True,
            timeout=seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ModelFileError(
            f"cannot read {path}: libhdf5 did not finish reading the file's metadata in "
            f"{seconds:g} s (a corrupted HDF5 heap makes it loop forever)",
            hint="the file is damaged; export it again from the original model",
        ) from None
    if proc.returncode < 0:
        raise ModelFileError(
            f"cannot read {path}: libhdf5 crashed reading its metadata (signal {-proc.returncode})",
            hint="the file is damaged; export it again from the original model",
        )
