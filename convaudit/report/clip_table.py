"""``convaudit clip`` for humans: one row per clipped layer, then what the numbers are of.

Laid out by :mod:`convaudit.report.fit` for the terminal's width (plain columns, two spaces
apart): no number is ever cut, long names are shortened or folded, columns give way in a stated
order with a footer saying which, and a terminal too narrow for a table gets one block per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.cells import cell_len

from convaudit.report.fit import (
    PLAIN,
    Column,
    TablePlan,
    footer,
    hanging,
    plan_table,
    vertical_blocks,
)
from convaudit.report.interface import printable

if TYPE_CHECKING:
    from convaudit.clipping import ClipReport, LayerClip

CLIP_COLUMNS = (
    Column("layer", shrink="name"),
    Column("kind", drop=3),
    Column("bound"),
    Column("sigma_before", drop=6),
    Column("sigma_after"),
    Column("rechecked", drop=5),
    Column("exact_after", drop=1),
    Column("iters", drop=2),
    Column("rel_change", drop=4),
    Column("status"),
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.7g}"


def clip_row(r: LayerClip) -> tuple[str, ...]:
    status = "OVER BOUND" if not r.within_bound else ("unchanged" if r.unchanged else "clipped")
    return (
        printable(r.name),
        r.kind,
        _fmt(r.bound),
        _fmt(r.sigma_before),
        _fmt(r.sigma_after),
        _fmt(r.rechecked),
        _fmt(r.exact_after),
        str(r.iterations),
        f"{r.relative_change:.3%}",
        status,
    )


def plain_lines(plan: TablePlan, columns: Sequence[Column]) -> list[str]:
    """``plan`` as text: a header line, then each row over as many lines as its tallest cell."""
    gap = " " * PLAIN.gap

    def line(cells: Sequence[str]) -> str:
        padded = []
        for index, width, cell in zip(plan.columns, plan.widths, cells, strict=True):
            space = " " * (width - cell_len(cell))
            padded.append(space + cell if columns[index].justify == "right" else cell + space)
        return gap.join(padded).rstrip()

    lines = [line([columns[i].header for i in plan.columns])]
    for row in plan.rows:
        height = max(len(cell) for cell in row)
        for k in range(height):
            lines.append(line([cell[k] if k < len(cell) else "" for cell in row]))
    return lines


def render_clip_table(report: ClipReport, *, width: int | None = None) -> str:
    rows = [clip_row(r) for r in report.layers]
    plan = plan_table(CLIP_COLUMNS, rows, width, PLAIN)
    if plan is None:
        assert width is not None
        lines = vertical_blocks(CLIP_COLUMNS, rows, width)
    else:
        lines = plain_lines(plan, CLIP_COLUMNS)
        lines += [part for line in footer(plan, width) for part in hanging(line, width, 0)]
    statements = sorted({r.operator for r in report.layers})
    lines.append("")
    lines += hanging("sigma_* are certified upper bounds of each layer's real operator:", width, 0)
    lines += [line for s in statements for line in hanging(f"- {printable(s)}", width)]
    return "\n".join(lines) + "\n"


__all__ = ["CLIP_COLUMNS", "render_clip_table"]
