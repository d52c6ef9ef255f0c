"""Read an ONNX file safely: parse, check opsets and structure, resolve external data.

Nothing here trusts a declared size: every tensor's byte count is checked against the bytes
actually present (in the protobuf or in its external data file) before anything is allocated,
and external data may only live inside the model's own folder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convaudit.errors import ModelFileError
from convaudit.loaders.safety import check_declared_bytes

# Domains whose ops onnx / onnxruntime (and its extensions) define. A model may declare others
# (Paddle2ONNX lists "Paddle", some converters "com.microsoft.mlfeaturizers"): a declared domain
# no node uses is ignored, and a node of an unknown domain is read as an op without a rule.
KNOWN_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.training",
        "ai.onnx.preview.training",
        "ai.onnx.preview",
        "ai.onnx.contrib",  # onnxruntime-extensions
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.microsoft.experimental",
        "com.microsoft.dml",
        "com.ms.internal.nhwc",
        "org.pytorch.aten",
    }
)
DEFAULT_DOMAINS = ("", "ai.onnx")
#: protobuf cannot hold more than this; larger models must use external data
MAX_PROTO_BYTES = 2**31 - 1
#: If / Loop / Scan bodies nested deeper than this are refused (real models nest 2 to 5 deep;
#: protobuf itself stops parsing at about 33)
MAX_SUBGRAPH_DEPTH = 16


@dataclass(frozen=True)
class ExternalRef:
    """Where one tensor's bytes live outside the .onnx file."""

    location: str  # as written in the model (relative to the model's folder)
    path: Path  # resolved, checked to be inside the model's folder
    offset: int
    length: int


@dataclass
class OnnxFile:
    """A parsed model (external data NOT loaded) plus the checked external-data references."""

    path: Path
    model: onnx.ModelProto
    external: dict[int, ExternalRef]  # id(TensorProto) -> reference
    # protobuf (upb) reuses wrapper objects only while they are alive: keep the keyed ones alive
    alive: list[onnx.TensorProto]

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    def opset(self) -> int:
        for imp in self.model.opset_import:
            if imp.domain in DEFAULT_DOMAINS:
                return int(imp.version)
        return 1

    def array(self, tensor: onnx.TensorProto) -> np.ndarray:
        """The tensor's value; external bytes are read only after their size was checked."""
        ref = self.external.get(id(tensor))
        inline = tensor
        if ref is not None:
            with open(ref.path, "rb") as f:
                f.seek(ref.offset)
                data = f.read(ref.length)
            inline = onnx.TensorProto()
            inline.CopyFrom(tensor)
            del inline.external_data[:]
            inline.data_location = onnx.TensorProto.DEFAULT
            inline.raw_data = data
        try:
            return numpy_helper.to_array(inline)
        except Exception as exc:  # onnx raises ValueError/KeyError/TypeError on malformed tensors
            raise ModelFileError(
                f"cannot read {self.path}: tensor {tensor.name!r} is malformed ({exc})"
            ) from None


def read_onnx(path: Path) -> OnnxFile:
    """Parse and check ``path``; raise ModelFileError with a one-line reason on bad input."""
    try:
        size = path.stat().st_size
        if size > MAX_PROTO_BYTES:
            raise ModelFileError(f"cannot read {path}: {size} bytes is over protobuf's 2 GiB limit")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError or RuntimeError depending on the backend
        raise ModelFileError(
            f"cannot read {path}: not a valid ONNX file (truncated or corrupt protobuf, or "
            "nested too deeply for protobuf)"
        ) from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelFileError(
            f"cannot read {path}: not an ONNX model (no ir_version, graph or opset_import)"
        )
    _check_nesting(path, model.graph)
    _check_names(path, model.graph)
    _check_opsets(path, model)
    external = {}
    alive = []
    for tensor in all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            external[id(tensor)] = _external_ref(path, tensor)
            alive.append(tensor)
        else:
            _check_inline_size(path, tensor)
    return OnnxFile(path=path, model=model, external=external, alive=alive)


def _check_names(path: Path, graph: onnx.GraphProto) -> None:
    """protobuf hands back bytes for strings that are not UTF-8: a corrupt file."""
    names = [v.name for v in (*graph.input, *graph.output, *graph.initializer)]
    for node in all_nodes(graph):
        names.extend((node.name, node.op_type, node.domain, *node.input, *node.output))
    if not all(isinstance(n, str) for n in names):
        raise ModelFileError(f"cannot read {path}: names that are not valid UTF-8 (corrupt file)")


def _check_nesting(path: Path, graph: onnx.GraphProto) -> None:
    """Refuse subgraphs nested deeper than MAX_SUBGRAPH_DEPTH (the readers recurse into them)."""
    stack = [(graph, 0)]
    while stack:
        current, depth = stack.pop()
        for node in current.node:
            for attr in node.attribute:
                for sub in subgraphs_of(attr):
                    if depth + 1 > MAX_SUBGRAPH_DEPTH:
                        raise ModelFileError(
                            f"cannot read {path}: If/Loop/Scan subgraphs are nested more than "
                            f"{MAX_SUBGRAPH_DEPTH} deep (at node {node.name or node.op_type!r})"
                        )
                    stack.append((sub, depth + 1))


def _check_opsets(path: Path, model: onnx.ModelProto) -> None:
    """The default domain's opset must be one onnx knows; every node's domain must be declared.

    Other declared domains need not be known: one that no node uses changes nothing, and a node
    of an unknown domain is read as an op without a rule (its convs around it still are)."""
    declared = {imp.domain: imp.version for imp in model.opset_import}
    newest = onnx.defs.onnx_opset_version()
    for domain in DEFAULT_DOMAINS:
        if declared.get(domain, 0) > newest:
            raise ModelFileError(
                f"cannot read {path}: opset {declared[domain]} is newer than the installed onnx "
                f"package supports ({newest})",
                hint="upgrade the onnx package",
            )
    for node in all_nodes(model.graph):
        if node.domain in declared:
            continue
        if node.domain in DEFAULT_DOMAINS and "" in declared:
            continue
        raise ModelFileError(
            f"cannot read {path}: node {node.name or node.op_type!r} uses domain "
            f"{node.domain!r}, which the model does not import"
        )


def unknown_domains(model: onnx.ModelProto) -> list[str]:
    """Domains some node uses that neither onnx/onnxruntime nor the model's functions define."""
    local = {f.domain for f in model.functions}
    used = {node.domain for node in all_nodes(model.graph)}
    return sorted(d for d in used if d not in KNOWN_DOMAINS and d not in local)


def _check_dtype_and_dims(path: Path, tensor: onnx.TensorProto) -> None:
    if any(d < 0 for d in tensor.dims):
        raise ModelFileError(f"cannot read {path}: tensor {tensor.name!r} has negative dims")
    try:
        if tensor.data_type:  # 0 (UNDEFINED) is left for whoever reads the value
            helper.tensor_dtype_to_np_dtype(tensor.data_type)
    except KeyError:
        raise ModelFileError(
            f"cannot read {path}: tensor {tensor.name!r} has unknown data type {tensor.data_type}"
        ) from None


def _external_ref(path: Path, tensor: onnx.TensorProto) -> ExternalRef:
    _check_dtype_and_dims(path, tensor)
    keys = {e.key: e.value for e in tensor.external_data}
    if not all(isinstance(v, str) for v in (*keys, *keys.values())):
        raise ModelFileError(f"cannot read {path}: corrupt external-data entry for {tensor.name!r}")
    location = keys.get("location", "")
    folder = path.parent.resolve()
    target = (folder / location).resolve()
    if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
        raise ModelFileError(
            f"cannot read {path}: tensor {tensor.name!r} points its external data at "
            f"{location!r}, outside the model's folder"
        )
    if not target.is_file():
        raise ModelFileError(
            f"cannot read {path}: external data file {location!r} (tensor {tensor.name!r}) is missing",
            hint=f"keep {location} next to {path.name}",
        )
    try:
        offset = int(keys.get("offset", "0"))
        available = target.stat().st_size - offset
        length = int(keys["length"]) if "length" in keys else available
    except ValueError:
        raise ModelFileError(
            f"cannot read {path}: tensor {tensor.name!r} has a malformed external-data offset/length"
        ) from None
    if offset < 0:
        raise ModelFileError(f"cannot read {path}: tensor {tensor.name!r} has a negative offset")
    check_declared_bytes(path, f"external tensor {tensor.name!r}", length, available)
    expected = declared_nbytes(tensor)
    if expected is not None and expected != length:
        raise ModelFileError(
            f"cannot read {path}: external tensor {tensor.name!r} has {length} bytes, its shape "
            f"needs {expected} (corrupt file)"
        )
    return ExternalRef(location=location, path=target, offset=offset, length=length)


def declared_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's dims and dtype call for, or None for non-numeric/packed types."""
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:
        return None
    if tensor.data_type in (onnx.TensorProto.STRING,) or itemsize == 0:
        return None
    bits = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    count = math.prod(int(d) for d in tensor.dims)
    if tensor.data_type in bits:
        return (count + 1) // 2
    return count * itemsize


def _check_inline_size(path: Path, tensor: onnx.TensorProto) -> None:
    _check_dtype_and_dims(path, tensor)
    expected = declared_nbytes(tensor)
    if expected is None:
        return
    if tensor.HasField("raw_data"):
        present = len(tensor.raw_data)
        if present != expected:
            check_declared_bytes(path, f"tensor {tensor.name!r}", expected, present)
            raise ModelFileError(
                f"cannot read {path}: tensor {tensor.name!r} has {present} bytes, its shape "
                f"needs {expected} (corrupt file)"
            )
        return
    field = helper.tensor_dtype_to_field(tensor.data_type)
    present_items = len(getattr(tensor, field))
    count = math.prod(int(d) for d in tensor.dims)
    if present_items and present_items < count:
        raise ModelFileError(
            f"cannot read {path}: tensor {tensor.name!r} declares {count} values but holds "
            f"{present_items} (corrupt file)"
        )


def all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            yield from attr.tensors
            for sub in subgraphs_of(attr):
                yield from all_tensors(sub)


def subgraphs_of(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    return list(attr.graphs)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in subgraphs_of(attr):
                yield from all_nodes(sub)
