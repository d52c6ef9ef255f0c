"""Human-readable tables (rich), rendered to a string; the CLI decides where it goes.

Each table is laid out by :mod:`convaudit.report.fit` for the terminal's width: numbers are
never cut, long names are shortened or folded, columns give way in a stated order (the footer
says which), and a terminal too narrow for any table gets one block per layer. A file or a pipe
(``width=None``) gets every column at its natural width.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from convaudit.analysis import LayerResult, ModelReport
from convaudit.engine.results import tol_text
from convaudit.ir import ConvLayer, ModelIR
from convaudit.report.fit import (
    BOXED,
    Column,
    TablePlan,
    footer,
    hanging,
    plan_table,
    vertical_blocks,
)
from convaudit.report.interface import (
    RenderOptions,
    compact,
    describe_sigma,
    dims,
    printable,
    short,
)

#: console width when the output is not a terminal: wide enough that no table wraps
NATURAL_WIDTH = 400


def to_text(renderables: Sequence[RenderableType], *, width: int | None, color: bool) -> str:
    """Render rich objects to a string (no ANSI codes unless ``color``)."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        # Not a terminal (a file, a pipe): every table at its natural width, never wrapped.
        width=width or NATURAL_WIDTH,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )
    for item in renderables:
        console.print(item)
    # rich pads titles and captions to the table's width: drop that, so files diff cleanly.
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def console_width(plans: Sequence[TablePlan | None], width: int | None) -> int:
    """The terminal's width; for a file or a pipe, wide enough for the widest table."""
    if width is not None:
        return width
    needed = [BOXED.overhead(len(p.columns)) + p.width for p in plans if p is not None]
    return max([NATURAL_WIDTH, *needed])


def boxed_table(
    plan: TablePlan,
    columns: Sequence[Column],
    *,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """A rich table drawing ``plan`` exactly: fixed widths, cells already split into lines."""
    table = Table(
        title=None if title is None else Text(title),
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    for index, width in zip(plan.columns, plan.widths, strict=True):
        column = columns[index]
        table.add_column(column.header, justify=column.justify, no_wrap=True, width=width)
    for row in plan.rows:
        table.add_row(*(Text("\n".join(lines)) for lines in row))
    return table


def fitted(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: int | None,
    *,
    title: str,
    caption: str | None = None,
    more: str = "--format json",
) -> tuple[list[RenderableType], TablePlan | None]:
    """The table (or, too narrow for one, the per-row blocks) with its footer lines."""
    plan = plan_table(columns, rows, width)
    if plan is None:
        assert width is not None  # without a width every table fits
        lines = [title, *vertical_blocks(columns, rows, width)]
        if caption and any(c.header.endswith("*") for c in columns):
            lines.append(caption)
        return [Text("\n".join(lines))], None
    shown = [columns[i] for i in plan.columns]
    has_star = any(c.header.endswith("*") for c in shown)
    out: list[RenderableType] = [
        boxed_table(plan, columns, title=title, caption=caption if has_star else None)
    ]
    out.extend(Text(line) for line in footer(plan, width, more))
    return out, plan


# --- `convaudit spectrum` ---------------------------------------------------------------------

SPECTRUM_COLUMNS = (
    Column("layer", shrink="name"),
    Column("kind", drop=8),
    Column("kernel", drop=7),
    Column("stride", "right", drop=4),
    Column("dil", "right", drop=2),
    Column("groups", "right", drop=3),
    Column("input", "right", drop=5),
    Column("σ_max", "right"),
    Column("σ_max is"),
    Column("σ_min*", "right", drop=9),
    Column("cond*", "right", drop=6),
    Column("stable rank*", "right", drop=1),
)
SPECTRUM_CAPTION = (
    "* of the circular-padding operator on the σ_max grid: the layer itself if circular, "
    "else the paper's characterisation"
)


def spectrum_row(result: LayerResult) -> tuple[str, ...]:
    geo, spec = result.geometry, result.spectrum
    sigma = spec.sigma_max
    kind = result.kind
    if geo.transposed and "transpose" not in kind:
        kind += " (transposed)"
    if spec.bn_folded:
        kind += " +bn"
    if spec.status != "ok":
        kind += f" ({spec.status})"
    return (
        printable(result.name),
        kind,
        dims(geo.kernel_shape),
        compact(geo.stride),
        compact(geo.dilation),
        str(geo.groups) if geo.stride else "-",
        dims(geo.input_size) if geo.stride else "-",
        short(None if sigma is None else sigma.value),
        describe_sigma(sigma),
        short(spec.sigma_min),
        short(spec.condition),
        short(spec.stable_rank),
    )


def spectrum_renderables(
    report: ModelReport, width: int | None = None
) -> tuple[list[RenderableType], TablePlan | None]:
    out, plan = fitted(
        SPECTRUM_COLUMNS,
        [spectrum_row(r) for r in report.layers],
        width,
        title=f"{printable(report.path)} ({report.format})",
        caption=SPECTRUM_CAPTION,
    )
    for skipped in report.skipped:
        out.append(Text(f"skipped {printable(skipped.name)}: {printable(skipped.reason)}"))
    out.append(_summary_text(report, width))
    return out, plan


def _summary_text(report: ModelReport, width: int | None = None) -> Text:
    summary = report.summary
    naive = summary.naive_product
    lines = [f"{summary.layers_analysed} layers analysed, {summary.layers_skipped} skipped"]
    precision = _precision_line(report)
    if precision:
        lines.append(precision)
    if summary.largest_sigma_max is not None:
        name, value = summary.largest_sigma_max
        lines.append(f"largest σ_max: {short(value)} ({printable(name)})")
    if naive.value is not None:
        lines.append(f"naive product of σ_max over {naive.factors} layers: {short(naive.value)}")
        lines.append(
            "  (not a certified network bound: skip connections are ignored; see `convaudit check`)"
        )
    lines.extend(f"note: {printable(note)}" for note in (*summary.notes, *report.notes))
    wrapped = [
        part
        for line in lines
        for part in hanging(line.lstrip(), width, indent=len(line) - len(line.lstrip()))
    ]
    return Text("\n".join(wrapped))


_GUARANTEE_WORDS = (
    ("certified", "certified by bracket"),
    ("converged", "exact to it by Lanczos"),
    ("exact", "exact"),
    ("bound", "upper bounds only"),
)


def _precision_line(report: ModelReport) -> str:
    """How each σ_max holds, e.g. 'σ_max to 1e-4: 9 certified by bracket, 2 exact'."""
    sigmas = [r.spectrum.sigma_max for r in report.layers if r.spectrum.sigma_max is not None]
    counts = {key: sum(s.guarantee == key for s in sigmas) for key, _ in _GUARANTEE_WORDS}
    parts = [f"{counts[key]} {words}" for key, words in _GUARANTEE_WORDS if counts[key]]
    if not parts:
        return ""
    return f"σ_max to {tol_text(report.options.tol)}: " + ", ".join(parts)


def render_spectrum_table(reports: Sequence[ModelReport], options: RenderOptions) -> str:
    renderables: list[RenderableType] = []
    plans: list[TablePlan | None] = []
    for i, report in enumerate(reports):
        if i:
            renderables.append(Text(""))
        items, plan = spectrum_renderables(report, options.width)
        renderables.extend(items)
        plans.append(plan)
    return to_text(renderables, width=console_width(plans, options.width), color=options.color)


# --- `convaudit layers` -----------------------------------------------------------------------

LAYERS_COLUMNS = (
    Column("layer", shrink="name"),
    Column("kind", drop=5),
    Column("kernel"),
    Column("stride", drop=6),
    Column("dil", drop=3),
    Column("groups", drop=4),
    Column("padding"),
    Column("input"),
    Column("BN", shrink="name", drop=1),
    Column("provenance", shrink="name", drop=2),
)


def _pads(padding: Sequence[tuple[int, int]]) -> str:
    if not padding:
        return "-"
    if all(before == after for before, after in padding):
        return compact([before for before, _ in padding])
    return ",".join(f"{before}/{after}" for before, after in padding)


def _provenance(layer: object) -> str:
    prov = getattr(layer, "provenance", None)
    if prov is None:
        return "-"
    layout = "" if prov.layout == "oihw" else f" [{prov.layout}]"
    return printable(f"{prov.locator}{layout}")


def layers_row(layer: object) -> tuple[str, ...]:
    if isinstance(layer, ConvLayer):
        mode = layer.padding_mode + (" (T)" if layer.transposed else "")
        return (
            printable(layer.name),
            layer.kind,
            dims(layer.kernel.shape),
            compact(layer.stride),
            compact(layer.dilation),
            str(layer.groups),
            f"{mode} {_pads(layer.padding)}",
            dims(layer.input_size),
            "-" if layer.bn is None else printable(layer.bn.name or "yes"),
            _provenance(layer),
        )
    name, kind, weight = (getattr(layer, a) for a in ("name", "kind", "weight"))
    return (printable(name), kind, dims(weight.shape), *("-",) * 6, _provenance(layer))


def layers_renderables(
    ir: ModelIR, width: int | None = None
) -> tuple[list[RenderableType], TablePlan | None]:
    out, plan = fitted(
        LAYERS_COLUMNS,
        [layers_row(layer) for layer in ir.layers],
        width,
        title=f"{printable(ir.path)} ({ir.format})",
    )
    if ir.input_shapes:
        shapes = ", ".join(
            f"{printable(name or 'input')}={dims(shape, ',')}"
            for name, shape in sorted(ir.input_shapes.items())
        )
        out.append(Text(f"inputs: {shapes}"))
    out.extend(Text(f"skipped {printable(s.name)}: {printable(s.reason)}") for s in ir.skipped)
    out.extend(Text(f"note: {printable(note)}") for note in ir.notes)
    return out, plan


def render_layers_table(
    irs: Sequence[ModelIR], *, width: int | None = None, color: bool = False
) -> str:
    renderables: list[RenderableType] = []
    plans: list[TablePlan | None] = []
    for i, ir in enumerate(irs):
        if i:
            renderables.append(Text(""))
        items, plan = layers_renderables(ir, width)
        renderables.extend(items)
        plans.append(plan)
    return to_text(renderables, width=console_width(plans, width), color=color)


__all__ = [
    "LAYERS_COLUMNS",
    "SPECTRUM_COLUMNS",
    "boxed_table",
    "console_width",
    "fitted",
    "render_layers_table",
    "render_spectrum_table",
    "to_text",
]
