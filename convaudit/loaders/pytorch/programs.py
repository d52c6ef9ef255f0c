"""Files that carry a program, not just tensors: torch.export ``.pt2`` and TorchScript archives.

``.pt2``: geometry and every input size come from the exported graph (the conv calls' arguments
and the ``meta['val']`` shapes). TorchScript: geometry from the scripted modules' attributes, or
for traced modules from the graph's constant arguments; input sizes only with --input-shape, by
running the module once on zeros and recording each convolution's input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from convaudit.errors import InputShapeError, ModelFileError
from convaudit.ir import Layer, ModelIR
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.pytorch.archive import bad_file, check_zip_file, reason
from convaudit.loaders.pytorch.calls import calls_from_exported, calls_from_torchscript
from convaudit.loaders.pytorch.graph import GraphBuilder
from convaudit.loaders.pytorch.modules import (
    CONV_CLASSES,
    class_name,
    conv_from_module,
    dense_from_module,
)


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """torch 2.9+ deprecates TorchScript with a warning per call; a reader must not print."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        yield


def single_input_shape(options: LoadOptions, path: Path) -> tuple[int, ...] | None:
    shapes = dict(options.input_shapes)
    if not shapes:
        return None
    if len(shapes) > 1:
        raise InputShapeError(
            f"{path}: this PyTorch model takes one input, but --input-shape gave {len(shapes)}",
            hint="give one --input-shape, e.g. --input-shape 1,3,224,224",
        )
    return next(iter(shapes.values()))


def load_exported_program(path: Path) -> Any:
    import torch

    check_zip_file(path)
    with _export_log_captured() as logged:
        try:
            with open(path, "rb") as f:  # a file object: torch warns about names not ending .pt2
                return torch.export.load(f)
        except Exception as exc:  # the deserializer raises many kinds
            # torch.export logs the real cause (with a traceback) and raises "check the warnings
            # above": report the cause on the one error line instead of letting the log through.
            cause = next((r.exc_info[1] for r in logged if r.exc_info and r.exc_info[1]), exc)
            raise bad_file(path, cause, "cannot load the torch.export archive") from None


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _export_log_captured() -> Iterator[list[logging.LogRecord]]:
    """Keep what the ``torch.export`` logger says during the call off the terminal; yield it."""
    logger = logging.getLogger("torch.export")
    capture = _Capture()
    saved = logger.handlers, logger.propagate, logger.disabled
    # torch._logging may hang its own stderr handler on this logger: replace, not add
    logger.handlers, logger.propagate, logger.disabled = [capture], False, False
    try:
        yield capture.records
    finally:
        logger.handlers, logger.propagate, logger.disabled = saved


def read_exported(path: Path, options: LoadOptions) -> ModelIR:
    ep = load_exported_program(path)
    cg = calls_from_exported(ep)
    wanted = single_input_shape(options, path)
    shapes = {d.name: d.shape or () for d in cg.inputs}
    if wanted is not None and len(shapes) == 1:
        ((name, have),) = shapes.items()
        if len(have) != len(wanted) or any(
            h is not None and h != w for h, w in zip(have, wanted, strict=False)
        ):
            raise InputShapeError(
                f"--input-shape {','.join(map(str, wanted))} contradicts {path}: its input {name!r} has shape {list(have)}",
                hint="give the static dims as exported; only dynamic dims may be chosen",
            )
    tensors = {**ep.state_dict, **ep.constants}
    dynamic = any(None in s for s in shapes.values())
    recorded = None
    notes: tuple[str, ...] = ()
    if dynamic and wanted is not None:
        # the graph's sizes are symbolic: run the exported module once on the requested shape
        recorded = _record_conv_inputs(ep.module(), wanted, tensors, path)
        shapes = {name: wanted for name in shapes}
    elif dynamic:
        notes = (
            "the exported input has dynamic dims: conv input sizes unknown; pass --input-shape to fix them",
        )
    built = GraphBuilder(cg, tensors, container="pt2", conv_inputs=recorded).build()
    return ModelIR(
        str(path), "pytorch", tuple(built.layers), tuple(built.skipped), shapes, built.graph, notes
    )


def _record_conv_inputs(
    module: Any, shape: tuple[int, ...], tensors: Mapping[str, Any], path: Path
) -> dict[str, list[tuple[int, ...]]]:
    """Run ``module`` on zeros and note every convolution's input shape, by weight key."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    key_of = {t.data_ptr(): k for k, t in tensors.items() if t.numel()}
    found: dict[str, list[tuple[int, ...]]] = {}
    failed: list[BaseException] = []  # the TorchScript interpreter drops the message on re-raise

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            if func.__name__.split(".")[0] in ("convolution", "_convolution") and len(args) > 1:
                key = key_of.get(args[1].data_ptr())
                if key is not None:
                    found.setdefault(key, []).append(tuple(int(s) for s in args[0].shape))
            try:
                return func(*args, **(kwargs or {}))
            except Exception as exc:
                failed.append(exc)
                raise

    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
    try:
        with torch.no_grad(), Recorder():
            module(torch.zeros(shape, dtype=dtype))
    except Exception as exc:
        why = reason(failed[0] if failed else exc)
        raise InputShapeError(
            f"{path}: the model does not run on zeros of shape {list(shape)}: {why}"
        ) from None
    return found


TS_SIZES_NOTE = (
    "TorchScript: input sizes unknown; pass --input-shape to record them by running the model "
    "once on zeros"
)
OFF_GRAPH_NOTE = (
    "not on the top-level graph (inside control flow, or unused): geometry from the module, "
    "and the whole-network bound does not see it"
)


def _off_graph_layers(
    modules: Mapping[str, Any], found: list[Layer], recorded: Mapping[str, list[tuple[int, ...]]]
) -> list[Layer]:
    """Scripted conv / Linear modules the top-level graph does not reach (inside an if/loop)."""
    seen = {layer.name.split("#")[0] for layer in found}
    extra: list[Layer] = []
    for name, sub in modules.items():
        kind = class_name(sub)
        if name in seen or not hasattr(sub, "weight"):
            continue
        if kind in CONV_CLASSES and hasattr(sub, "padding_mode"):
            shapes = recorded.get(f"{name}.weight")
            layer = conv_from_module(name, sub, container="torchscript")
            # recorded at aten.convolution, after any circular/reflect pad: take it off again
            pads = [0 if sub.padding_mode == "zeros" else b + a for b, a in layer.padding]
            size = (
                tuple(n - p for n, p in zip(shapes[0][2:], pads, strict=True)) if shapes else None
            )
            extra.append(dataclasses.replace(layer, input_size=size, notes=(OFF_GRAPH_NOTE,)))
        elif kind == "Linear":
            extra.append(
                dataclasses.replace(
                    dense_from_module(name, sub, container="torchscript"), notes=(OFF_GRAPH_NOTE,)
                )
            )
    return extra


def read_torchscript(path: Path, options: LoadOptions) -> ModelIR:
    import torch

    check_zip_file(path)
    try:
        with quiet_jit():
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise bad_file(path, exc, "cannot load the TorchScript archive") from None
    module.eval()
    tensors = {**dict(module.named_buffers()), **dict(module.named_parameters())}
    modules = dict(module.named_modules())
    shape = single_input_shape(options, path)
    recorded = _record_conv_inputs(module, shape, tensors, path) if shape else None
    cg = calls_from_torchscript(module)
    built = GraphBuilder(
        cg, tensors, container="torchscript", module_of=modules.get, conv_inputs=recorded
    ).build()
    layers = built.layers + _off_graph_layers(modules, built.layers, recorded or {})
    notes = [] if shape else [TS_SIZES_NOTE]
    if not cg.calls:
        raise ModelFileError(
            f"cannot read {path}: the TorchScript graph has no operations on its input"
        )
    input_shapes = {d.name: tuple(shape) for d in cg.inputs[:1]} if shape else {}
    return ModelIR(
        str(path),
        "pytorch",
        tuple(layers),
        tuple(built.skipped),
        input_shapes,
        built.graph,
        tuple(notes),
    )
