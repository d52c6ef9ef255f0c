"""Write new kernels back into a PyTorch file of the same kind, changing nothing else.

Each container is re-read with the same safe reader, the named tensors are overwritten in place
(same key, shape and stored dtype; tied tensors stay tied) and the object is saved the way it was
written: ``torch.save`` (zip, or legacy with ``_use_new_zipfile_serialization=False``),
``safetensors.torch.save_file`` with the original metadata, ``torch.jit.save`` with the
archive's extra files, ``torch.export.save``. A full pickled module is written back only because
it could only have been loaded with trust_pickle.

A checkpoint read by the restricted reader (objects of classes it did not load) cannot be
pickled again, and need not be: only the bytes of the changed storages are replaced
(:mod:`.storages`), so its pickle, every other storage and every other member stay
byte-identical.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convaudit.errors import ModelFileError
from convaudit.ir import ModelIR
from convaudit.loaders.pytorch.archive import (
    NESTING_KEYS,
    check_zip_file,
    read_safetensors,
    torch_load,
)
from convaudit.loaders.pytorch.programs import load_exported_program, quiet_jit
from convaudit.loaders.pytorch.storages import write_storages


def _replacements(
    ir: ModelIR, updates: Mapping[str, np.ndarray]
) -> tuple[str, str, dict[str, np.ndarray]]:
    """(container, nesting, {state_dict key: new kernel}) for the named layers.

    ``container`` is "pickled-module" for anything read with full unpickling (trust_pickle).
    """
    by_name = {layer.name: layer for layer in ir.layers}
    found: dict[str, np.ndarray] = {}
    kinds: set[tuple[str, str]] = set()
    for name, kernel in updates.items():
        layer = by_name.get(name)
        if layer is None or layer.provenance is None or layer.provenance.format != "pytorch":
            raise ModelFileError(
                f"cannot write {name!r}: no PyTorch layer of that name in {ir.path}"
            )
        prov = layer.provenance
        container = prov.get("container") or "zip"
        if prov.get("unpickled") == "full":  # it could only have been read with trust_pickle
            container = "pickled-module"
        kinds.add((container, prov.get("nesting") or ""))
        found[prov.locator] = np.asarray(kernel)
    if len(kinds) > 1:
        raise ModelFileError(
            f"cannot write {ir.path}: layers come from different containers {sorted(kinds)}"
        )
    container, nesting = kinds.pop() if kinds else ("zip", "")
    return container, nesting, found


def _assign(tensors: Mapping[str, Any], new: Mapping[str, np.ndarray], path: str) -> None:
    """Overwrite the stored tensors in place, in their own dtype."""
    import torch

    for key, kernel in new.items():
        target = tensors.get(key)
        if target is None:
            raise ModelFileError(f"cannot write {path}: tensor {key!r} is no longer in the file")
        if tuple(target.shape) != kernel.shape:
            raise ModelFileError(
                f"cannot write {key!r}: new kernel has shape {kernel.shape}, the file stores {tuple(target.shape)}"
            )
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(kernel)).to(target.dtype))


def _nested(obj: Any, nesting: str) -> Any:
    for part in nesting.split(".") if nesting else []:
        obj = obj[part]
    return obj


def _write_pickle(
    ir: ModelIR, dest: Path, container: str, nesting: str, new: Mapping[str, np.ndarray]
) -> None:
    import torch

    path = Path(ir.path)
    legacy = not zipfile.is_zipfile(path)
    if not legacy:
        check_zip_file(path)
    trusted = container == "pickled-module"
    loaded = torch_load(path, trust_pickle=trusted)
    obj = loaded.obj
    target = _nested(obj, nesting)
    if trusted and isinstance(target, Mapping):  # a module kept under 'model' / 'net' / ...
        target = next(
            (target[k] for k in NESTING_KEYS if isinstance(target.get(k), torch.nn.Module)), target
        )
    tensors = target.state_dict(keep_vars=True) if isinstance(target, torch.nn.Module) else target
    _assign(tensors, new, ir.path)
    if loaded.restricted is not None:  # placeholders inside: patch the storages' bytes
        storages = {key: tensors[key] for key in new}
        write_storages(path, dest, loaded.restricted, storages, legacy=legacy)
        return
    torch.save(obj, dest, _use_new_zipfile_serialization=not legacy)


def _write_safetensors(ir: ModelIR, dest: Path, new: Mapping[str, np.ndarray]) -> None:
    from safetensors.torch import save_file

    sd = read_safetensors(Path(ir.path))
    tensors = dict(sd.tensors)
    _assign(tensors, new, ir.path)
    save_file(tensors, str(dest), metadata=dict(sd.metadata) or None)


def _write_torchscript(ir: ModelIR, dest: Path, new: Mapping[str, np.ndarray]) -> None:
    import torch

    path = Path(ir.path)
    check_zip_file(path)
    with zipfile.ZipFile(path) as zf:
        extra = {n.split("/extra/", 1)[1]: "" for n in zf.namelist() if "/extra/" in n}
    with quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        tensors = {**dict(module.named_buffers()), **dict(module.named_parameters())}
        _assign(tensors, new, ir.path)
        torch.jit.save(module, str(dest), _extra_files=extra)


def _write_exported(ir: ModelIR, dest: Path, new: Mapping[str, np.ndarray]) -> None:
    import torch

    ep = load_exported_program(Path(ir.path))
    _assign({**ep.state_dict, **ep.constants}, new, ir.path)
    with open(dest, "wb") as f:  # a file object: torch.export.save insists on a .pt2 name otherwise
        torch.export.save(ep, f)


def write_kernels(ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
    container, nesting, new = _replacements(ir, updates)
    if container == "safetensors":
        _write_safetensors(ir, dest, new)
    elif container == "torchscript":
        _write_torchscript(ir, dest, new)
    elif container == "pt2":
        _write_exported(ir, dest, new)
    else:
        _write_pickle(ir, dest, container, nesting, new)
