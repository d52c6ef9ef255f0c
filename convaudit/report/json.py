"""JSON output: the contract CI users script against (schema in report/schemas/).

Deterministic: keys in a fixed order, floats rounded to 12 significant digits, no timestamps,
so the same file and options give byte-identical output.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from convaudit import __version__
from convaudit.analysis import AnalysisOptions, LayerResult, ModelReport
from convaudit.engine.results import NormResult
from convaudit.ir import ConvLayer, ModelIR, SkippedLayer
from convaudit.report.interface import (
    SCHEMA_VERSION,
    SPECTRUM_NOTE,
    RenderOptions,
    describe_sigma,
    round_float,
)


def _is_flat(value: Any) -> bool:
    """Scalars, and lists of scalars (e.g. shapes, pads): written on one line."""
    if isinstance(value, list):
        return all(
            not isinstance(v, (list, dict)) or (isinstance(v, list) and _is_flat(v)) for v in value
        )
    return not isinstance(value, dict)


def _plain(value: Any) -> Any:
    """numpy scalars (np.bool_, np.int64, ...) as Python ones."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _encode(value: Any, depth: int) -> str:
    if _is_flat(value):
        return json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "), default=_plain
        )
    inner, outer = "  " * (depth + 1), "  " * depth
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (
            f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_encode(v, depth + 1)}"
            for k, v in value.items()
        )
        return "{\n" + ",\n".join(items) + f"\n{outer}}}"
    return "[\n" + ",\n".join(f"{inner}{_encode(v, depth + 1)}" for v in value) + f"\n{outer}]"


def dumps(document: Any) -> str:
    """Indented JSON with short arrays (shapes, strides, pads, spectra) kept on one line."""
    return _encode(document, 0) + "\n"


def _header(command: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "convaudit", "version": __version__},
        "command": command,
    }


def _shapes(shapes: Any) -> dict[str, list[int | None]]:
    return {str(name): list(shape) for name, shape in sorted(shapes.items())}


def _sigma(result: NormResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "value": round_float(result.value),
        "lower": round_float(result.lower),
        "upper": round_float(result.upper),
        "exact": result.exact,
        "quantity": result.quantity,
        "guarantee": result.guarantee,
        "tol": result.tol,
        "operator": result.operator,
        "grid": None if result.grid is None else list(result.grid),
        "method": result.method,
        "iterations": result.iterations,
        "description": describe_sigma(result),
    }


def _geometry(geo: Any) -> dict[str, Any]:
    conv = bool(geo.stride)
    return {
        "kernel_shape": list(geo.kernel_shape),
        "stride": list(geo.stride) if conv else None,
        "dilation": list(geo.dilation) if conv else None,
        "groups": geo.groups if conv else None,
        "padding": {"mode": geo.padding_mode, "pads": [list(p) for p in geo.padding]}
        if conv
        else None,
        "transposed": geo.transposed,
        "input_size": None if geo.input_size is None else list(geo.input_size),
        "batchnorm": geo.bn,
    }


def _layer(result: LayerResult, full: bool) -> dict[str, Any]:
    spec = result.spectrum
    entry: dict[str, Any] = {"name": result.name, "kind": result.kind, **_geometry(result.geometry)}
    entry["bn_folded"] = spec.bn_folded
    entry["status"] = spec.status
    entry["sigma_max"] = _sigma(spec.sigma_max)
    has_stats = spec.spectrum_grid is not None or spec.sigma_min is not None
    entry["spectrum"] = (
        {
            "operator": spec.spectrum_operator,
            "grid": None if spec.spectrum_grid is None else list(spec.spectrum_grid),
            "sigma_min": round_float(spec.sigma_min),
            "condition": round_float(spec.condition),
            "stable_rank": round_float(spec.stable_rank),
        }
        if has_stats
        else None
    )
    if full:
        values = spec.singular_values
        entry["singular_values"] = (
            None if values is None else [round_float(float(v)) for v in values]
        )
    entry["notes"] = list(spec.notes)
    return entry


def _skipped(skipped: Sequence[SkippedLayer]) -> list[dict[str, str]]:
    return [{"name": s.name, "op": s.op, "reason": s.reason} for s in skipped]


def spectrum_document(reports: Sequence[ModelReport], options: RenderOptions) -> dict[str, Any]:
    """The JSON document as Python objects (validated against report.schema.json in tests)."""
    first = reports[0].options if reports else None
    doc = _header("spectrum")
    doc["options"] = {
        "sigma": first.sigma if first else "exact",
        "tol": first.tol if first else AnalysisOptions().tol,
        "fold_bn": first.fold_bn if first else False,
        "layers": first.layers if first else None,
        "dtype": first.dtype if first else "float64",
        "device": first.device if first else "cpu",
        "backend": "+".join(sorted({name for r in reports for name in r.eigensolvers})) or None,
        "full": options.full,
    }
    doc["notes"] = {"spectrum": SPECTRUM_NOTE}
    doc["models"] = []
    for report in reports:
        summary = report.summary
        naive = summary.naive_product
        largest = summary.largest_sigma_max
        doc["models"].append(
            {
                "path": report.path,
                "format": report.format,
                "input_shapes": _shapes(report.input_shapes),
                "layers": [_layer(r, options.full) for r in report.layers],
                "skipped": _skipped(report.skipped),
                "summary": {
                    "layers_analysed": summary.layers_analysed,
                    "layers_skipped": summary.layers_skipped,
                    "largest_sigma_max": None
                    if largest is None
                    else {"layer": largest[0], "value": round_float(largest[1])},
                    "naive_product": {
                        "value": round_float(naive.value),
                        "factors": naive.factors,
                        "complete": naive.complete,
                        "certified_bound": False,
                        "label": naive.label,
                    },
                    "notes": list(summary.notes),
                },
                "notes": list(report.notes),
            }
        )
    return doc


def render_spectrum_json(reports: Sequence[ModelReport], options: RenderOptions) -> str:
    return dumps(spectrum_document(reports, options))


# --- `convaudit layers --format json` -------------------------------------------------------


def _provenance(layer: Any) -> dict[str, Any] | None:
    prov = layer.provenance
    if prov is None:
        return None
    return {
        "format": prov.format,
        "locator": prov.locator,
        "layout": prov.layout,
        "dtype": prov.dtype,
    }


def layers_document(irs: Sequence[ModelIR]) -> dict[str, Any]:
    from convaudit.analysis import LayerGeometry

    doc = _header("layers")
    doc["models"] = []
    for ir in irs:
        layers = []
        for layer in ir.layers:
            entry = {"name": layer.name, "kind": layer.kind, **_geometry(LayerGeometry.of(layer))}
            if isinstance(layer, ConvLayer):
                grid = layer.operator_grid()
                entry["operator_grid"] = None if grid is None else list(grid)
            entry["provenance"] = _provenance(layer)
            entry["notes"] = list(layer.notes)
            layers.append(entry)
        doc["models"].append(
            {
                "path": ir.path,
                "format": ir.format,
                "input_shapes": _shapes(ir.input_shapes),
                "layers": layers,
                "skipped": _skipped(ir.skipped),
                "notes": list(ir.notes),
            }
        )
    return doc


def render_layers_json(irs: Sequence[ModelIR]) -> str:
    return dumps(layers_document(irs))


def spectrum_schema() -> dict[str, Any]:
    """The JSON Schema of the spectrum report (shipped as package data)."""
    from importlib.resources import files

    text = files("convaudit.report").joinpath("schemas/report.schema.json").read_text("utf-8")
    return dict(json.loads(text))
