"""``convaudit spectrum --format html``: the report as one self-contained page.

Per model: the summary, the paper's two figures (every layer's sorted singular values on a log
axis, coloured by depth; σ_max per layer with its certified [lower, upper] bracket), the
sortable per-layer table with every label, and the skipped layers; above them, the options of
the run and what each number is.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from convaudit import __version__
from convaudit.analysis import LayerResult, ModelReport
from convaudit.report.html import svg
from convaudit.report.html.page import (
    Cell,
    Col,
    bullet_list,
    document,
    el,
    facts,
    figures,
    header,
    num_cell,
    number,
    options_facts,
    sortable_table,
    text,
)
from convaudit.report.interface import SPECTRUM_NOTE, RenderOptions, compact, describe_sigma, dims

#: points drawn per layer spectrum: the curve's shape, in a small file even for 50 layers
CURVE_POINTS = 200
#: the spectra axis spans this many decades below the largest value; smaller values sit on its floor
DECADES = 8

COLUMNS = (
    Col("#", numeric=True, title="depth order"),
    Col("layer"),
    Col("kind"),
    Col(
        "kernel", title="(c_out, c_in/groups, *k); transposed convs store (c_in, c_out/groups, *k)"
    ),
    Col("stride"),
    Col("dilation"),
    Col("groups", numeric=True),
    Col("padding", title="mode and before/after pads per axis"),
    Col("input", title="the layer's input spatial size"),
    Col("σ_max", numeric=True, title="largest singular value of the layer's real operator"),
    Col("σ_max is", title="exact or a bound, for which padding and which input size"),
    Col("lower", numeric=True, title="certified lower bound on σ_max"),
    Col("upper", numeric=True, title="certified upper bound on σ_max"),
    Col("method"),
    Col("σ_min*", numeric=True),
    Col("cond*", numeric=True),
    Col("stable rank*", numeric=True),
    Col("spectrum of*", title="the operator and grid σ_min, cond and stable rank are of"),
    Col("notes"),
)


def _padding(result: LayerResult) -> str:
    geo = result.geometry
    if not geo.stride:
        return "-"
    pads = " ".join(f"{b}/{a}" for b, a in geo.padding)
    return f"{geo.padding_mode} {pads}".strip() + (" (transposed)" if geo.transposed else "")


def _row(index: int, result: LayerResult) -> list[Cell | str]:
    geo, spec = result.geometry, result.spectrum
    sigma = spec.sigma_max
    conv = bool(geo.stride)
    notes = [f"status: {spec.status}"] if spec.status != "ok" else []
    notes += [text(n) for n in spec.notes]
    if spec.bn_folded:
        notes.insert(0, "with its BatchNorm folded in")
    grid = "" if spec.spectrum_grid is None else " · " + dims(spec.spectrum_grid)
    return [
        Cell(str(index), str(index), "num"),
        Cell(text(result.name), css="name"),
        result.kind,
        Cell(dims(geo.kernel_shape), css="mono"),
        compact(geo.stride) if conv else "-",
        compact(geo.dilation) if conv else "-",
        Cell(str(geo.groups) if conv else "-", str(geo.groups) if conv else "", "num"),
        Cell(_padding(result), css="mono"),
        Cell(dims(geo.input_size) if conv else "-", css="mono"),
        num_cell(None if sigma is None else sigma.value),
        Cell(describe_sigma(sigma), css="label"),
        num_cell(None if sigma is None else sigma.lower, 6),
        num_cell(None if sigma is None else sigma.upper, 6),
        Cell("-" if sigma is None else text(sigma.method), css="wide"),
        num_cell(spec.sigma_min),
        num_cell(spec.condition),
        num_cell(spec.stable_rank),
        Cell(
            "-" if spec.spectrum_operator is None else f"{spec.spectrum_operator}{grid}",
            css="label",
        ),
        "; ".join(notes),
    ]


def _thin(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(relative rank in [0, 1], values) at most CURVE_POINTS of them, both ends kept."""
    n = len(values)
    index = np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int))
    return index / max(n - 1, 1), np.asarray(values, dtype=np.float64)[index]


def spectra_figure(report: ModelReport, ident: str) -> ET.Element | None:
    """Every layer's singular values, descending, against their relative rank (log axis)."""
    curves = [
        (i, r, _thin(np.asarray(r.spectrum.singular_values)))
        for i, r in enumerate(report.layers)
        if r.spectrum.singular_values is not None and len(r.spectrum.singular_values)
    ]
    finite = [float(v) for _, _, (_, vals) in curves for v in vals if math.isfinite(v) and v > 0]
    if not finite:
        return None
    floor = max(finite) * 10.0**-DECADES
    scale = svg.LogScale.covering([max(v, floor) for v in finite])
    frame = svg.Frame(width=500, height=280)
    chart = svg.chart(
        frame,
        scale,
        title="Sorted singular values by depth",
        x_label="rank / (number of singular values − 1)",
        y_label="singular value (log)",
    )
    last = max(len(report.layers) - 1, 1)
    for i, result, (ranks, values) in curves:
        points = [
            (frame.x(float(x)), frame.y(scale.fraction(max(float(v), scale.lo))))
            for x, v in zip(ranks, values, strict=True)
            if math.isfinite(v) and v > 0
        ]
        spec = result.spectrum
        grid = "" if spec.spectrum_grid is None else f" on {dims(spec.spectrum_grid)}"
        count = 0 if spec.singular_values is None else len(spec.singular_values)
        tooltip = (
            f"{i + 1}. {text(result.name)}: {count} singular values of "
            f"the {spec.spectrum_operator} operator{grid}"
        )
        if points:
            chart.append(svg.polyline(points, svg.viridis(i / last), tooltip))
    svg.x_ticks(chart, frame, [(t, f"{t:g}") for t in (0, 0.25, 0.5, 0.75, 1)])
    svg.depth_bar(chart, frame, "first layer", "last layer", ident=ident)
    caption = (
        "Each curve is one layer's singular values in descending order (the paper's figure), "
        f"coloured by depth; at most {CURVE_POINTS} points per layer. They are of the operator "
        "named in “spectrum of*”: for convs the circular-padding operator on the layer's grid. "
        f"Zeros are not drawn; values below {number(floor, 2)} sit on the bottom edge."
    )
    return el("figure", chart, el("figcaption", caption))


def sigma_figure(report: ModelReport) -> ET.Element | None:
    """σ_max per layer by depth, with its certified [lower, upper] bracket."""
    layers = [(i, r, r.spectrum.sigma_max) for i, r in enumerate(report.layers)]
    known = [(i, r, s) for i, r, s in layers if s is not None and math.isfinite(s.value)]
    if not known:
        return None
    scale = svg.LogScale.covering(
        [v for _, _, s in known for v in (s.value, s.lower, s.upper) if math.isfinite(v)]
    )
    frame = svg.Frame(width=500, height=280)
    chart = svg.chart(
        frame,
        scale,
        title="σ_max per layer, with its certified bracket",
        x_label="layer (depth order, the table's #)",
        y_label="σ_max (log)",
    )
    count = len(report.layers)

    def x_of(i: int) -> float:
        return frame.x((i + 0.5) / count)

    def y_of(v: float) -> float:
        return frame.y(scale.fraction(min(max(v, scale.lo), scale.hi)))

    for i, result, s in known:
        colour = svg.EXACT if s.exact else svg.BOUND
        if s.lower > 0 and math.isfinite(s.upper) and s.upper > s.lower:
            chart.append(svg.bracket(x_of(i), y_of(s.lower), y_of(s.upper), colour))
        tooltip = (
            f"{i + 1}. {text(result.name)}: σ_max {number(s.value, 6)} ({describe_sigma(s)}); "
            f"certified in [{number(s.lower, 6)}, {number(s.upper, 6)}]"
        )
        chart.append(
            svg.point(x_of(i), y_of(s.value), filled=s.exact, colour=colour, tooltip=tooltip)
        )
    step = max(1, math.ceil(count / 25))
    svg.x_ticks(chart, frame, [((i + 0.5) / count, str(i + 1)) for i in range(0, count, step)])
    svg.legend(
        chart, frame, [("σ_max exact", svg.EXACT, True), ("σ_max upper bound", svg.BOUND, False)]
    )
    caption = (
        "Each point is a layer's σ_max of its real operator (its padding, its input size): filled "
        "when exact, hollow when a certified upper bound; the bar spans the certified bracket "
        "[lower, upper] (for an exact padded layer the upper end is the circular bound on the "
        "enlarged grid). Hover a mark for the layer."
    )
    return el("figure", chart, el("figcaption", caption))


def _summary(report: ModelReport) -> ET.Element:
    summary = report.summary
    shapes = ", ".join(
        f"{text(name or 'input')} = {dims(shape, '×')}"
        for name, shape in sorted(report.input_shapes.items())
    )
    items: dict[str, str | ET.Element] = {
        "format": report.format,
        "input shapes": shapes or "-",
        "layers": f"{summary.layers_analysed} analysed, {summary.layers_skipped} skipped",
    }
    if summary.largest_sigma_max is not None:
        name, value = summary.largest_sigma_max
        items["largest σ_max"] = f"{number(value, 6)} ({text(name)})"
    naive = summary.naive_product
    if naive.value is not None:
        items["naive product"] = el(
            "span",
            f"{number(naive.value, 6)} over {naive.factors} layers ",
            el("span", f"({naive.label})", class_="muted"),
        )
    return facts(items)


def _model(index: int, report: ModelReport) -> list[ET.Element | None]:
    notes = [text(n) for n in (*report.summary.notes, *report.notes)]
    skipped = [f"{text(s.name)} ({text(s.op)}): {text(s.reason)}" for s in report.skipped]
    return [
        el("h2", f"{text(report.path)}"),
        _summary(report),
        bullet_list(f"note: {n}" for n in notes),
        figures(spectra_figure(report, f"depth-{index}"), sigma_figure(report)),
        el("h3", "Layers"),
        sortable_table(
            COLUMNS,
            [_row(i + 1, r) for i, r in enumerate(report.layers)],
            label=f"layers of {text(report.path)}",
        ),
        el("h3", "Skipped layers") if skipped else None,
        bullet_list(skipped),
    ]


def render_spectrum_html(reports: Sequence[ModelReport], options: RenderOptions) -> str:
    body: list[ET.Element] = header(
        "convaudit spectrum",
        f"convaudit {__version__} · {len(reports)} model(s) · singular values of every conv "
        "layer as the linear operator it is (Sedghi, Gupta & Long, ICLR 2019)",
    )
    for i, report in enumerate(reports):
        body += [part for part in _model(i, report) if part is not None]
    body += [
        el("h2", "What the numbers are"),
        el(
            "ul",
            el(
                "li",
                "σ_max: the largest singular value of the layer's real operator (its own padding "
                "and input size); “σ_max is” says whether it is exact or a certified upper bound, "
                "for which padding and grid. lower / upper: its certified bracket.",
            ),
            el("li", f"σ_min*, cond*, stable rank*: {SPECTRUM_NOTE}."),
            el(
                "li",
                "naive product: the product of the per-layer σ_max, not a certified network bound "
                "(`convaudit check` computes the graph-aware bound).",
            ),
        ),
    ]
    if reports:
        body += [el("h2", "Options of the run"), options_facts(reports[0].options)]
    return document("convaudit spectrum report", body)


__all__ = ["render_spectrum_html"]
