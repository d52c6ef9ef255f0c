"""Model loaders: detect a file's format from its content and read it into the IR."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convaudit.errors import ModelFileError
from convaudit.ir import ModelIR
from convaudit.loaders.interface import Loader, LoadOptions

# module name -> class name; imported lazily so that e.g. reading an ONNX file never imports
# the Keras reader. Order matters: the first whose sniff() accepts the file wins.
_LOADERS: tuple[tuple[str, str], ...] = (
    ("convaudit.loaders.keras", "KerasLoader"),
    ("convaudit.loaders.pytorch", "PyTorchLoader"),
    ("convaudit.loaders.onnx", "OnnxLoader"),
)

FORMATS = ("onnx", "pytorch", "keras")


def _loader_classes() -> list[type[Loader]]:
    return [getattr(importlib.import_module(mod), cls) for mod, cls in _LOADERS]


def detect(path: Path) -> type[Loader]:
    """The loader class for ``path``, chosen from the file's content."""
    if not path.exists():
        raise ModelFileError(f"cannot read {path}: no such file")
    if path.is_dir():
        raise ModelFileError(
            f"cannot read {path}: it is a folder",
            hint="pass the model file itself (.onnx, .pt, .pt2, .safetensors, .h5, .keras)",
        )
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise ModelFileError(f"cannot read {path}: the file is empty")
    for cls in _loader_classes():
        if cls.sniff(path, head):
            return cls
    raise ModelFileError(
        f"cannot read {path}: not a model format convaudit recognises",
        hint="convaudit reads ONNX, PyTorch (.pt/.pth/.ckpt/.pt2/.safetensors/TorchScript) and Keras (.h5/.keras/.weights.h5) files",
    )


def load_model(path: str | Path, options: LoadOptions | None = None) -> ModelIR:
    """Read a model file of any supported format into the IR."""
    p = Path(path)
    return detect(p)().load(p, options or LoadOptions())


def write_kernels(ir: ModelIR, dest: str | Path, updates: Mapping[str, np.ndarray]) -> None:
    """Write a copy of ``ir.path`` to ``dest`` with the named layers' kernels replaced."""
    for cls in _loader_classes():
        if cls.name == ir.format:
            cls().write_kernels(ir, Path(dest), updates)
            return
    raise ModelFileError(f"no writer for format {ir.format!r}")


__all__ = ["FORMATS", "LoadOptions", "Loader", "detect", "load_model", "write_kernels"]
