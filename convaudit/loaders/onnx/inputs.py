"""The shapes (and given values) of an ONNX model's inputs, before anything is inferred.

Declared dims win where they are static; ``-1`` (Paddle2ONNX writes ``[-1, 3, -1, -1]``) and
symbolic dims are dynamic. A dynamic batch dim (the first of a rank >= 3 input) is taken as 1:
it changes no spatial size. The rest comes from the user: ``--input-shape NAME=DIMS`` (the full
shape), ``--input-size HxW`` (the spatial size of the single image-like input: batch 1, the
channels the graph declares) and ``--input-value NAME=VALUE`` (a value, which fixes the shape).
None of them may contradict a static declared dim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from convaudit.errors import InputShapeError
from convaudit.loaders.onnx.model import OnnxFile

Shape = tuple[int | None, ...]
HINT_EXAMPLE = "1,3,224,224"
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


@dataclass(frozen=True)
class FixedInputs:
    """Every real input's full static shape, the values given for some, and what was assumed."""

    shapes: dict[str, tuple[int, ...]]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (old models also list initializers as inputs)."""
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def declared_shape(value: onnx.ValueInfoProto) -> Shape | None:
    """The declared dims (None where symbolic, unknown or negative), or None when the rank is
    unknown."""
    ttype = value.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None
        for d in ttype.shape.dim
    )


def dim_labels(value: onnx.ValueInfoProto) -> str:
    """The declared dims as the file writes them, e.g. ``[N, 3, -1, ?]``."""
    labels = []
    for d in value.type.tensor_type.shape.dim:
        labels.append(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return f"[{', '.join(labels)}]"


def fix_inputs(
    onnx_file: OnnxFile,
    given: Mapping[str, tuple[int, ...]],
    *,
    size: tuple[int, ...] | None = None,
    values: Mapping[str, np.ndarray] | None = None,
) -> FixedInputs:
    """Full, static shapes for every real input (InputShapeError when one stays dynamic)."""
    inputs = real_inputs(onnx_file.graph)
    by_name = {i.name: i for i in inputs}
    names = list(by_name)
    model = onnx_file.path.name
    given = _named(dict(given), names, model)
    notes: list[str] = []
    typed = _typed_values(values or {}, by_name, model)
    for name, value in typed.items():
        shape = tuple(int(d) for d in value.shape)
        if name in given and given[name] != shape:
            raise InputShapeError(
                f"--input-value {name} has shape {list(shape)}, but --input-shape gives "
                f"{list(given[name])}"
            )
        given[name] = shape
    if size is not None:
        name, shape, note = _sized_input(inputs, given, size, model)
        given[name] = shape
        notes.append(note)
    fixed: dict[str, tuple[int, ...]] = {}
    dynamic: list[str] = []
    for value in inputs:
        declared = declared_shape(value)
        if value.name in given:
            shape = tuple(int(d) for d in given[value.name])
            _check_against_declared(model, value, declared, shape)
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
            dynamic.append(f"{value.name} {dim_labels(value)}")
            continue
        fixed[value.name] = tuple(int(d) for d in dims if d is not None)
    if dynamic:
        first = inputs[0].name if inputs else "NAME"
        hint = f"fix them with --input-shape NAME=DIMS (repeatable), e.g. --input-shape {first}={HINT_EXAMPLE}"
        if size is None and any(_image_like(v, None) for v in inputs):
            hint += ", or give the image size with --input-size HxW"
        raise InputShapeError(f"{model} has dynamic input dims: {'; '.join(dynamic)}", hint=hint)
    return FixedInputs(fixed, typed, tuple(notes))


def _named(
    given: dict[str, tuple[int, ...]], names: list[str], model: str
) -> dict[str, tuple[int, ...]]:
    """Resolve the unnamed shape (``--input-shape 1,3,224,224``) to the only input."""
    if "" in given:
        if len(names) != 1:
            raise InputShapeError(
                f"{model} has {len(names)} inputs ({', '.join(names)}); name the one each "
                "--input-shape is for",
                hint=f"--input-shape {names[0] if names else 'NAME'}={HINT_EXAMPLE}",
            )
        given.setdefault(names[0], given.pop(""))
        given.pop("", None)
    for name in given:
        if name not in names:
            raise InputShapeError(
                f"--input-shape names {name!r}, but {model} has no such input "
                f"(inputs: {', '.join(names) or 'none'})"
            )
    return given


def _typed_values(
    values: Mapping[str, np.ndarray], inputs: Mapping[str, onnx.ValueInfoProto], model: str
) -> dict[str, np.ndarray]:
    """Each given value in its input's dtype, shaped as the input declares it."""
    out: dict[str, np.ndarray] = {}
    for name, raw in values.items():
        value = inputs.get(name)
        if value is None:
            raise InputShapeError(
                f"--input-value names {name!r}, but {model} has no such input "
                f"(inputs: {', '.join(inputs) or 'none'})"
            )
        elem = value.type.tensor_type.elem_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        except KeyError:
            raise InputShapeError(f"input {name} of {model} has no numeric type") from None
        array = np.asarray(raw)
        cast = array.astype(dtype)
        if dtype.kind in "iub" and not np.array_equal(cast.astype(np.float64), array):
            raise InputShapeError(
                f"--input-value {name}: {array.tolist()} does not fit input {name} of "
                f"{model}, which is {dtype}"
            )
        out[name] = _shaped(name, cast, declared_shape(value), model, value)
    return out


def _shaped(
    name: str,
    value: np.ndarray,
    declared: Shape | None,
    model: str,
    info: onnx.ValueInfoProto,
) -> np.ndarray:
    if declared is None or value.shape == declared:
        return value
    if len(declared) == value.ndim and all(
        d is None or d == n for d, n in zip(declared, value.shape, strict=True)
    ):
        return value
    static = [d if d is not None else 1 for d in declared]
    if value.size == math.prod(static):  # e.g. a scalar for a [1] (or [N]) input
        return value.reshape(static)
    raise InputShapeError(
        f"--input-value {name} has {value.size} element(s), but input {name} of {model} is "
        f"{dim_labels(info)}"
    )


def _image_like(value: onnx.ValueInfoProto, rank: int | None) -> bool:
    """A float input of rank >= 3 (rank ``rank`` when given) with its channels declared."""
    declared = declared_shape(value)
    if declared is None or value.type.tensor_type.elem_type not in _FLOAT_TYPES:
        return False
    if rank is not None and len(declared) != rank:
        return False
    return len(declared) >= 3 and (declared[1] is not None or declared[-1] is not None)


def _sized_input(
    inputs: list[onnx.ValueInfoProto],
    given: Mapping[str, tuple[int, ...]],
    size: tuple[int, ...],
    model: str,
) -> tuple[str, tuple[int, ...], str]:
    """(input name, full shape, note) for ``--input-size``: batch 1, channels from the graph."""
    shown = "x".join(map(str, size))
    candidates = [v for v in inputs if _image_like(v, len(size) + 2)]
    if len(candidates) != 1:
        what = "no" if not candidates else f"{len(candidates)}"
        listed = "; ".join(f"{v.name} {dim_labels(v)}" for v in inputs) or "none"
        raise InputShapeError(
            f"--input-size {shown} needs one image-like input of rank {len(size) + 2}, but "
            f"{model} has {what} (inputs: {listed})",
            hint="give the full shape instead, e.g. --input-shape NAME=1,3,224,224",
        )
    value = candidates[0]
    declared = declared_shape(value)
    assert declared is not None
    batch = declared[0] if declared[0] is not None else 1
    if declared[1] is not None:  # NC<spatial>
        layout, shape = "NC" + "HW"[: len(size)], (batch, declared[1], *size)
        spatial = declared[2:]
    else:  # N<spatial>C (e.g. a tf2onnx export)
        channels = declared[-1]
        assert channels is not None
        layout, shape = "N" + "HW"[: len(size)] + "C", (batch, *size, channels)
        spatial = declared[1:-1]
    for want, got in zip(spatial, size, strict=True):
        if want is not None and want != got:
            raise InputShapeError(
                f"--input-size {shown} contradicts {model}: input {value.name} is "
                f"{dim_labels(value)}"
            )
    if value.name in given and tuple(given[value.name]) != shape:
        raise InputShapeError(
            f"--input-size {shown} and --input-shape {value.name}="
            f"{','.join(map(str, given[value.name]))} disagree"
        )
    note = (
        f"input {value.name}: --input-size {shown} read as {layout} "
        f"{'x'.join(map(str, shape))} (batch {batch}, channels from the graph)"
    )
    return value.name, shape, note


def _check_against_declared(
    model: str, value: onnx.ValueInfoProto, declared: Shape | None, shape: tuple[int, ...]
) -> None:
    if declared is None:
        return
    if len(declared) != len(shape):
        raise InputShapeError(
            f"--input-shape {value.name}={','.join(map(str, shape))} has rank {len(shape)}, "
            f"but {model} declares rank {len(declared)} {dim_labels(value)}"
        )
    for axis, (want, got) in enumerate(zip(declared, shape, strict=True)):
        if want is not None and want != got:
            what = "channel count" if axis == 1 else f"dim {axis}"
            raise InputShapeError(
                f"--input-shape {value.name}={','.join(map(str, shape))} contradicts {model}: "
                f"its {what} is {want}, not {got}"
            )
