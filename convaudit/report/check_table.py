"""``convaudit check`` for humans: per model the network bounds and the findings, then a verdict.

The findings table is laid out by :mod:`convaudit.report.fit`: messages wrap at spaces (never
inside a number), layer names are shortened or folded, the code column gives way first, and a
terminal too narrow for a table gets one block per finding.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from convaudit.gate.findings import Finding, GateResult
from convaudit.report.check_common import network_lines
from convaudit.report.fit import PLAIN, Column, footer, hanging, plan_table, vertical_blocks
from convaudit.report.interface import printable
from convaudit.report.table import NATURAL_WIDTH, to_text

_STYLE = {"fail": "bold red", "warn": "yellow", "ignored": "dim", "baselined": "dim"}

FINDING_COLUMNS = (
    Column("code", drop=1),
    Column("status"),
    Column("layer", shrink="name"),
    Column("finding", shrink="prose"),
)


def _findings(findings: list[Finding], width: int | None) -> tuple[list[RenderableType], int]:
    """The findings table (or blocks) and the width it needs."""
    rows = [(f.code, f.status, printable(f.layer), printable(f.message)) for f in findings]
    plan = plan_table(FINDING_COLUMNS, rows, width, PLAIN)
    if plan is None:
        assert width is not None
        return [Text("\n".join(vertical_blocks(FINDING_COLUMNS, rows, width, title=2)))], width
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for index, w in zip(plan.columns, plan.widths, strict=True):
        table.add_column(FINDING_COLUMNS[index].header, no_wrap=True, width=w)
    status_at = plan.columns.index(1)
    for finding, cells in zip(findings, plan.rows, strict=True):
        texts = [Text("\n".join(lines)) for lines in cells]
        texts[status_at].stylize(_STYLE[finding.status])
        table.add_row(*texts)
    needed = PLAIN.overhead(len(plan.columns)) + plan.width
    return [table, *(Text(line) for line in footer(plan, width))], needed


def render_check_table(result: GateResult, *, width: int | None = None, color: bool = False) -> str:
    items: list[RenderableType] = []
    needed = NATURAL_WIDTH
    for model in result.models:
        items.append(Text(f"{printable(model.path)} ({model.format})", style="bold"))
        for line in [*network_lines(model), *(f"note: {note}" for note in model.notes)]:
            items.append(Text("\n".join(hanging(printable(line), width))))
        shown = [
            f
            for c in result.checks
            if c.model == model.path
            for f in c.findings
            if f.status in ("fail", "warn")
        ]
        if shown:
            table, table_width = _findings(shown, width)
            items.extend(table)
            needed = max(needed, table_width)
        items.append(Text(""))
    for note in result.notes:
        items.append(Text(f"note: {printable(note)}"))
    verdict = Text(
        "PASSED" if result.passed else "FAILED", style="bold green" if result.passed else "bold red"
    )
    verdict.append(
        f": {len(result.checks)} checks, {result.count('fail')} failing, {result.count('warn')} warnings, "
        f"{result.count('ignored')} ignored, {result.count('baselined')} baselined",
        style="",
    )
    items.append(verdict)
    text = to_text(items, width=width or needed, color=color)
    return "\n".join(line.rstrip() for line in text.split("\n"))  # rich pads cells


__all__ = ["FINDING_COLUMNS", "render_check_table"]
