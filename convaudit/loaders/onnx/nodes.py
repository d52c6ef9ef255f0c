"""Small readers shared by the ONNX modules: node attributes, stable layer names, provenance."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from convaudit.ir import Provenance
from convaudit.loaders.onnx.weights import Source


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def layer_name(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``<op>_<index in graph.node>`` when the exporter left it empty."""
    return node.name or f"{node.op_type}_{index}"


def provenance(src: Source, layout: str, **extra: str) -> Provenance:
    items = {"source": src.kind, **extra}
    if src.external:
        items["external"] = src.external
    if src.scope:
        items["scope"] = src.scope  # the If / Loop / Scan body that stores it
    if not src.writable:
        items["read_only"] = src.reason or f"a {src.kind} value"
    return Provenance(
        format="onnx",
        locator=src.name,
        layout=layout,
        dtype=src.dtype,
        extra=tuple(sorted(items.items())),
    )


def as_float(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    return value if value.dtype in (np.float32, np.float64) else value.astype(np.float32)


def text(value: Any) -> str:
    """A string attribute's value (onnx gives bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)
