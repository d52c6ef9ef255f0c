"""Tensor shapes of an ONNX model: onnx's shape inference (with data propagation) in the main
graph and in every If / Loop / Scan body, and one onnxruntime run on zeros (or the given input
values) for the tensors inference leaves unknown. The input shapes come from :mod:`.inputs`."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convaudit.loaders.onnx.inline import inline_chain
from convaudit.loaders.onnx.inputs import FixedInputs, declared_shape, real_inputs
from convaudit.loaders.onnx.layers import CONV_OPS
from convaudit.loaders.onnx.model import OnnxFile, all_tensors
from convaudit.loaders.onnx.subgraphs import Scope, scope_graphs

Shape = tuple[int | None, ...]
#: tensors above this many bytes are hidden from shape inference (it needs only their dims)
_INLINE_LIMIT = 4096
#: ops whose input tensor size the layers and the graph need (conv geometry, pooling, resize)
SIZED_OPS = (
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


@dataclass(frozen=True)
class Inferred:
    """Shapes and element types by scope path ("" for the main graph, see :mod:`.subgraphs`)."""

    shapes: dict[str, dict[str, Shape]]
    types: dict[str, dict[str, int]]


def infer_shapes(
    onnx_file: OnnxFile,
    fixed: Mapping[str, tuple[int, ...]],
    values: Mapping[str, np.ndarray] | None = None,
) -> Inferred:
    """Every tensor's shape and element type that onnx.shape_inference (with data propagation)
    can work out, in each scope. Given input values become constants for data propagation."""
    model = onnx.ModelProto()
    model.CopyFrom(onnx_file.model)
    _set_input_dims(model.graph, fixed)
    _hide_large_tensors(model.graph)
    if values:  # a constant for data propagation: an initializer, and no longer an input
        kept = [i for i in model.graph.input if i.name not in values]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        for name, value in values.items():
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort; the runtime fallback covers the rest
        inferred = model
    shapes: dict[str, dict[str, Shape]] = {}
    types: dict[str, dict[str, int]] = {}
    for path, graph in scope_graphs(inferred.graph):
        local_shapes = shapes.setdefault(path, {})
        local_types = types.setdefault(path, {})
        for value in [*graph.input, *graph.value_info, *graph.output]:
            local_types[value.name] = value.type.tensor_type.elem_type
            shape = declared_shape(value)
            if shape is not None:
                local_shapes[value.name] = shape
        for tensor in graph.initializer:
            local_shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
            local_types[tensor.name] = tensor.data_type
    return Inferred(shapes, types)


def _hide_large_tensors(graph: onnx.GraphProto) -> None:
    """Mark big tensors external: inference needs only their dims, and skips copying weights.

    Data propagation reads small constants (shapes, axes), which stay inline.
    """
    for tensor in all_tensors(graph):
        if tensor.HasField("raw_data") and len(tensor.raw_data) > _INLINE_LIMIT:
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", "not-loaded"


def _set_input_dims(graph: onnx.GraphProto, fixed: Mapping[str, tuple[int, ...]]) -> None:
    for value in graph.input:
        if value.name in fixed:
            shape = value.type.tensor_type.shape
            del shape.dim[:]
            for d in fixed[value.name]:
                shape.dim.add().dim_value = int(d)


def inline_model(onnx_file: OnnxFile) -> onnx.ModelProto:
    """A copy of the model with every external tensor's bytes inlined (for onnxruntime)."""
    model = onnx.ModelProto()
    model.CopyFrom(onnx_file.model)
    for original, copy in zip(all_tensors(onnx_file.graph), all_tensors(model.graph), strict=True):
        if id(original) in onnx_file.external:
            data = onnx_file.array(original)
            del copy.external_data[:]
            copy.data_location = onnx.TensorProto.DEFAULT
            copy.raw_data = np.ascontiguousarray(data).tobytes()
    return model


def runtime_shapes(
    model: onnx.ModelProto,
    fixed: Mapping[str, tuple[int, ...]],
    names: Iterable[str],
    known_types: Mapping[str, int],
    values: Mapping[str, np.ndarray] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Run onnxruntime once on zeros (the given values where there are some), exposing ``names``
    as outputs of ``model`` (external data inlined: :func:`inline_model`); their shapes, or {}
    when onnxruntime cannot run it."""
    names = sorted(set(names))
    if not names:
        return {}
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _set_input_dims(copy.graph, fixed)
    outputs = {o.name for o in copy.graph.output}
    for name in names:
        if name not in outputs:
            elem = known_types.get(name) or onnx.TensorProto.FLOAT
            copy.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    types = {v.name: v.type.tensor_type.elem_type for v in real_inputs(copy.graph)}
    given = dict(values or {})
    try:
        # onnxruntime prints provider fallbacks itself; a library must stay quiet
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            session = ort.InferenceSession(
                copy.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        feeds = {
            name: given[name]
            if name in given
            else np.zeros(shape, helper.tensor_dtype_to_np_dtype(types.get(name, 1)))
            for name, shape in fixed.items()
            if name in types
        }
        results = session.run(names, feeds)
    except Exception:  # onnxruntime cannot run it: sizes stay unknown, and the loader says so
        return {}
    return {
        name: tuple(int(d) for d in np.shape(r)) for name, r in zip(names, results, strict=True)
    }


def known(shape: Shape | None) -> bool:
    return shape is not None and all(d is not None for d in shape)


def measure_sizes(onnx_file: OnnxFile, main: Scope, fixed: FixedInputs) -> list[str]:
    """Measure with onnxruntime the input sizes of the sized ops that inference left unknown, in
    every scope (a subgraph's through :func:`inline_chain`); they go into the scopes' shapes.
    Returns notes saying what was measured and what could not be."""
    model: onnx.ModelProto | None = None
    runs = measured = 0
    notes: list[str] = []
    for scope in main.walk():
        unknown = sorted(
            {
                node.input[0]
                for node in scope.graph.node
                if node.op_type in SIZED_OPS
                and node.input
                and node.input[0]
                and not known(scope.shapes.get(node.input[0]))
            }
        )
        if not unknown:
            continue
        model = model if model is not None else inline_model(onnx_file)
        target = model if scope.parent is None else inline_chain(model, scope.chain(), unknown)
        if target is None:
            notes.append(f"{scope.path}: input sizes inside it could not be measured")
            continue
        found = runtime_shapes(target, fixed.shapes, unknown, scope.types, fixed.values)
        runs += 1
        measured += len(found)
        scope.local_shapes.update(found)
        if not found and scope.parent is not None:
            notes.append(
                f"{scope.path}: onnxruntime could not run it on these inputs, so the sizes "
                "inside it stay unknown"
            )
    if measured:
        how = "one onnxruntime run" if runs == 1 else f"{runs} onnxruntime runs"
        given = " and the --input-value values" if fixed.values else ""
        notes.insert(0, f"{measured} tensor sizes measured by {how} on zeros{given}")
    return notes
