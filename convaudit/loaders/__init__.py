"""Model loaders: detect a file's format from its content and read it into the IR.

``load_model`` and ``write_kernels`` are the only doors to the format readers and writers, and
they keep two promises whatever a reader does: a model file never crashes convaudit with a
traceback (every failure is a ConvauditError), and writers report I/O failures as OutputError.
"""

from __future__ import annotations

import errno
import importlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convaudit.errors import ConvauditError, ModelFileError, OutputError, ResourceLimitError
from convaudit.ir import ModelIR
from convaudit.loaders.interface import Loader, LoadOptions
from convaudit.loaders.safety import UnexpectedLoaderError, check_regular_file

# format -> (module with a light ``sniff(path, head)``, reader module, class). Both are imported
# lazily and the sniffers need no framework, so that detecting an ONNX file imports neither h5py
# nor torch, and only the chosen reader is imported. Order matters: the first sniff() that
# accepts the file wins.
_LOADERS: tuple[tuple[str, str, str, str], ...] = (
    ("keras", "convaudit.loaders.keras.sniff", "convaudit.loaders.keras.reader", "KerasLoader"),
    (
        "pytorch",
        "convaudit.loaders.pytorch.sniff",
        "convaudit.loaders.pytorch.reader",
        "PyTorchLoader",
    ),
    ("onnx", "convaudit.loaders.onnx.sniff", "convaudit.loaders.onnx.reader", "OnnxLoader"),
)

FORMATS = ("onnx", "pytorch", "keras")

_SUPPORTED_HINT = (
    "convaudit reads ONNX, PyTorch (.pt/.pth/.ckpt/.pt2/.safetensors/TorchScript) "
    "and Keras (.h5/.keras/.weights.h5) files"
)
#: exceptions that are not a file's fault and must not be dressed up as "corrupt file"
_PASS_THROUGH = (ConvauditError, KeyboardInterrupt, SystemExit, GeneratorExit)


def _loader_class(module: str, name: str) -> type[Loader]:
    cls: type[Loader] = getattr(importlib.import_module(module), name)
    return cls


def _sniffs(sniff_module: str, path: Path, head: bytes) -> bool:
    # A sniffer is a heuristic over untrusted bytes: one that trips over them has not
    # recognised the file, and the next loader gets its chance.
    try:
        return bool(importlib.import_module(sniff_module).sniff(path, head))
    except _PASS_THROUGH:
        raise
    except Exception:
        return False


def detect(path: Path) -> type[Loader]:
    """The loader class for ``path``, chosen from the file's content (the suffix only breaks ties
    inside a loader)."""
    path = Path(path)
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise ModelFileError(f"cannot read {path}: the file is empty")
    for _, sniff_module, module, name in _LOADERS:
        if _sniffs(sniff_module, path, head):
            return _loader_class(module, name)
    if head.startswith(b"PK\x03\x04"):
        # .pt/.pth/.ckpt/.pt2/.keras are zip archives; no loader could open this one.
        raise ModelFileError(
            f"cannot read {path}: a zip archive that is truncated or corrupt "
            "(its member directory is missing or unreadable)",
            hint="download or copy the file again",
        )
    raise ModelFileError(
        f"cannot read {path}: not a model format convaudit recognises", hint=_SUPPORTED_HINT
    )


def _unexpected(path: Path, loader: str, action: str, exc: BaseException) -> ConvauditError:
    """Wrap an exception a reader/writer did not anticipate; ``--debug`` shows the original."""
    if isinstance(exc, MemoryError):
        return ResourceLimitError(
            f"cannot {action} {path}: out of memory",
            hint="lower --max-memory, or ask for sigma_max only",
        )
    if isinstance(exc, RecursionError):
        return ModelFileError(f"cannot {action} {path}: the file is nested too deeply")
    detail = " ".join(str(exc).split())[:200]
    return UnexpectedLoaderError(
        f"cannot {action} {path}: the {loader} reader failed on this file "
        f"({type(exc).__name__}: {detail})",
        hint="the file is probably corrupt; if its own framework opens it, please report this "
        "with the output of --debug",
    )


def load_model(path: str | Path, options: LoadOptions | None = None) -> ModelIR:
    """Read a model file of any supported format into the IR.

    Raises a ConvauditError for every bad file; never anything else (KeyboardInterrupt aside).
    """
    p = Path(path)
    cls = detect(p)
    try:
        return cls().load(p, options or LoadOptions())
    except _PASS_THROUGH:
        raise
    except Exception as exc:  # MemoryError and RecursionError are Exceptions too
        raise _unexpected(p, cls.name, "read", exc) from exc


def write_kernels(ir: ModelIR, dest: str | Path, updates: Mapping[str, np.ndarray]) -> None:
    """Write a copy of ``ir.path`` to ``dest`` with the named layers' kernels replaced.

    ``dest`` should be a temporary path from :func:`convaudit.atomic.atomic_path`.
    """
    dest = Path(dest)
    for fmt, _, module, name in _LOADERS:
        if fmt == ir.format:
            cls = _loader_class(module, name)
            try:
                cls().write_kernels(ir, dest, updates)
            except _PASS_THROUGH:
                raise
            except OSError as exc:
                hint = "free some disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
                raise OutputError(f"cannot write {dest}: {exc.strerror or exc}", hint=hint) from exc
            except Exception as exc:
                raise _unexpected(Path(ir.path), cls.name, "write a copy of", exc) from exc
            return
    raise ModelFileError(f"no writer for format {ir.format!r}")


__all__ = ["FORMATS", "LoadOptions", "Loader", "detect", "load_model", "write_kernels"]
