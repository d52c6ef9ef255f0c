"""CSV output: one row per analysed or skipped layer, one header line, fixed float formatting."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from convaudit.analysis import LayerResult, ModelReport
from convaudit.report.interface import RenderOptions, dims, round_float

COLUMNS = (
    "model",
    "layer",
    "kind",
    "status",
    "kernel_shape",
    "stride",
    "dilation",
    "groups",
    "padding_mode",
    "pads",
    "transposed",
    "input_size",
    "bn_folded",
    "sigma_max",
    "sigma_max_quantity",
    "sigma_max_operator",
    "sigma_max_grid",
    "sigma_max_lower",
    "sigma_max_upper",
    "spectrum_operator",
    "spectrum_grid",
    "sigma_min",
    "condition",
    "stable_rank",
    "reason",
    # added later, so kept after the original columns
    "sigma_max_guarantee",
    "sigma_max_tol",
)


def _num(value: float | None) -> str:
    rounded = round_float(value)
    return "" if rounded is None else repr(rounded)


def _row(path: str, result: LayerResult) -> dict[str, str]:
    geo, spec, sigma = result.geometry, result.spectrum, result.spectrum.sigma_max
    conv = bool(geo.stride)
    return {
        "model": path,
        "layer": result.name,
        "kind": result.kind,
        "status": spec.status,
        "kernel_shape": dims(geo.kernel_shape),
        "stride": dims(geo.stride) if conv else "",
        "dilation": dims(geo.dilation) if conv else "",
        "groups": str(geo.groups) if conv else "",
        "padding_mode": geo.padding_mode,
        "pads": " ".join(f"{b}/{a}" for b, a in geo.padding),
        "transposed": str(geo.transposed).lower(),
        "input_size": "" if geo.input_size is None else dims(geo.input_size),
        "bn_folded": str(spec.bn_folded).lower(),
        "sigma_max": "" if sigma is None else _num(sigma.value),
        "sigma_max_quantity": "" if sigma is None else sigma.quantity,
        "sigma_max_guarantee": "" if sigma is None else str(sigma.guarantee),
        "sigma_max_tol": "" if sigma is None else _num(sigma.tol),
        "sigma_max_operator": "" if sigma is None else sigma.operator,
        "sigma_max_grid": "" if sigma is None or sigma.grid is None else dims(sigma.grid),
        "sigma_max_lower": "" if sigma is None else _num(sigma.lower),
        "sigma_max_upper": "" if sigma is None else _num(sigma.upper),
        "spectrum_operator": spec.spectrum_operator or "",
        "spectrum_grid": "" if spec.spectrum_grid is None else dims(spec.spectrum_grid),
        "sigma_min": _num(spec.sigma_min),
        "condition": _num(spec.condition),
        "stable_rank": _num(spec.stable_rank),
        "reason": "",
    }


def render_spectrum_csv(reports: Sequence[ModelReport], options: RenderOptions) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", restval="")
    writer.writeheader()
    for report in reports:
        for result in report.layers:
            writer.writerow(_row(report.path, result))
        for skipped in report.skipped:
            writer.writerow(
                {
                    "model": report.path,
                    "layer": skipped.name,
                    "kind": skipped.op,
                    "status": "skipped",
                    "reason": skipped.reason,
                }
            )
    return buffer.getvalue()
