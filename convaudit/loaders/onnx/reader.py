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
from convaudit.loaders.onnx.sniff import looks_like_onnx as looks_like_onnx  # re-exported
from convaudit.loaders.onnx.sniff import sniff
from convaudit.loaders.onnx.topology import node_inputs, topological_order
from convaudit.loaders.onnx.weights import ConstantResolver

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


class OnnxLoader(Loader):
    name = "onnx"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return sniff(path, head)

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
