"""Parse a Keras model config (JSON) into a flat list of layer calls over named tensors.

Handles the Keras 2 and Keras 3 config dialects, Sequential and Functional models, and models
nested inside models (inlined: an inner layer is named ``outer/inner``). Nothing is executed:
Lambda layers and custom classes are only names here.

Tensor names: a layer's first output of its first call is the layer's (path) name; the k-th call
adds ``@k`` and the i-th output adds ``:i`` (``conv@1:2``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from convaudit.errors import ModelFileError

MODEL_CLASSES = frozenset({"Functional", "Model", "Sequential"})
Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class KLayer:
    """One Keras layer (possibly called several times)."""

    path: tuple[str, ...]  # raw Keras names from the root model down, e.g. ("inner", "conv")
    class_name: str
    config: Mapping[str, Any]

    @property
    def name(self) -> str:
        return "/".join(self.path)

    @property
    def is_model(self) -> bool:
        return self.class_name in MODEL_CLASSES and "layers" in self.config


@dataclass(frozen=True)
class KCall:
    """One call of a layer: the tensors it reads and writes."""

    layer: str  # KLayer.name
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class KModel:
    """The flattened model: layers, calls in topological order, inputs and outputs."""

    name: str
    layers: dict[str, KLayer] = field(default_factory=dict)
    calls: list[KCall] = field(default_factory=list)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    declared: dict[str, Shape] = field(default_factory=dict)  # input tensor -> batch shape
    recorded: dict[str, Shape] = field(default_factory=dict)  # tensor -> shape Keras 3 wrote
    children: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    container_class: dict[tuple[str, ...], str] = field(default_factory=dict)

    def calls_of(self, layer: str) -> list[KCall]:
        return [c for c in self.calls if c.layer == layer]

    def consumers(self, tensor: str) -> list[KCall]:
        return [c for c in self.calls if tensor in c.inputs]


class UnsupportedModelConfig(ModelFileError):
    """The config describes a subclassed model: no layer graph to read."""


def _tensor(prefix: tuple[str, ...], layer: str, node: int, index: int) -> str:
    name = "/".join((*prefix, layer))
    return name + (f"@{node}" if node else "") + (f":{index}" if index else "")


def _shape(value: Any) -> Shape | None:
    if not isinstance(value, (list, tuple)) or not all(
        v is None or isinstance(v, int) for v in value
    ):
        return None
    return tuple(value)


def _refs(spec: Any) -> list[tuple[str, int, int]]:
    """Every ``[layer, node, index]`` triple in an input_layers / output_layers spec."""
    if isinstance(spec, (list, tuple)):
        if len(spec) >= 3 and isinstance(spec[0], str) and isinstance(spec[1], int):
            return [(spec[0], int(spec[1]), int(spec[2]))]
        return [r for item in spec for r in _refs(item)]
    if isinstance(spec, Mapping):
        return [r for item in spec.values() for r in _refs(item)]
    return []


def _node_inputs(node: Any) -> list[tuple[str, int, int, Shape | None]]:
    """Input tensors of one serialized call, in argument order (Keras 2 and Keras 3 dialects)."""
    found: list[tuple[str, int, int, Shape | None]] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            if obj.get("class_name") == "__keras_tensor__":
                cfg = obj.get("config", {})
                hist = cfg.get("keras_history", [])
                if len(hist) >= 3:
                    found.append(
                        (str(hist[0]), int(hist[1]), int(hist[2]), _shape(cfg.get("shape")))
                    )
                return
            for key in ("args", "kwargs"):
                if key in obj:
                    walk(obj[key])
            if "args" not in obj and "kwargs" not in obj:
                for value in obj.values():
                    walk(value)
        elif isinstance(obj, (list, tuple)):
            # Keras 2: [layer_name, node_index, tensor_index, kwargs]
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                found.append((obj[0], int(obj[1]), int(obj[2]), None))
                if len(obj) > 3:
                    walk(obj[3])
            else:
                for item in obj:
                    walk(item)

    walk(node)
    return found


def _layer_entries(config: Any) -> list[Mapping[str, Any]]:
    layers = config if isinstance(config, list) else config.get("layers")
    if not isinstance(layers, list):
        raise ValueError("model config has no layer list")
    return layers


def _raw_name(entry: Mapping[str, Any]) -> str:
    name = entry.get("name") or entry.get("config", {}).get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a layer has no name")
    return name


def _declared_shape(cfg: Mapping[str, Any]) -> Shape | None:
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return _shape(cfg[key])
    return None


class _Flattener:
    def __init__(self, model: KModel) -> None:
        self.m = model
        self.alias: dict[str, str] = {}

    def model(
        self,
        class_name: str,
        config: Any,
        lpath: tuple[str, ...],
        tprefix: tuple[str, ...],
        outer_inputs: Sequence[str] | None,
    ) -> tuple[list[str], list[str]]:
        entries = _layer_entries(config)
        self.m.children[lpath] = tuple(_raw_name(e) for e in entries)
        self.m.container_class[lpath] = "Sequential" if isinstance(config, list) else class_name
        for entry in entries:
            layer = KLayer(
                (*lpath, _raw_name(entry)), str(entry.get("class_name")), entry.get("config") or {}
            )
            self.m.layers.setdefault(layer.name, layer)
        if class_name == "Sequential" or isinstance(config, list):
            return self._sequential(config, entries, lpath, tprefix, outer_inputs)
        return self._functional(config, entries, lpath, tprefix, outer_inputs)

    def _call(
        self, layer: KLayer, tprefix: tuple[str, ...], node: int, inputs: list[str]
    ) -> list[str]:
        raw = layer.path[-1]
        if layer.is_model:
            sub = (*tprefix, raw + (f"@{node}" if node else ""))
            _, outs = self.model(layer.class_name, layer.config, layer.path, sub, inputs)
            for i, out in enumerate(outs):
                self.alias[_tensor(tprefix, raw, node, i)] = out
            return [_tensor(tprefix, raw, node, i) for i in range(len(outs))]
        out = _tensor(tprefix, raw, node, 0)
        self.m.calls.append(KCall(layer.name, tuple(inputs), (out,)))
        return [out]

    def _sequential(self, config, entries, lpath, tprefix, outer_inputs):
        name = config.get("name", "sequential") if isinstance(config, Mapping) else "sequential"
        first = entries[0] if entries else {}
        rest = entries
        if first.get("class_name") == "InputLayer":
            head = _tensor(tprefix, _raw_name(first), 0, 0)
            shape = _declared_shape(first.get("config", {}))
            rest = entries[1:]
        else:
            head = _tensor(tprefix, f"{name}_input", 0, 0)
            shape = _declared_shape(first.get("config", {})) or (
                _shape(config.get("build_input_shape")) if isinstance(config, Mapping) else None
            )
        if outer_inputs:
            self.alias[head] = outer_inputs[0]
        elif shape is not None:
            self.m.declared[head] = shape
        inputs = [head]
        current = head
        for entry in rest:
            layer = self.m.layers["/".join((*lpath, _raw_name(entry)))]
            current = self._call(layer, tprefix, 0, [current])[0]
        return inputs, [current]

    def _functional(self, config, entries, lpath, tprefix, outer_inputs):
        in_refs = _refs(config.get("input_layers", []))
        out_refs = _refs(config.get("output_layers", []))
        inputs = [_tensor(tprefix, *ref) for ref in in_refs]
        if outer_inputs:
            for t, outer in zip(inputs, outer_inputs, strict=False):
                self.alias[t] = outer
        for entry in entries:
            layer = self.m.layers["/".join((*lpath, _raw_name(entry)))]
            raw = layer.path[-1]
            if layer.class_name == "InputLayer":
                shape = _declared_shape(layer.config)
                if not outer_inputs and shape is not None:
                    self.m.declared[_tensor(tprefix, raw, 0, 0)] = shape
                continue
            for node_index, node in enumerate(entry.get("inbound_nodes") or []):
                ins = []
                for lname, nidx, tidx, shape in _node_inputs(node):
                    t = _tensor(tprefix, lname, nidx, tidx)
                    ins.append(t)
                    if shape is not None:
                        self.m.recorded.setdefault(t, shape)
                self._call(layer, tprefix, node_index, ins)
        return inputs, [_tensor(tprefix, *ref) for ref in out_refs]

    def resolve(self, tensor: str) -> str:
        seen = set()
        while tensor in self.alias and tensor not in seen:
            seen.add(tensor)
            tensor = self.alias[tensor]
        return tensor


def _toposort(calls: list[KCall], inputs: Sequence[str]) -> list[KCall]:
    """Calls in an order where every input is produced first (Keras lists them in depth order,
    which is not always a valid order once nested models are inlined)."""
    available = set(inputs)
    pending = list(calls)
    ordered: list[KCall] = []
    while pending:
        ready = [c for c in pending if all(t in available for t in c.inputs)]
        if not ready:  # a cycle or a dangling input: keep the file order for the rest
            ordered.extend(pending)
            break
        for call in ready:
            available.update(call.outputs)
            ordered.append(call)
        pending = [c for c in pending if c not in ready]
    return ordered


def parse_model_config(raw: str | bytes | Mapping[str, Any]) -> KModel:
    """Flatten a ``model_config`` attribute / ``config.json`` into a KModel."""
    try:
        doc = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        class_name = str(doc.get("class_name"))
        config = doc.get("config")
        if (
            class_name not in MODEL_CLASSES
            or not isinstance(config, (list, Mapping))
            or (isinstance(config, Mapping) and "layers" not in config)
        ):
            raise UnsupportedModelConfig(
                f"the config describes a {class_name} (a subclassed model), not a Sequential or "
                "Functional layer graph: geometry cannot be read from it"
            )
        name = config.get("name", "model") if isinstance(config, Mapping) else "sequential"
        model = KModel(name=name)
        flat = _Flattener(model)
        inputs, outputs = flat.model(class_name, config, (), (), None)
    except UnsupportedModelConfig:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ModelFileError(
            f"the Keras model config cannot be parsed: {exc}",
            hint="the file may be corrupt or written by an unsupported Keras version",
        ) from None
    model.calls = [
        KCall(c.layer, tuple(flat.resolve(t) for t in c.inputs), c.outputs) for c in model.calls
    ]
    model.inputs = tuple(flat.resolve(t) for t in inputs)
    model.outputs = tuple(flat.resolve(t) for t in outputs)
    model.recorded = {flat.resolve(t): s for t, s in model.recorded.items()}
    model.calls = _toposort(model.calls, model.inputs)
    return model
