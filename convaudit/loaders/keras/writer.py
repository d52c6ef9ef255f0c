"""Write new kernels into a copy of a Keras file, changing nothing else.

- ``.h5`` / ``.hdf5`` / ``.weights.h5``: copy the file byte for byte, then overwrite the kernel
  datasets in place with h5py (same shape, same dtype, same storage);
- ``.keras``: rewrite the zip, copying every member unchanged (same names, order, timestamps,
  compression) except ``model.weights.h5``, whose image is patched the same way in memory.
Kernels arrive in the canonical layout and go back to the layout recorded in their Provenance.
The caller chooses ``dest`` (a temporary path) and makes the write atomic.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from convaudit.errors import ModelFileError
from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders.keras.layers import from_canonical

WEIGHTS_MEMBER = "model.weights.h5"


def _targets(
    ir: ModelIR, updates: Mapping[str, np.ndarray]
) -> list[tuple[str, str, str, np.ndarray]]:
    """(dataset path, layout, dtype, new kernel) per update, checked against the IR."""
    out = []
    for name, kernel in updates.items():
        try:
            layer = ir.layer(name)
        except KeyError:
            raise ModelFileError(
                f"cannot write {ir.path}: it has no layer named {name!r}"
            ) from None
        prov = layer.provenance
        if prov is None or prov.format != "keras":
            raise ModelFileError(f"cannot write layer {name}: it was not read from a Keras file")
        current = layer.kernel if isinstance(layer, ConvLayer) else layer.weight
        if tuple(np.shape(kernel)) != tuple(current.shape):
            raise ModelFileError(
                f"cannot write layer {name}: new kernel has shape {np.shape(kernel)}, the layer {current.shape}"
            )
        out.append((prov.locator, prov.layout, prov.dtype, np.asarray(kernel)))
    return out


def _patch(h5: h5py.File, targets: list[tuple[str, str, str, np.ndarray]]) -> None:
    for locator, layout, dtype, kernel in targets:
        ds = h5.get(locator)
        if not isinstance(ds, h5py.Dataset):
            raise ModelFileError(f"cannot write: dataset {locator!r} is not in the file any more")
        if str(ds.dtype) != dtype:
            raise ModelFileError(
                f"cannot write: dataset {locator!r} is {ds.dtype}, the model was read as {dtype}"
            )
        ds[...] = from_canonical(kernel, layout, tuple(ds.shape)).astype(ds.dtype, copy=False)


def write_kernels(ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
    """Write a copy of ``ir.path`` to ``dest`` with the named layers' kernels replaced."""
    src = Path(ir.path)
    targets = _targets(ir, updates)
    containers = {dict(ir.layer(n).provenance.extra).get("container") for n in updates}  # type: ignore[union-attr]
    container = containers.pop() if len(containers) == 1 else "h5"
    try:
        if container == "keras-zip":
            _write_zip(src, dest, targets)
        else:
            shutil.copyfile(src, dest)
            with h5py.File(dest, "r+") as h5:
                _patch(h5, targets)
    except OSError as exc:
        raise ModelFileError(f"cannot write {dest}: {exc}") from None


def _write_zip(src: Path, dest: Path, targets: list[tuple[str, str, str, np.ndarray]]) -> None:
    try:
        zin = zipfile.ZipFile(src)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(
            f"cannot write: {src} is not a readable .keras archive ({exc})"
        ) from None
    with zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == WEIGHTS_MEMBER:
                image = io.BytesIO(data)
                with h5py.File(image, "r+") as h5:
                    _patch(h5, targets)
                data = image.getvalue()
            zout.writestr(info, data, compress_type=info.compress_type)
