"""``convaudit check`` for humans: per model the network bounds and the findings, then a verdict."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from convaudit.gate.findings import GateResult
from convaudit.report.check_common import network_lines
from convaudit.report.table import to_text

_STYLE = {"fail": "bold red", "warn": "yellow", "ignored": "dim", "baselined": "dim"}


def render_check_table(result: GateResult, *, width: int | None = None, color: bool = False) -> str:
    items: list = []
    for model in result.models:
        items.append(Text(f"{model.path} ({model.format})", style="bold"))
        items.extend(Text("  " + line) for line in network_lines(model))
        for note in model.notes:
            items.append(Text(f"  note: {note}"))
        shown = [
            f
            for c in result.checks
            if c.model == model.path
            for f in c.findings
            if f.status in ("fail", "warn")
        ]
        if shown:
            table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
            for column in ("code", "status", "layer", "finding"):
                table.add_column(column, overflow="fold")
            for f in shown:
                table.add_row(f.code, Text(f.status, style=_STYLE[f.status]), f.layer, f.message)
            items.append(table)
        items.append(Text(""))
    for note in result.notes:
        items.append(Text(f"note: {note}"))
    verdict = Text(
        "PASSED" if result.passed else "FAILED", style="bold green" if result.passed else "bold red"
    )
    verdict.append(
        f": {len(result.checks)} checks, {result.count('fail')} failing, {result.count('warn')} warnings, "
        f"{result.count('ignored')} ignored, {result.count('baselined')} baselined",
        style="",
    )
    items.append(verdict)
    text = to_text(items, width=width, color=color)
    return "\n".join(line.rstrip() for line in text.split("\n"))  # rich pads cells


__all__ = ["render_check_table"]
