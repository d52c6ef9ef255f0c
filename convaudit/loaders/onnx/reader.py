"""The ONNX loader: read every conv / dense layer of an ``.onnx`` file into the IR, with each
conv's real input size, the node graph for the whole-network bound, and a writer that puts new
kernels back where they came from.

The work is split by concern:

- ``onnx_model``: safe parsing, opset checks, external data (kept inside the model's folder,
  sizes checked before reading); ``onnx_topology``: dependency order, cycles, dangling inputs;
- ``onnx_shapes``: dynamic input dims, shape inference, the onnxruntime fallback;
- ``onnx_weights``: constant resolution (initializers, Constant nodes, Identity/Cast,
  DequantizeLinear, folded constant subgraphs) and where each value is stored;
- ``onnx_layers`` (+ ``onnx_padding``, ``onnx_dense``, ``onnx_nodes``): nodes -> ConvLayer /
  DenseLayer / SkippedLayer, BatchNorm attachment;
- ``onnx_graph`` (+ ``onnx_graph_ops``, ``onnx_patterns``, ``onnx_resize``): the ir.Graph for
  the whole-network bound (its attribute vocabulary is documented in ``onnx_graph``);
- ``onnx_writer``: kernels back into initializers, Constant nodes or a new external data file.

Provenance (``ConvLayer.provenance`` / ``DenseLayer.provenance``): ``locator`` is the
initializer name or the Constant node's output name that holds the weight (behind any
Identity / Cast); ``dtype`` its stored dtype; ``layout`` "oihw" (conv, stored as the IR kernel),
"oi" or "io" (dense: stored as (out, in) or transposed); ``extra`` has ``source``
(initializer / constant / computed / quantized), ``op``, ``external`` (the data file) when
stored outside the model, ``alpha`` for a Gemm with alpha != 1, and ``read_only`` (the reason)
when the writer cannot put a float kernel there.

Layer names are the node names, or ``<op>_<index in graph.node>`` when a node has none.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders.interface import Loader, LoadOptions
from convaudit.loaders.onnx.graph import build_graph
from convaudit.loaders.onnx.layers import CONV_OPS, Extracted, LayerExtractor
from convaudit.loaders.onnx.model import OnnxFile, read_onnx
from convaudit.loaders.onnx.shapes import fix_input_shapes, infer_shapes, runtime_shapes
from convaudit.loaders.onnx.topology import node_inputs, topological_order
from convaudit.loaders.onnx.weights import ConstantResolver

# Magic numbers of formats that are never ONNX, whatever the suffix says.
_FOREIGN_MAGIC = (b"\x89HDF\r\n\x1a\n", b"PK\x03\x04", b"PK\x05\x06")
# ModelProto field number -> wire type (0 varint, 2 length-delimited)
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}
# ops whose input tensor size the layers and the graph need (conv geometry, pooling, resize)
_SIZED_OPS = (
    *CONV_OPS,
    "Resize",
    "Upsample",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "ReduceMax",
)


def looks_like_onnx(head: bytes) -> bool:
    """Walk the protobuf fields in ``head``: a ModelProto starts with ir_version (field 1)."""
    pos, seen = 0, 0
    while pos < len(head):
        key, pos = _varint(head, pos)
        if key is None:
            break
        number, wire = key >> 3, key & 7
        if _MODEL_FIELDS.get(number) != wire or (seen == 0 and number != 1):
            return False
        value, pos = _varint(head, pos)
        if value is None:
            break
        if number == 1 and not 1 <= value <= 64:
            return False
        if wire == 2:
            pos += value
        seen += 1
    return seen >= 1


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    result, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    return None, pos


class OnnxLoader(Loader):
    name = "onnx"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if head.startswith(_FOREIGN_MAGIC) or head[:1] == b"\x80":  # HDF5, zip, pickle
            return False
        return path.suffix.lower() == ".onnx" or looks_like_onnx(head)

    def load(self, path: Path, options: LoadOptions) -> ModelIR:
        onnx_file = read_onnx(path)
        graph = onnx_file.graph
        order = topological_order(path, graph)
        fixed, notes = fix_input_shapes(onnx_file, options.input_shapes)
        shapes, types = infer_shapes(onnx_file, fixed)
        unknown = [
            node.input[0]
            for node in graph.node
            if node.op_type in _SIZED_OPS and node.input and not _known(shapes.get(node.input[0]))
        ]
        if unknown:
            found = runtime_shapes(onnx_file, fixed, unknown, types)
            shapes.update(found)
            if found:
                notes.append(f"{len(found)} tensor sizes measured by one onnxruntime run on zeros")
        resolver = ConstantResolver(onnx_file, shapes)
        consumers = _consumers(onnx_file)
        outputs = {o.name for o in graph.output}
        extracted: Extracted = LayerExtractor(
            graph, resolver, shapes, consumers, outputs, bool(options.input_shapes), path.name
        ).run(order)
        notes.extend(extracted.notes)
        unsized = [
            c.name for c in extracted.layers if isinstance(c, ConvLayer) and c.input_size is None
        ]
        if unsized:
            notes.append(f"input size unknown for {len(unsized)} conv(s): {', '.join(unsized[:5])}")
        return ModelIR(
            path=str(path),
            format=self.name,
            layers=tuple(extracted.layers),
            skipped=tuple(extracted.skipped),
            input_shapes={k: tuple(v) for k, v in fixed.items()},
            graph=build_graph(onnx_file, order, resolver, shapes, extracted),
            notes=tuple(notes),
        )

    def write_kernels(self, ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
        from convaudit.loaders.onnx.writer import write_kernels

        write_kernels(ir, Path(dest), updates)


def _known(shape: tuple[int | None, ...] | None) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _consumers(onnx_file: OnnxFile) -> dict[str, list[int]]:
    users: dict[str, list[int]] = defaultdict(list)
    for idx, node in enumerate(onnx_file.graph.node):
        for name in dict.fromkeys(node_inputs(node)):
            users[name].append(idx)
    return users
