"""Runtimes that execute a model file for the empirical lower bound (convaudit.network.empirical).

ONNX through onnxruntime (a black box: zeroth-order search); TorchScript archives and
torch.export programs through torch (autograd search). Neither unpickles Python objects.
A state_dict or a Keras file has no runtime here: the caller reports the bound as not run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convaudit.errors import UnsupportedLayerError
from convaudit.network.empirical import BlackBox, EmpiricalBound, SearchOptions, search_blackbox

_FLOAT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}
#: inputs that are held fixed (a sample rate, a flag), not searched
_FIXED_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class OnnxRunner:
    """An onnxruntime session as a black box: ``fn`` over ``shapes`` (session order) in
    ``dtype``; ``batch`` when every input and output has a dynamic leading (batch) dim of 1."""

    fn: BlackBox
    shapes: list[tuple[int, ...]]
    dtype: Any
    batch: bool

    def search(self, options: SearchOptions | None = None) -> EmpiricalBound:
        return search_blackbox(self.fn, self.shapes, options, dtype=self.dtype, batch=self.batch)


def _dynamic_batch(args: Sequence[Any]) -> bool:
    return all(len(a.shape) > 0 and not isinstance(a.shape[0], int) for a in args)


def onnx_blackbox(
    path: str | Path,
    input_shapes: Mapping[str, tuple[int, ...]],
    values: Mapping[str, np.ndarray] | None = None,
) -> OnnxRunner:
    """The model's float inputs -> float outputs, run by onnxruntime on the CPU.

    ``input_shapes`` fixes dynamic dims (key "" for a single-input model). Inputs given
    ``values`` (--input-value) and integer / boolean inputs are held fixed, as the graph bound
    holds them: at their value, else 0.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UnsupportedLayerError(f"onnxruntime cannot run {path}: {exc}") from None
    inputs = session.get_inputs()
    values = dict(values or {})
    searched = [arg for arg in inputs if arg.type in _FLOAT_TYPES and arg.name not in values]
    fixed: dict[str, np.ndarray] = {}
    for arg in inputs:
        if arg in searched:
            continue
        kind = _FLOAT_TYPES.get(arg.type) or _FIXED_TYPES.get(arg.type)
        if kind is None:
            raise UnsupportedLayerError(f"input {arg.name} is {arg.type}, not a float tensor")
        shape = _shape(arg, input_shapes, len(inputs))
        given = values.get(arg.name)
        fixed[arg.name] = (
            np.asarray(given, kind).reshape(shape) if given is not None else np.zeros(shape, kind)
        )
    if not searched:
        raise UnsupportedLayerError("the model has no float input")
    shapes = [_shape(arg, input_shapes, len(inputs)) for arg in searched]
    dtypes = {_FLOAT_TYPES[arg.type] for arg in searched}
    outputs = [o.name for o in session.get_outputs() if o.type in _FLOAT_TYPES]
    if not outputs:
        raise UnsupportedLayerError("the model has no float output")
    names = [arg.name for arg in searched]
    dtype = max(dtypes, key=lambda t: np.dtype(t).itemsize)

    def run(arrays: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        feed = {
            name: a.astype(_FLOAT_TYPES[arg.type])
            for name, a, arg in zip(names, arrays, searched, strict=True)
        }
        return session.run(outputs, {**feed, **fixed})

    float_outputs = [o for o in session.get_outputs() if o.type in _FLOAT_TYPES]
    batch = (
        _dynamic_batch(searched)
        and _dynamic_batch(float_outputs)
        and all(s[0] == 1 for s in shapes)
    )
    return OnnxRunner(run, shapes, dtype, batch)


def _shape(arg: Any, input_shapes: Mapping[str, tuple[int, ...]], count: int) -> tuple[int, ...]:
    given = input_shapes.get(arg.name) or (input_shapes.get("") if count == 1 else None)
    if given is not None:
        return tuple(given)
    static = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    if static and static[0] == -1:
        static[0] = 1  # a dynamic batch dim: one sample
    if any(d <= 0 for d in static):
        raise UnsupportedLayerError(
            f"input {arg.name} has dynamic dims {arg.shape}", hint="pass --input-shape"
        )
    return tuple(static)


def torch_program(path: str | Path) -> Callable[..., Any]:
    """The forward of a TorchScript archive or a torch.export program (.pt2), in eval mode.

    Both are programs the PyTorch loader already loads (no pickled Python objects); a
    state_dict has no forward to run, so it raises UnsupportedLayerError.
    """
    import zipfile

    import torch

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        names = []
    if any(n.endswith("/archive_format") for n in names):
        from convaudit.loaders.pytorch.programs import load_exported_program

        return load_exported_program(Path(path)).module()
    if any("/code/" in n for n in names):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return module.eval()
    raise UnsupportedLayerError("a PyTorch state_dict holds no forward to run")


__all__ = ["OnnxRunner", "onnx_blackbox", "torch_program"]
