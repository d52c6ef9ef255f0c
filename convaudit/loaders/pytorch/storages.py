"""Put changed tensors back into a torch.save file by replacing their storages' bytes only.

For a checkpoint read by the restricted reader (:mod:`.unpickler`): its pickle names classes
that were never loaded, so it cannot be pickled again, and it need not be. The file is copied
as it is, except the bytes of the storages the new kernels changed: same length, same dtype,
little-endian as torch stores them. In the zip format a storage is the member
``<root>/data/<key>``; in the legacy format its bytes follow the pickles, each after an 8-byte
element count, in the order of the pickled key list.
"""

from __future__ import annotations

import io
import pickletools
import struct
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convaudit.errors import ModelFileError
from convaudit.loaders.pytorch.unpickler import Restricted, Unpickler


def write_storages(
    path: Path, dest: Path, record: Restricted, tensors: Mapping[str, Any], *, legacy: bool
) -> None:
    """Copy ``path`` to ``dest`` with the storages of ``tensors`` (already changed in memory,
    state_dict key -> tensor) replaced."""
    if sys.byteorder != "little":
        raise ModelFileError(f"cannot write {path}: only little-endian machines write it back")
    blobs: dict[str, bytes] = {}
    for name, tensor in tensors.items():
        where = record.where(tensor)
        if where is None:
            raise ModelFileError(f"cannot write {path}: tensor {name!r} has no storage in the file")
        blobs[where.key] = _storage_bytes(tensor)
    if legacy:
        _patch_legacy(path, dest, record, blobs)
    else:
        _patch_zip(path, dest, blobs)


def _storage_bytes(tensor: Any) -> bytes:
    import torch

    storage = tensor.untyped_storage()
    raw = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,))
    return raw.numpy().tobytes()


def _patch_zip(path: Path, dest: Path, blobs: Mapping[str, bytes]) -> None:
    with zipfile.ZipFile(path) as zin:
        names = zin.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ModelFileError(f"cannot write {path}: not one data.pkl in the archive")
        root = pickles[0][: -len("data.pkl")]
        order = zin.read(root + "byteorder") if root + "byteorder" in names else b"little"
        if order != b"little":
            raise ModelFileError(f"cannot write {path}: its storages are {order.decode()}-endian")
        missing = [k for k in blobs if root + "data/" + k not in names]
        if missing:
            raise ModelFileError(f"cannot write {path}: storage {missing[0]!r} is not in it")
        with zipfile.ZipFile(dest, "w") as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                key = info.filename[len(root) + len("data/") :]
                if info.filename.startswith(root + "data/") and key in blobs:
                    if len(blobs[key]) != len(data):
                        raise ModelFileError(
                            f"cannot write {path}: storage {key!r} holds {len(data)} bytes, "
                            f"the new values {len(blobs[key])}"
                        )
                    data = blobs[key]
                zout.writestr(info, data)


def _pickle_end(data: bytes | bytearray, start: int, path: Path) -> int:
    """Where the pickle starting at ``start`` ends (read opcode by opcode, nothing built)."""
    try:
        for opcode, _, pos in pickletools.genops(io.BytesIO(data[start:])):
            if opcode.name == "STOP":
                return start + int(pos or 0) + 1
    except Exception as exc:  # a malformed opcode stream
        raise ModelFileError(f"cannot write {path}: its pickles are malformed ({exc})") from None
    raise ModelFileError(f"cannot write {path}: a pickle without its end")


def _patch_legacy(path: Path, dest: Path, record: Restricted, blobs: Mapping[str, bytes]) -> None:
    data = bytearray(path.read_bytes())
    pos = 0
    for index in range(4):  # magic number, protocol version, system info, the object
        end = _pickle_end(data, pos, path)
        if index == 2:
            info = Unpickler(io.BytesIO(bytes(data[pos:end]))).load()
            if isinstance(info, dict) and info.get("little_endian") is False:
                raise ModelFileError(f"cannot write {path}: its storages are big-endian")
        pos = end
    end = _pickle_end(data, pos, path)
    keys = Unpickler(io.BytesIO(bytes(data[pos:end]))).load()  # a list of strings
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelFileError(f"cannot write {path}: its storage key list is malformed")
    pos = end
    written: set[str] = set()
    for key in keys:
        nbytes = record.storage_sizes.get(key)
        if nbytes is None or pos + 8 + nbytes > len(data):
            raise ModelFileError(f"cannot write {path}: storage {key!r} is not where torch put it")
        (count,) = struct.unpack("<q", bytes(data[pos : pos + 8]))
        if count < 0 or (count and nbytes % count):
            raise ModelFileError(f"cannot write {path}: storage {key!r} has a malformed size")
        pos += 8
        if key in blobs:
            if len(blobs[key]) != nbytes:
                raise ModelFileError(f"cannot write {path}: storage {key!r} changed size")
            data[pos : pos + nbytes] = blobs[key]
            written.add(key)
        pos += nbytes
    if set(blobs) - written:
        raise ModelFileError(f"cannot write {path}: a changed storage is not in the file")
    dest.write_bytes(bytes(data))
