"""Guards every loader applies before trusting what a file declares about itself.

A model file is untrusted input: it may be truncated, corrupt, hostile (zip bombs, absurd
declared shapes, paths that escape the model's folder) or simply not a model. Loaders call
these checks *before* allocating or opening anything the file points at, so that a bad file
becomes one :class:`ModelFileError` instead of an out-of-memory kill or a traceback.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import stat
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from convaudit.errors import ModelFileError

#: an archive may hold at most this much uncompressed data, in at most this many members
MAX_ARCHIVE_BYTES = 8 * 1024**3
MAX_ARCHIVE_MEMBERS = 20_000  # a .keras has 3, a big torch checkpoint ~1000
#: a member larger than 1 MiB may expand at most this many times (zip bombs expand ~1000x;
#: float weights deflate by 1.1-3x, an all-zero kernel by ~1000x but is rarely over 1 MiB)
MAX_COMPRESSION_RATIO = 200
#: no single tensor a loader materialises may declare more than this many bytes
MAX_TENSOR_BYTES = 16 * 1024**3
#: no tensor may have more dimensions than this (ONNX/HDF5 allow 32+; a kernel has <= 5)
MAX_TENSOR_RANK = 32


class UnexpectedLoaderError(ModelFileError):
    """A loader failed with an exception it did not anticipate (a gap in its validation).

    Still one ``error:`` line for the user; tests treat it as a bug to fix in the loader.
    """


def _fail(path: Path, why: str, hint: str | None = None) -> ModelFileError:
    return ModelFileError(f"cannot read {path}: {why}", hint=hint)


# --- archives (.keras, zip-format .pt / .pth / .ckpt, .pt2) -------------------------------------


def check_zip(path: Path, zf: zipfile.ZipFile) -> None:
    """Refuse zip bombs: cap member count, total uncompressed size and compression ratio.

    The sizes come from the central directory; Python's ``zipfile`` never inflates a member
    past its declared size (and fails its CRC check if the data disagrees), and torch's reader
    allocates exactly the declared size, so checking the declared sizes up front is sufficient.
    """
    infos = zf.infolist()
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise _fail(path, f"archive has {len(infos)} members (limit {MAX_ARCHIVE_MEMBERS})")
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > 1024**2 and ratio > MAX_COMPRESSION_RATIO:
            raise _fail(
                path,
                f"archive member {info.filename!r} expands {int(ratio)}x "
                f"(limit {MAX_COMPRESSION_RATIO}x): refusing a likely zip bomb",
            )
    if total > MAX_ARCHIVE_BYTES:
        raise _fail(
            path, f"archive would expand to {total} bytes (limit {MAX_ARCHIVE_BYTES}): refusing it"
        )


@contextlib.contextmanager
def open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """Open a zip archive and check it against zip bombs; corrupt archives raise ModelFileError."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise _fail(path, f"corrupt or truncated archive ({exc})") from None
    except OSError as exc:
        raise _fail(path, exc.strerror or str(exc)) from None
    with zf:
        check_zip(path, zf)
        yield zf


def read_zip_member(path: Path, zf: zipfile.ZipFile, name: str) -> bytes:
    """The bytes of one archive member; a missing or damaged member raises ModelFileError."""
    try:
        return zf.read(name)
    except KeyError:
        raise _fail(path, f"archive has no member {name!r}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise _fail(path, f"archive member {name!r} is corrupt ({exc})") from None
    except OSError as exc:
        raise _fail(path, f"archive member {name!r}: {exc.strerror or exc}") from None


def check_zip_file(path: Path) -> None:
    """If ``path`` is a zip archive, check it against zip bombs (no-op for other files)."""
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError:
        return
    if is_zip:
        with open_zip(path):
            pass


# --- declared sizes -------------------------------------------------------------------------------


def check_declared_bytes(path: Path, what: str, declared: int, available: int) -> None:
    """A tensor may not declare more bytes than the file (or archive member) holds."""
    if declared < 0 or declared > available:
        raise _fail(
            path,
            f"{what} declares {declared} bytes but only {available} are present "
            "(corrupt or truncated file)",
        )


def declared_nbytes(path: Path, what: str, shape: Iterable[Any], itemsize: int) -> int:
    """Bytes a tensor of ``shape`` would take, refusing negative, huge or non-integer dims.

    Computed with Python integers, so a shape like ``(2**40, 2**40)`` cannot overflow.
    """
    dims = list(shape)
    if len(dims) > MAX_TENSOR_RANK:
        raise _fail(path, f"{what} declares {len(dims)} dimensions (limit {MAX_TENSOR_RANK})")
    checked = []
    for d in dims:
        try:
            dim = operator.index(d)  # ints and numpy ints; not floats, None or strings
        except TypeError:
            dim = -1
        if isinstance(d, bool) or dim < 0:
            raise _fail(path, f"{what} declares an invalid shape {tuple(dims)}")
        checked.append(dim)
    nbytes = math.prod(checked) * int(itemsize)
    if nbytes > MAX_TENSOR_BYTES:
        raise _fail(
            path,
            f"{what} declares shape {tuple(checked)} ({nbytes} bytes, limit {MAX_TENSOR_BYTES}): "
            "refusing to allocate it",
        )
    return nbytes


def check_declared_shape(
    path: Path, what: str, shape: Iterable[Any], itemsize: int, available: int | None = None
) -> int:
    """Validate a declared tensor shape before allocating it; return its size in bytes.

    ``available``: bytes actually stored for it (raw data length, external-data length, HDF5
    storage size) when the data is stored uncompressed; None when the tensor is computed
    (e.g. ONNX ConstantOfShape) and only the absolute cap applies.
    """
    nbytes = declared_nbytes(path, what, shape, itemsize)
    if available is not None:
        check_declared_bytes(path, what, nbytes, available)
    return nbytes


def check_h5_dataset(path: Path, dataset: Any) -> None:
    """Refuse an HDF5 dataset whose declared size its stored bytes cannot back.

    An unfiltered dataset must store every byte it declares; a compressed one at most
    MAX_COMPRESSION_RATIO times its storage. An unallocated dataset (HDF5 returns its fill
    value) may declare at most 1 MiB. Call before ``dataset[()]``.
    """
    name = getattr(dataset, "name", "dataset")
    try:
        shape = dataset.shape or ()
        itemsize = int(dataset.dtype.itemsize)
        stored = int(dataset.id.get_storage_size())
        filtered = bool(dataset.compression) or bool(getattr(dataset, "scaleoffset", None))
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise _fail(path, f"HDF5 dataset {name} is unreadable ({exc})") from None
    nbytes = declared_nbytes(path, f"HDF5 dataset {name}", shape, itemsize)
    if nbytes <= 1024**2 and stored == 0:
        return
    backed = stored * MAX_COMPRESSION_RATIO if filtered else stored
    check_declared_bytes(path, f"HDF5 dataset {name}", nbytes, backed)


@contextlib.contextmanager
def hdf5_errors(path: Path, what: str = "HDF5 file") -> Iterator[None]:
    """Turn what h5py raises on a damaged file into one ModelFileError.

    h5py reports corruption lazily, on whichever attribute, link or dataset read first meets
    it, as OSError or RuntimeError (e.g. "bad local heap signature"); wrap every read.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise _fail(path, f"corrupt or truncated {what} ({detail})") from None


# --- paths a file points at -----------------------------------------------------------------------


def resolve_inside(path: Path, location: str, what: str = "external data") -> Path:
    """Resolve ``location`` (from inside the model file) against the model's folder.

    Refuses absolute paths and anything that escapes the folder, including through symlinks
    (``../secret``, ``/etc/passwd``, ``data -> /``): a model must not make convaudit read, or
    its writer overwrite, files outside the folder it came from.
    """
    base = path.resolve().parent
    if not location or "\x00" in location:
        raise _fail(path, f"{what} has an empty or invalid location {location!r}")
    candidate = Path(location)
    if candidate.is_absolute() or candidate.drive:
        raise _fail(
            path,
            f"{what} location {location!r} is an absolute path; only files in the model's "
            "folder are read",
        )
    resolved = (base / candidate).resolve()
    if resolved != base and base not in resolved.parents:
        raise _fail(
            path,
            f"{what} location {location!r} points outside the model's folder {base}; refusing it",
        )
    return resolved


def check_regular_file(path: Path) -> None:
    """Only regular files are read: a FIFO would block and /dev/zero never ends."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except OSError as exc:
        raise _fail(path, exc.strerror or str(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(
            path,
            "it is a folder",
            hint="pass the model file itself (.onnx, .pt, .pt2, .safetensors, .h5, .keras)",
        )
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise _fail(path, "permission denied")


__all__ = [
    "MAX_ARCHIVE_BYTES",
    "MAX_ARCHIVE_MEMBERS",
    "MAX_COMPRESSION_RATIO",
    "MAX_TENSOR_BYTES",
    "UnexpectedLoaderError",
    "check_declared_bytes",
    "check_declared_shape",
    "check_h5_dataset",
    "check_regular_file",
    "check_zip",
    "check_zip_file",
    "declared_nbytes",
    "hdf5_errors",
    "open_zip",
    "read_zip_member",
    "resolve_inside",
]
