"""Input shapes for an ONNX model: fix dynamic dims, infer every tensor's shape, and fall back
to one onnxruntime run on zeros for the tensors shape inference leaves unknown."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper

from convaudit.errors import InputShapeError
from convaudit.loaders.onnx.model import OnnxFile, all_tensors

Shape = tuple[int | None, ...]
HINT_EXAMPLE = "1,3,224,224"
#: tensors above this many bytes are hidden from shape inference (it needs only their dims)
_INLINE_LIMIT = 4096


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (old models also list initializers as inputs)."""
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def declared_shape(value: onnx.ValueInfoProto) -> Shape | None:
    """The declared dims (None where symbolic/unknown), or None when the rank is unknown."""
    ttype = value.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in ttype.shape.dim)


def _dim_label(d: onnx.TensorShapeProto.Dimension) -> str:
    if d.HasField("dim_value"):
        return str(d.dim_value)
    return d.dim_param or "?"


def fix_input_shapes(
    onnx_file: OnnxFile, given: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Full, static shapes for every real input, and notes about what was assumed.

    ``given`` (``--input-shape``) wins over declared dims, but may not contradict a static one.
    A dynamic batch dim (the first of a rank >= 3 input) is taken as 1: it does not change any
    spatial size.
    """
    inputs = real_inputs(onnx_file.graph)
    names = [i.name for i in inputs]
    path = onnx_file.path
    given = dict(given)
    if "" in given:
        if len(inputs) != 1:
            raise InputShapeError(
                f"{path.name} has {len(inputs)} inputs ({', '.join(names)}); name the one each "
                "--input-shape is for",
                hint=f"--input-shape {names[0] if names else 'NAME'}={HINT_EXAMPLE}",
            )
        given.setdefault(names[0], given.pop(""))
        given.pop("", None)
    for name in given:
        if name not in names:
            raise InputShapeError(
                f"--input-shape names {name!r}, but {path.name} has no such input "
                f"(inputs: {', '.join(names) or 'none'})"
            )
    fixed: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    dynamic: list[str] = []
    for value in inputs:
        declared = declared_shape(value)
        if value.name in given:
            shape = tuple(int(d) for d in given[value.name])
            _check_against_declared(path.name, value, declared, shape)
            fixed[value.name] = shape
            continue
        if declared is None:
            dynamic.append(f"{value.name} (rank unknown)")
            continue
        dims = list(declared)
        if len(dims) >= 3 and dims[0] is None:  # N of NC<spatial>
            dims[0] = 1
            notes.append(f"input {value.name}: dynamic batch dim taken as 1")
        if any(d is None for d in dims):
            labels = [_dim_label(d) for d in value.type.tensor_type.shape.dim]
            dynamic.append(f"{value.name} [{', '.join(labels)}]")
            continue
        fixed[value.name] = tuple(int(d) for d in dims if d is not None)
    if dynamic:
        first = inputs[0].name if inputs else "NAME"
        raise InputShapeError(
            f"{path.name} has dynamic input dims: {'; '.join(dynamic)}",
            hint=f"fix them with --input-shape NAME=DIMS (repeatable), e.g. --input-shape {first}={HINT_EXAMPLE}",
        )
    return fixed, notes


def _check_against_declared(
    model: str, value: onnx.ValueInfoProto, declared: Shape | None, shape: tuple[int, ...]
) -> None:
    if declared is None:
        return
    if len(declared) != len(shape):
        raise InputShapeError(
            f"--input-shape {value.name}={','.join(map(str, shape))} has rank {len(shape)}, "
            f"but {model} declares rank {len(declared)} "
            f"[{', '.join(_dim_label(d) for d in value.type.tensor_type.shape.dim)}]"
        )
    for axis, (want, got) in enumerate(zip(declared, shape, strict=True)):
        if want is not None and want != got:
            what = "channel count" if axis == 1 else f"dim {axis}"
            raise InputShapeError(
                f"--input-shape {value.name}={','.join(map(str, shape))} contradicts {model}: "
                f"its {what} is {want}, not {got}"
            )


def infer_shapes(
    onnx_file: OnnxFile, fixed: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, Shape], dict[str, int]]:
    """Every tensor's shape and element type that onnx.shape_inference (with data propagation)
    can work out."""
    model = onnx.ModelProto()
    model.CopyFrom(onnx_file.model)
    _set_input_dims(model.graph, fixed)
    _hide_large_tensors(model.graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort; the runtime fallback covers the rest
        inferred = model
    shapes: dict[str, Shape] = {}
    types: dict[str, int] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        types[value.name] = value.type.tensor_type.elem_type
        shape = declared_shape(value)
        if shape is not None:
            shapes[value.name] = shape
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    return shapes, types


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
    onnx_file: OnnxFile,
    fixed: Mapping[str, tuple[int, ...]],
    names: Iterable[str],
    known_types: Mapping[str, int],
) -> dict[str, tuple[int, ...]]:
    """Run onnxruntime once on zeros, exposing ``names`` as outputs; their shapes, or {} on failure."""
    names = sorted(set(names))
    if not names:
        return {}
    import onnxruntime as ort

    model = inline_model(onnx_file)
    _set_input_dims(model.graph, fixed)
    outputs = {o.name for o in model.graph.output}
    for name in names:
        if name not in outputs:
            elem = known_types.get(name, onnx.TensorProto.FLOAT)
            model.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    types = {v.name: v.type.tensor_type.elem_type for v in real_inputs(onnx_file.graph)}
    try:
        # onnxruntime prints provider fallbacks itself; a library must stay quiet
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        feeds = {
            name: np.zeros(shape, helper.tensor_dtype_to_np_dtype(types.get(name, 1)))
            for name, shape in fixed.items()
        }
        results = session.run(names, feeds)
    except Exception:  # onnxruntime cannot run it: sizes stay unknown, and the loader says so
        return {}
    return {
        name: tuple(int(d) for d in np.shape(r)) for name, r in zip(names, results, strict=True)
    }
