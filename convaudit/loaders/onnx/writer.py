"""Write new kernels back into a copy of an ONNX model, in place in its structure.

A kernel goes back where it was read from: an initializer, a ``Constant`` node's ``value``
tensor, or (for external data) the same offset in a copy of the data file. It keeps its stored
dtype and storage field; nothing else in the model changes. External data is copied next to the
destination under a new name (``<destination name>.data``, replacing a file of that name, or
``<destination name>.new.data`` when that is the input's own data file), never written into the
input's file.
Quantised or computed weights cannot take a float kernel; asking for one is an error.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convaudit.errors import ModelFileError, OutputError, UnsupportedLayerError
from convaudit.ir import ConvLayer, DenseLayer, ModelIR, Provenance
from convaudit.loaders.onnx.model import ExternalRef, OnnxFile, read_onnx
from convaudit.loaders.onnx.subgraphs import scope_graphs

# atomic_path's temporary names: ".<final name>.<random>.tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")


def write_kernels(ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
    source = Path(ir.path)
    onnx_file = read_onnx(source)
    stored = _stored_values(ir, updates)
    patches: dict[Path, list[tuple[ExternalRef, bytes]]] = {}  # data file -> (where, bytes)
    for (scope, locator), value in stored.items():
        tensor = _find_tensor(onnx_file, locator, scope)
        _check_fits(locator, tensor, value)
        ref = onnx_file.external.get(id(tensor))
        if ref is None:
            _set_inline(tensor, value)
        else:
            patches.setdefault(ref.path, []).append((ref, _raw_bytes(value)))
    if onnx_file.external:
        _write_external(onnx_file, dest, patches)
    try:
        dest.write_bytes(onnx_file.model.SerializeToString())
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from None


def _stored_values(
    ir: ModelIR, updates: Mapping[str, np.ndarray]
) -> dict[tuple[str, str], np.ndarray]:
    """(scope, locator) -> new tensor in the stored layout and dtype, checked for conflicts."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for name, new in updates.items():
        try:
            layer = ir.layer(name)
        except KeyError:
            raise ModelFileError(f"cannot write {ir.path}: no layer named {name!r}") from None
        prov = layer.provenance
        if prov is None or prov.format != "onnx":
            raise UnsupportedLayerError(f"cannot write layer {name}: it has no ONNX provenance")
        read_only = prov.get("read_only")
        if read_only:
            raise UnsupportedLayerError(
                f"cannot write layer {name}: its weight is {read_only}",
                hint="leave this layer out (e.g. with --layers)",
            )
        value = _to_stored(layer, np.asarray(new), prov)
        where = (prov.get("scope") or "", prov.locator)
        if where in out and not np.array_equal(out[where], value):
            raise UnsupportedLayerError(
                f"cannot write layer {name}: it shares weight {prov.locator!r} with another "
                "updated layer, and the two new kernels differ"
            )
        out[where] = value
    _check_tied_weights(ir, updates)
    return out


def _check_tied_weights(ir: ModelIR, updates: Mapping[str, np.ndarray]) -> None:
    """A weight read by several layers changes all of them: all must be updated, or none."""
    readers: dict[tuple[str, str], list[str]] = {}
    for layer in ir.layers:
        if layer.provenance is not None:
            key = (layer.provenance.get("scope") or "", layer.provenance.locator)
            readers.setdefault(key, []).append(layer.name)
    for name in updates:
        prov = ir.layer(name).provenance
        if prov is None:
            continue
        key = (prov.get("scope") or "", prov.locator)
        left_out = [n for n in readers[key] if n not in updates]
        if left_out:
            raise UnsupportedLayerError(
                f"cannot write layer {name}: its weight {prov.locator!r} is shared with "
                f"{', '.join(left_out)}, which would change too",
                hint="update every layer that shares the weight, with the same kernel",
            )


def _to_stored(layer: ConvLayer | DenseLayer, new: np.ndarray, prov: Provenance) -> np.ndarray:
    current = layer.kernel if isinstance(layer, ConvLayer) else layer.weight
    if new.shape != current.shape:
        raise UnsupportedLayerError(
            f"cannot write layer {layer.name}: new kernel has shape {new.shape}, the layer {current.shape}"
        )
    value = np.asarray(new, np.float64)
    if prov.layout == "io":
        value = value.T
    alpha = prov.get("alpha")
    if alpha is not None:
        value = value / float(alpha)
    dtype = np.dtype(
        helper.tensor_dtype_to_np_dtype(helper.np_dtype_to_tensor_dtype(_np_dtype(prov.dtype)))
    )
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise UnsupportedLayerError(
            f"cannot write layer {layer.name}: its weight is stored as {dtype}"
        )
    stored = value.astype(dtype)
    if not np.all(np.isfinite(stored.astype(np.float64))):
        raise UnsupportedLayerError(
            f"cannot write layer {layer.name}: the new kernel overflows {dtype}"
        )
    return np.ascontiguousarray(stored)


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _find_tensor(onnx_file: OnnxFile, locator: str, scope: str = "") -> onnx.TensorProto:
    """The initializer or Constant value named ``locator`` in the graph at ``scope`` (the main
    graph, or the If / Loop / Scan body of that path, see :mod:`.subgraphs`)."""
    graph = dict(scope_graphs(onnx_file.graph)).get(scope)
    for tensor in graph.initializer if graph is not None else ():
        if tensor.name == locator:
            return tensor
    for node in graph.node if graph is not None else ():
        if node.op_type == "Constant" and locator in node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    return attr.t
    raise ModelFileError(
        f"cannot write {onnx_file.path}: tensor {locator!r} is gone (did the file change since it was read?)"
    )


def _check_fits(locator: str, tensor: onnx.TensorProto, value: np.ndarray) -> None:
    if (
        tuple(tensor.dims) != value.shape
        or helper.np_dtype_to_tensor_dtype(value.dtype) != tensor.data_type
    ):
        raise ModelFileError(
            f"cannot write tensor {locator!r}: the file holds {tuple(tensor.dims)} "
            f"{helper.tensor_dtype_to_np_dtype(tensor.data_type)}, expected {value.shape} {value.dtype} "
            "(did the file change since it was read?)"
        )


def _raw_bytes(value: np.ndarray) -> bytes:
    return numpy_helper.from_array(value).raw_data


def _set_inline(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    """Replace the data, keeping the storage field (raw_data or the typed repeated field)."""
    field = helper.tensor_dtype_to_field(tensor.data_type)
    if tensor.HasField("raw_data") or not len(getattr(tensor, field)):
        tensor.raw_data = _raw_bytes(value)
        return
    typed = helper.make_tensor("", tensor.data_type, value.shape, value.ravel(), raw=False)
    target = getattr(tensor, field)
    del target[:]
    target.extend(getattr(typed, field))


def final_name(dest: Path) -> str:
    """The name ``dest`` will end up with (atomic writers hand us a hidden temporary name)."""
    match = _TEMP_NAME.match(dest.name)
    return match.group("name") if match else dest.name


def _write_external(
    onnx_file: OnnxFile, dest: Path, patches: Mapping[Path, list[tuple[ExternalRef, bytes]]]
) -> None:
    """Copy each external data file next to ``dest`` (patched), and point the model at the copies."""
    sources = sorted({ref.path for ref in onnx_file.external.values()})
    inputs = {p.resolve() for p in sources}
    base = final_name(dest)
    new_names: dict[Path, str] = {}
    for k, src in enumerate(sources):
        name = f"{base}.data" if len(sources) == 1 else f"{base}.{k}.data"
        if (dest.parent / name).resolve() in inputs:
            name = f"{base}.new{'' if len(sources) == 1 else k}.data"  # in place: keep the input's
        new_names[src] = name
        _copy_patched(src, dest.parent / name, patches.get(src, []))
    tensors = {id(t): t for t in onnx_file.alive}
    for tensor_id, ref in onnx_file.external.items():
        for entry in tensors[tensor_id].external_data:
            if entry.key == "location":
                entry.value = new_names[ref.path]


def _copy_patched(src: Path, target: Path, patches: list[tuple[ExternalRef, bytes]]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "r+b") as f:
            for ref, data in patches:
                assert len(data) == ref.length
                f.seek(ref.offset)
                f.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
