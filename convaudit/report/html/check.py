"""``convaudit check --format html``: the gate's result as one self-contained page (a CI artifact).

The verdict and counts; the limits and settings of the run; every finding (which limit failed,
where, by how much) in a sortable table; per model the network bounds, a figure of each layer's
σ_max against its limit (failures in red), and the per-layer table.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import defaultdict

from convaudit import __version__
from convaudit.gate.findings import CODES, Check, GateResult, ModelCheck
from convaudit.report.check_common import network_lines
from convaudit.report.html import svg
from convaudit.report.html.page import (
    Cell,
    Col,
    bullet_list,
    document,
    el,
    figures,
    header,
    num_cell,
    number,
    options_facts,
    sortable_table,
    text,
)

FINDING_COLUMNS = (
    Col("status"),
    Col("code"),
    Col("rule"),
    Col("model"),
    Col("layer"),
    Col("finding"),
    Col("value", numeric=True),
    Col("limit", numeric=True, title="the limit, or the baseline value for a regression"),
)
LAYER_COLUMNS = (
    Col("#", numeric=True, title="depth order"),
    Col("layer"),
    Col("kind"),
    Col("σ_max", numeric=True, title="of the layer's real operator"),
    Col("σ_max is"),
    Col("max-sigma", numeric=True, title="the limit that applies to this layer"),
    Col("σ_min", numeric=True),
    Col("condition", numeric=True),
    Col("spectrum of", title="the operator σ_min and the condition number are of"),
    Col("result"),
)
#: what a layer shows, worst first
_RANK = {"fail": 0, "warn": 1, "baselined": 2, "ignored": 3}
FAIL = "#b3261e"
PASS = "#1f5fa8"
MUTED = "#8a8f99"


def _checks_by_layer(result: GateResult, model: ModelCheck) -> dict[str, list[Check]]:
    out: dict[str, list[Check]] = defaultdict(list)
    for check in result.checks:
        if check.model == model.path:
            out[check.layer].append(check)
    return out


def _status(checks: list[Check]) -> str:
    statuses = [f.status for c in checks for f in c.findings]
    if not statuses:
        return "pass" if checks else "-"
    return min(statuses, key=lambda s: _RANK[s])


def _limit(checks: list[Check], name: str) -> float | None:
    return next((c.limit for c in checks if c.name == name), None)


def limits_figure(result: GateResult, model: ModelCheck) -> ET.Element | None:
    """σ_max per layer (a point) against its max-sigma limit (a dash); failures in red."""
    by_layer = _checks_by_layer(result, model)
    layers = [(i, layer) for i, layer in enumerate(model.layers) if layer.sigma_max is not None]
    values = [v for _, layer in layers for v in (layer.sigma_max,) if v is not None]
    values += [
        lim for _, layer in layers if (lim := _limit(by_layer[layer.name], "max-sigma")) is not None
    ]
    if not layers:
        return None
    scale = svg.LogScale.covering([v for v in values if math.isfinite(v)])
    frame = svg.Frame(width=500, height=280)
    chart = svg.chart(
        frame,
        scale,
        title="σ_max per layer against its max-sigma limit",
        x_label="layer (depth order, the table's #)",
        y_label="σ_max (log)",
    )
    count = len(model.layers)

    def y_of(v: float) -> float:
        v = v if math.isfinite(v) else scale.hi
        return frame.y(scale.fraction(min(max(v, scale.lo), scale.hi)))

    for i, layer in layers:
        assert layer.sigma_max is not None
        checks = [c for c in by_layer[layer.name] if c.name == "max-sigma"]
        status = _status(checks)
        colour = (
            FAIL if status == "fail" else (MUTED if status in ("ignored", "baselined") else PASS)
        )
        x = frame.x((i + 0.5) / count)
        limit = _limit(checks, "max-sigma")
        if limit is not None and limit > 0:
            chart.append(
                svg.tick_mark(x, y_of(limit), 7, svg.LIMIT, f"max-sigma {number(limit, 6)}")
            )
        tooltip = (
            f"{i + 1}. {text(layer.name)}: σ_max {number(layer.sigma_max, 6)} "
            f"({text(layer.sigma_max_label)}); max-sigma check: {status}"
        )
        chart.append(
            svg.point(
                x, y_of(layer.sigma_max), filled=status == "fail", colour=colour, tooltip=tooltip
            )
        )
    step = max(1, math.ceil(count / 25))
    svg.x_ticks(chart, frame, [((i + 0.5) / count, str(i + 1)) for i in range(0, count, step)])
    svg.legend(chart, frame, [("above its limit", FAIL, True), ("within its limit", PASS, False)])
    caption = (
        "Each point is a layer's σ_max of its real operator; the dash beside it is the max-sigma "
        "limit that applies to it (overrides included). Filled red: the limit is exceeded; "
        "grey: exceeded but ignored or accepted in the baseline."
    )
    return el("figure", chart, el("figcaption", caption))


def _finding_rows(result: GateResult) -> tuple[list[list[Cell | str]], list[str | None]]:
    rows: list[list[Cell | str]] = []
    classes: list[str | None] = []
    for f in result.findings:
        rows.append(
            [
                Cell(f.status, str(_RANK[f.status]), f"status-{f.status}"),
                f.code,
                CODES[f.code][0],
                text(f.model),
                Cell(text(f.layer), css="name"),
                Cell(text(f.message), css="wide"),
                num_cell(f.value, 6),
                num_cell(f.limit, 6),
            ]
        )
        classes.append(f.status if f.status in ("fail", "warn") else None)
    return rows, classes


def _layer_rows(result: GateResult, model: ModelCheck) -> list[list[Cell | str]]:
    by_layer = _checks_by_layer(result, model)
    rows: list[list[Cell | str]] = []
    for i, layer in enumerate(model.layers):
        checks = by_layer[layer.name]
        status = _status(checks)
        rows.append(
            [
                Cell(str(i + 1), str(i + 1), "num"),
                Cell(text(layer.name), css="name"),
                layer.kind + (" +bn" if layer.bn_folded else ""),
                num_cell(layer.sigma_max),
                Cell(text(layer.sigma_max_label) or "-", css="label"),
                num_cell(_limit(checks, "max-sigma")),
                num_cell(layer.sigma_min),
                num_cell(layer.condition),
                text(layer.spectrum_label) or "-",
                Cell(status, css=f"status-{status}"),
            ]
        )
    return rows


def _model(result: GateResult, model: ModelCheck, index: int) -> list[ET.Element | None]:
    skipped = [f"{text(s.name)} ({text(s.op)}): {text(s.reason)}" for s in model.skipped]
    return [
        el("h2", f"{text(model.path)} ({model.format})"),
        bullet_list(text(line) for line in network_lines(model)),
        bullet_list(f"note: {text(n)}" for n in model.notes),
        figures(limits_figure(result, model)),
        el("h3", "Layers"),
        sortable_table(
            LAYER_COLUMNS, _layer_rows(result, model), label=f"layers of {text(model.path)}"
        ),
        el("h3", "Not analysed") if skipped else None,
        bullet_list(skipped),
    ]


def render_check_html(result: GateResult) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    counts = (
        f"{len(result.checks)} checks, {result.count('fail')} failing, "
        f"{result.count('warn')} warnings, {result.count('ignored')} ignored, "
        f"{result.count('baselined')} baselined; exit code {result.exit_code}"
    )
    body: list[ET.Element] = header(
        "convaudit check",
        f"convaudit {__version__} · {len(result.models)} model(s) · Lipschitz limits per layer "
        "and for the whole network",
    )
    body.append(
        el(
            "p",
            el("span", verdict, class_="verdict " + ("pass" if result.passed else "fail")),
            " ",
            counts,
        )
    )
    rows, classes = _finding_rows(result)
    body.append(el("h2", "Findings"))
    if rows:
        body.append(sortable_table(FINDING_COLUMNS, rows, row_classes=classes, label="findings"))
    else:
        body.append(el("p", "No findings: every limit holds."))
    notes = bullet_list(f"note: {text(n)}" for n in result.notes)
    if notes is not None:
        body.append(notes)
    for i, model in enumerate(result.models):
        body += [part for part in _model(result, model, i) if part is not None]
    body += [el("h2", "Limits and settings of the run"), options_facts(result.settings)]
    return document(f"convaudit check: {verdict}", body)


__all__ = ["render_check_html"]
