"""Geometry for a state_dict from its architecture (--arch module:callable), or a live module.

The architecture is built, the weights loaded into it (strict), and one forward pass on zeros of
--input-shape runs with forward hooks on every nn.Conv*/ConvTranspose*/Linear/BatchNorm* module,
recording each layer's geometry (from the module) and input size, in call order. The dataflow
graph comes from ``torch.export`` of the same module; if export fails, the layers form a chain in
call order, flagged ``chain_assumed``. Without --input-shape nothing runs: geometry is read from
the modules in registration order, input sizes stay unknown.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections import Counter
from pathlib import Path
from typing import Any

from convaudit.errors import ConfigError, InputShapeError, ModelFileError
from convaudit.ir import ConvLayer, Graph, Layer, ModelIR, SkippedLayer
from convaudit.loaders.interface import LoadOptions
from convaudit.loaders.pytorch.archive import StateDict, reason
from convaudit.loaders.pytorch.calls import calls_from_exported
from convaudit.loaders.pytorch.graph import GraphBuilder
from convaudit.loaders.pytorch.modules import (
    BN_CLASSES,
    CONV_CLASSES,
    bn_from_module,
    class_name,
    conv_from_module,
    dense_from_module,
)
from convaudit.loaders.pytorch.programs import single_input_shape
from convaudit.loaders.pytorch.statedict import chain_graph

LAYER_CLASSES = (*CONV_CLASSES, "Linear", *BN_CLASSES)


def build_arch(spec: str) -> Any:
    """Call ``module:callable`` (dotted attribute paths allowed) and return the nn.Module."""
    import torch

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"bad --arch {spec!r}",
            hint="write it as module:callable, e.g. torchvision.models:resnet50",
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"--arch {spec}: cannot import it ({exc})",
            hint="the module must be importable from the current Python environment",
        ) from None
    try:
        model = target()
    except Exception as exc:
        raise ConfigError(
            f"--arch {spec}: calling it failed ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"--arch {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: Any, sd: StateDict, path: Path, spec: str) -> str:
    """load_state_dict(strict=True); retries without a common 'model.'/'module.' key prefix.

    Returns the prefix that was dropped ('' if none), to map module paths back to file keys.
    """
    tensors = dict(sd.tensors)
    try:
        model.load_state_dict(tensors, strict=True)
        return ""
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        error = first[0].strip()
    for prefix in ("model.", "module.", "net."):
        if all(k.startswith(prefix) for k in tensors):
            try:
                model.load_state_dict(
                    {k[len(prefix) :]: v for k, v in tensors.items()}, strict=True
                )
                return prefix
            except RuntimeError:
                pass
    raise ModelFileError(
        f"the weights in {path} do not fit --arch {spec}: {error[:300]}",
        hint="check that --arch builds the architecture these weights were trained with",
    )


def _record(model: Any, shape: tuple[int, ...], container: str, path: Path) -> list[Layer]:
    """One forward pass with hooks: layers in call order, BN attached to the conv it follows."""
    import torch

    layers: list[Layer] = []
    calls: Counter[str] = Counter()
    last: dict[str, Any] = {}  # the most recent conv's output tensor and layer index

    def hook(name: str, module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        kind = class_name(module)
        if kind in BN_CLASSES:
            if last.get("output") is inputs[0]:
                bn = bn_from_module(name, module)
                i = last.pop("index")
                conv = layers[i]
                assert isinstance(conv, ConvLayer)
                layers[i] = dataclasses.replace(conv, bn=bn)
            return
        calls[name] += 1
        label = name if calls[name] == 1 else f"{name}#{calls[name]}"
        if kind == "Linear":
            layers.append(dense_from_module(label, module, container=container))
            return
        size = tuple(int(s) for s in inputs[0].shape[2:])
        layers.append(conv_from_module(label, module, container=container, input_size=size))
        last.update(output=output, index=len(layers) - 1)

    handles = [
        m.register_forward_hook(lambda mod, i, o, n=name: hook(n, mod, i, o))
        for name, m in model.named_modules()
        if class_name(m) in LAYER_CLASSES
    ]
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        with torch.no_grad():
            model(torch.zeros(shape, dtype=dtype))
    except Exception as exc:
        raise InputShapeError(
            f"{path}: the model does not run on zeros of shape {list(shape)}: {reason(exc)}"
        ) from None
    finally:
        for h in handles:
            h.remove()
    return layers


def _exported_graph(
    model: Any, shape: tuple[int, ...], layers: list[Layer], container: str
) -> tuple[Graph | None, list[Layer]]:
    """The real graph via torch.export, if it exports and names the same layers."""
    import torch

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        ep = torch.export.export(model, (torch.zeros(shape, dtype=dtype),))
    except Exception:
        return None, layers
    tensors = {**ep.state_dict, **ep.constants}
    built = GraphBuilder(calls_from_exported(ep), tensors, container=container).build()
    by_name = {layer.name: layer for layer in built.layers}
    if set(by_name) != {layer.name for layer in layers}:
        return None, layers
    # the graph knows which BN follows which conv exclusively; hooks only saw call order
    merged = [
        dataclasses.replace(layer, bn=getattr(by_name[layer.name], "bn", None))
        if isinstance(layer, ConvLayer)
        else layer
        for layer in layers
    ]
    return built.graph, merged


def read_module(
    model: Any, path: Path, options: LoadOptions, container: str, origin: str
) -> ModelIR:
    """Layers (and graph) of a live nn.Module: built by --arch, or a trusted full pickle."""
    model.eval()
    shape = single_input_shape(options, path)
    notes = [origin]
    if shape is None:
        layers: list[Layer] = []
        for name, m in model.named_modules():
            if class_name(m) in CONV_CLASSES:
                layers.append(conv_from_module(name, m, container=container))
            elif class_name(m) == "Linear":
                layers.append(dense_from_module(name, m, container=container))
        notes.append(
            "no --input-shape: input sizes unknown, BatchNorm not attached, and the graph is assumed to be a chain in module registration order"
        )
        return ModelIR(
            str(path), "pytorch", tuple(layers), graph=chain_graph(layers), notes=tuple(notes)
        )
    layers = _record(model, shape, container, path)
    called = {layer.name.split("#")[0] for layer in layers}
    skipped = [
        SkippedLayer(
            name, f"never called by a forward pass on zeros of shape {list(shape)}", class_name(m)
        )
        for name, m in model.named_modules()
        if class_name(m) in (*CONV_CLASSES, "Linear") and name not in called
    ]
    graph, layers = _exported_graph(model, shape, layers, container)
    if graph is None:
        notes.append(
            "torch.export failed on this model: the graph is assumed to be a chain of the convs "
            "and dense layers in forward-call order"
        )
        graph = chain_graph(layers)
    return ModelIR(
        str(path),
        "pytorch",
        tuple(layers),
        tuple(skipped),
        input_shapes={graph.inputs[0]: shape},
        graph=graph,
        notes=tuple(notes),
    )


def read_with_arch(sd: StateDict, path: Path, options: LoadOptions) -> ModelIR:
    assert options.arch is not None
    model = build_arch(options.arch)
    prefix = load_weights(model, sd, path, options.arch)
    ir = read_module(model, path, options, sd.container, f"geometry from --arch {options.arch}")
    extra = sd.provenance_extra()
    if not extra and not prefix:
        return ir
    return dataclasses.replace(
        ir, layers=tuple(_relocate(layer, prefix, extra) for layer in ir.layers)
    )


def _relocate(layer: Layer, prefix: str, extra: dict[str, str]) -> Layer:
    """Point the provenance at the key as stored in the file (nesting, dropped prefix)."""
    prov = layer.provenance
    assert prov is not None
    items = tuple(sorted({**dict(prov.extra), **extra}.items()))
    new = dataclasses.replace(prov, locator=prefix + prov.locator, extra=items)
    return dataclasses.replace(layer, provenance=new)
