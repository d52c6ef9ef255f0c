"""The ONNX loader: read every conv / dense layer of an ``.onnx`` file into the IR, with each
conv's real input size, the node graph for the whole-network bound, and a writer that puts new
kernels back where they came from.

The work is split by concern:

- ``model``: safe parsing, opset checks, subgraph depth, external data (kept inside the
  model's folder, sizes checked before reading); ``topology``: dependency order, cycles,
  dangling inputs;
- ``inputs``: the input shapes (dynamic dims, --input-shape / --input-size / --input-value);
  ``shapes``: shape inference in every scope and the onnxruntime fallback (``inline``: one run
  of an If / Loop / Scan body in the main graph, so onnxruntime can measure its tensors);
- ``subgraphs``: the main graph and every If / Loop / Scan body as a scope, named by its branch
  path; ``weights``: constant resolution (initializers, Constant nodes, Identity/Cast,
  DequantizeLinear, Shape of known shapes, given input values, folded constant subgraphs, outer
  scopes) and where each value is stored;
- ``layers`` (+ ``padding``, ``dense``, ``nodes``): nodes -> ConvLayer / DenseLayer /
  SkippedLayer in every scope, BatchNorm attachment;
- ``graph`` (+ ``graph_ops``, ``patterns``, ``resize``): the ir.Graph for the whole-network
  bound (its vocabulary, and how an If is followed, are documented in ``graph``);
- ``writer``: kernels back into initializers, Constant nodes or a new external data file.

Provenance (``ConvLayer.provenance`` / ``DenseLayer.provenance``): ``locator`` is the
initializer name or the Constant node's output name that holds the weight (behind any
Identity / Cast); ``dtype`` its stored dtype; ``layout`` "oihw" (conv, stored as the IR kernel),
"oi" or "io" (dense: stored as (out, in) or transposed); ``extra`` has ``source``
(initializer / constant / computed / quantized), ``op``, ``external`` (the data file) when
stored outside the model, ``scope`` (the subgraph path) when it is stored inside an If / Loop /
Scan body, ``alpha`` for a Gemm with alpha != 1, and ``read_only`` (the reason) when the writer
cannot put a float kernel there.

Layer names are the node names, or ``<op>_<index in graph.node>`` when a node has none; inside a
subgraph they are prefixed with its branch path (``If_0/then_branch/<node name>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders.interface import Loader, LoadOptions
from convaudit.loaders.onnx.graph import build_graph
from convaudit.loaders.onnx.inputs import fix_inputs
from convaudit.loaders.onnx.layers import Extracted, LayerExtractor
from convaudit.loaders.onnx.model import read_onnx, unknown_domains
from convaudit.loaders.onnx.shapes import infer_shapes, measure_sizes
from convaudit.loaders.onnx.sniff import looks_like_onnx as looks_like_onnx  # re-exported
from convaudit.loaders.onnx.sniff import sniff
from convaudit.loaders.onnx.subgraphs import open_scopes
from convaudit.loaders.onnx.topology import topological_order


class OnnxLoader(Loader):
    name = "onnx"

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return sniff(path, head)

    def load(self, path: Path, options: LoadOptions) -> ModelIR:
        onnx_file = read_onnx(path)
        graph = onnx_file.graph
        order = topological_order(path, graph)
        fixed = fix_inputs(
            onnx_file,
            options.input_shapes,
            size=options.input_size,
            values=options.input_values,
        )
        notes = list(fixed.notes)
        inferred = infer_shapes(onnx_file, fixed.shapes, fixed.values)
        main = open_scopes(onnx_file, order, inferred.shapes, inferred.types, fixed.values)
        notes += measure_sizes(onnx_file, main, fixed)
        given = bool(options.input_shapes or options.input_size or options.input_values)
        extracted: Extracted = LayerExtractor(main, given, path.name).run()
        notes.extend(extracted.notes)
        unsized = [
            c.name for c in extracted.layers if isinstance(c, ConvLayer) and c.input_size is None
        ]
        if unsized:
            notes.append(f"input size unknown for {len(unsized)} conv(s): {', '.join(unsized[:5])}")
        for domain in unknown_domains(onnx_file.model):
            notes.append(
                f"ops of domain {domain!r} are not known to convaudit: they have no Lipschitz rule, "
                "and sizes after them come from onnxruntime where it can run them"
            )
        ir_graph, graph_notes = build_graph(onnx_file, main, extracted, fixed.values)
        notes.extend(graph_notes)
        return ModelIR(
            path=str(path),
            format=self.name,
            layers=tuple(extracted.layers),
            skipped=tuple(extracted.skipped),
            input_shapes={k: tuple(v) for k, v in fixed.shapes.items()},
            graph=ir_graph,
            notes=tuple(notes),
        )

    def write_kernels(self, ir: ModelIR, dest: Path, updates: Mapping[str, np.ndarray]) -> None:
        from convaudit.loaders.onnx.writer import write_kernels

        write_kernels(ir, Path(dest), updates)
