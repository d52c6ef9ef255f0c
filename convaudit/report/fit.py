"""Fitting a table to the terminal: which columns show, how wide, and how long names are cut.

Pure layout, no rendering: a reporter describes its columns and gives rows of plain strings;
:func:`plan_table` returns a :class:`TablePlan` (each cell already split into the lines it
takes), or None when even the narrowest table would not fit, and the reporter then prints one
block per row (:func:`vertical_blocks`). The rules, at any width:

- a cell of a ``fixed`` column (numbers, shapes, "what σ_max is" labels) is never narrowed, cut or
  wrapped;
- a ``name`` column (layer names, node names, provenance) is shortened from the middle with "…"
  when that keeps every name distinct, else folded over several lines: every row stays
  identifiable;
- a ``prose`` column (finding messages) wraps at spaces, never inside a number;
- when the fixed columns and a comfortable name width do not fit, columns are dropped in their
  stated order (``drop``: 1 goes first; None: always shown) until the rest fits; then any dropped
  column that fits in the room left is taken back, the most important first. The footer says
  which columns are not shown.

``width=None`` (a file or a pipe) keeps every column at its natural width.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len

Shrink = Literal["fixed", "name", "prose"]

#: a name column is never narrower than this (below it the vertical layout is clearer)
NAME_MIN = 16
#: a prose column is never narrower than this (nor than its longest number)
PROSE_MIN = 24
ELLIPSIS = "…"
_NUMBER = re.compile(r"[-+]?(?:\d[\d.,]*(?:e[-+]?\d+)?|inf|nan)(?:x\d+)*%?", re.IGNORECASE)


@dataclass(frozen=True)
class Column:
    header: str
    justify: Literal["left", "right"] = "left"
    shrink: Shrink = "fixed"
    #: the order in which columns give way when the table is too wide (1 first); None: never
    drop: int | None = None


@dataclass(frozen=True)
class TableStyle:
    """Characters a table spends around its cells: ``edge`` at each side, ``gap`` between two."""

    edge: int
    gap: int

    def overhead(self, columns: int) -> int:
        return 2 * self.edge + self.gap * max(columns - 1, 0)


#: rich's default boxed table: "│ " at the edges, " │ " between cells
BOXED = TableStyle(edge=2, gap=3)
#: borderless, two spaces between cells (check findings, clip)
PLAIN = TableStyle(edge=0, gap=2)


@dataclass(frozen=True)
class TablePlan:
    """What to draw: the visible columns (indices into the reporter's), their widths, each
    row's cells as lines, and what was left out or cut (for the footer)."""

    columns: tuple[int, ...]
    widths: tuple[int, ...]
    rows: tuple[tuple[tuple[str, ...], ...], ...]  # row -> visible cell -> lines
    dropped: tuple[str, ...] = ()
    shortened: tuple[str, ...] = ()  # headers of name columns cut in the middle
    folded: tuple[str, ...] = ()  # headers of name columns folded over several lines

    @property
    def width(self) -> int:
        """The table's width without its edges and gaps."""
        return sum(self.widths)


def _natural(column: Column, cells: Sequence[str]) -> int:
    return max([cell_len(column.header), *(cell_len(c) for c in cells)])


def longest_number(texts: Sequence[str]) -> int:
    """Width of the longest number in ``texts`` (a prose column must never break one)."""
    return max((len(m.group()) for t in texts for m in _NUMBER.finditer(t)), default=0)


def _minimum(column: Column, cells: Sequence[str], natural: int) -> int:
    if column.shrink == "fixed":
        return natural
    floor = NAME_MIN if column.shrink == "name" else max(PROSE_MIN, longest_number(cells))
    return min(natural, max(floor, cell_len(column.header)))


def _fill(budget: int, lows: dict[int, int], highs: dict[int, int]) -> dict[int, int] | None:
    """Widths between ``lows`` and ``highs`` summing to at most ``budget``, the spare shared
    out evenly (water-filling); None when even the lows do not fit."""
    if sum(lows.values()) > budget:
        return None
    widths = dict(lows)
    spare = budget - sum(widths.values())
    while spare > 0:
        open_ = [i for i in widths if widths[i] < highs[i]]
        if not open_:
            break
        level = min(widths[i] for i in open_)
        at_level = [i for i in open_ if widths[i] == level]
        for i in at_level[:spare]:
            widths[i] += 1
        spare -= min(len(at_level), spare)
    return widths


def plan_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: int | None,
    style: TableStyle = BOXED,
) -> TablePlan | None:
    """The layout of ``rows`` within ``width`` terminal columns, or None if none fits."""
    cells = [[row[i] for row in rows] for i in range(len(columns))]
    natural = [_natural(c, cells[i]) for i, c in enumerate(columns)]
    if width is None:
        return _layout(columns, rows, tuple(range(len(columns))), dict(enumerate(natural)), ())
    minimum = [_minimum(c, cells[i], natural[i]) for i, c in enumerate(columns)]
    # A comfortable width for a name or prose column: a third of the screen, or all it needs.
    comfortable = [min(natural[i], max(minimum[i], width // 3)) for i in range(len(columns))]
    droppable = sorted(
        (i for i, c in enumerate(columns) if c.drop is not None),
        key=lambda i: columns[i].drop or 0,
    )

    def widths_for(visible: tuple[int, ...], floor: list[int]) -> dict[int, int] | None:
        flex = [i for i in visible if columns[i].shrink != "fixed"]
        fixed = [i for i in visible if columns[i].shrink == "fixed"]
        budget = width - style.overhead(len(visible)) - sum(natural[i] for i in fixed)
        widths = _fill(budget, {i: floor[i] for i in flex}, {i: natural[i] for i in flex})
        if widths is not None:
            widths.update({i: natural[i] for i in fixed})
        return widths

    for floor in (comfortable, minimum):
        for k in range(len(droppable) + 1):
            gone = list(droppable[:k])
            visible = tuple(i for i in range(len(columns)) if i not in gone)
            widths = widths_for(visible, floor)
            if widths is None:
                continue
            # Room left over: take back what was dropped, most important first, where it fits.
            for i in reversed(droppable[:k]):
                wider = tuple(sorted((*visible, i)))
                more = widths_for(wider, floor)
                if more is not None:
                    visible, widths = wider, more
                    gone.remove(i)
            dropped = tuple(columns[i].header for i in sorted(gone))
            return _layout(columns, rows, visible, widths, dropped)
    return None


def _layout(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    visible: tuple[int, ...],
    widths: dict[int, int],
    dropped: tuple[str, ...],
) -> TablePlan:
    shortened: list[str] = []
    folded: list[str] = []
    laid: dict[int, list[tuple[str, ...]]] = {}
    for i in visible:
        column, w = columns[i], widths[i]
        values = [row[i] for row in rows]
        if column.shrink == "prose":
            laid[i] = [tuple(wrap_words(v, w)) for v in values]
        elif column.shrink == "name" and any(cell_len(v) > w for v in values):
            short = shorten_distinct(values, w)
            if short is not None:
                laid[i] = [(s,) for s in short]
                shortened.append(column.header)
            else:  # every cut makes two names look alike: fold them whole instead
                laid[i] = [tuple(fold(v, w, breaks=NAME_BREAKS)) for v in values]
                folded.append(column.header)
        else:
            laid[i] = [(v,) for v in values]
    return TablePlan(
        columns=visible,
        widths=tuple(widths[i] for i in visible),
        rows=tuple(tuple(laid[i][r] for i in visible) for r in range(len(rows))),
        dropped=dropped,
        shortened=tuple(shortened),
        folded=tuple(folded),
    )


def _chop(text: str, width: int, *, from_end: bool = False) -> str:
    """The longest prefix (or suffix) of ``text`` at most ``width`` cells wide."""
    chars = reversed(text) if from_end else iter(text)
    out: list[str] = []
    used = 0
    for ch in chars:
        w = cell_len(ch)
        if used + w > width:
            break
        out.append(ch)
        used += w
    return "".join(reversed(out) if from_end else out)


def shorten_middle(text: str, width: int, head: int | None = None) -> str:
    """``text`` cut to ``width`` cells by replacing its middle with "…" (the start says where a
    layer sits, the end what it is: both stay). ``head``: cells kept from the start (a third by
    default)."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head = (width - 1) // 3 if head is None else min(max(head, 0), width - 1)
    return _chop(text, head) + ELLIPSIS + _chop(text, width - 1 - head, from_end=True)


def shorten_distinct(values: Sequence[str], width: int) -> list[str] | None:
    """Every value cut to ``width`` cells in the middle, at the one place (nearest a third in)
    that keeps distinct values distinct; None when no such place exists."""
    if width < 2:
        return None
    wanted = len(set(values))
    first = (width - 1) // 3
    # first, then first+1, first-1, first+2, ...: the preferred cut, then its neighbours
    heads = sorted(range(width), key=lambda h: (abs(h - first), h < first))
    for head in heads:
        short = [shorten_middle(v, width, head) for v in values]
        if len(set(short)) == wanted:
            return short
    return None


#: characters after which a folded name preferably breaks
NAME_BREAKS = "/.:_-"


def fold(text: str, width: int, *, breaks: str = "") -> list[str]:
    """``text`` in pieces of at most ``width`` cells, nothing lost; with ``breaks``, a piece
    ends after the last of those characters in its second half, where there is one."""
    width = max(width, 2)  # a double-width character needs two cells
    lines: list[str] = []
    while text:
        piece = _chop(text, width)
        if breaks and len(piece) < len(text):
            cut = max(piece.rfind(ch) for ch in breaks)
            if cut + 1 >= (len(piece) + 1) // 2:
                piece = piece[: cut + 1]
        lines.append(piece)
        text = text[len(piece) :]
    return lines or [""]


def wrap_words(text: str, width: int) -> list[str]:
    """``text`` wrapped at spaces into lines of at most ``width`` cells; a word longer than that
    is folded (the caller makes ``width`` at least the longest number, so none is ever broken)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if cell_len(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        pieces = fold(word, width)
        lines.extend(pieces[:-1])
        line = pieces[-1]
    lines.append(line)
    return lines


def footer(plan: TablePlan, width: int | None, more: str = "--format json") -> list[str]:
    """What the table left out or cut, and how to see it all."""
    out: list[str] = []
    where = f"{more} or a wider terminal"
    if plan.dropped:
        out.append(
            f"columns not shown at {width} columns wide: {', '.join(plan.dropped)} "
            f"(all columns: {where})"
        )
    if plan.shortened:
        out.append(
            f"{' and '.join(plan.shortened)} shortened in the middle ({ELLIPSIS}) to fit "
            f"(in full: {where})"
        )
    return out


def vertical_blocks(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int, *, title: int = 0
) -> list[str]:
    """One block per row for a terminal too narrow for any table: the ``title`` cell (the
    layer's name, folded, never cut) on its own line, then ``header: value`` items, never split,
    packed into indented lines. Always-shown columns come first, then by importance."""
    order = sorted(
        (i for i in range(len(columns)) if i != title),
        key=lambda i: -math.inf if columns[i].drop is None else -(columns[i].drop or 0),
    )
    lines: list[str] = []
    for row in rows:
        lines.extend(fold(row[title], width, breaks=NAME_BREAKS))
        packed: list[str] = []
        for i in order:
            item = f"{columns[i].header}: {row[i]}"
            if packed and cell_len(f"{packed[-1]}   {item}") <= width:
                packed[-1] = f"{packed[-1]}   {item}"
            else:
                packed.append(f"  {item}")
        for line in packed:
            lines.extend(hanging(line.strip(), width))
    return lines


def hanging(text: str, width: int | None, indent: int = 2, more: int = 2) -> list[str]:
    """``text`` indented by ``indent`` spaces and wrapped at spaces to ``width``, continuation
    lines indented ``more`` further; never a number broken (``width=None``: one line)."""
    pad = " " * indent
    if width is None or cell_len(pad + text) <= width:
        return [pad + text]
    text = " ".join(text.split())
    floor = max(longest_number([text]), 1)
    first = wrap_words(text, max(width - indent, floor))[0]  # a prefix of text
    rest = text[len(first) :].lstrip()
    tail = wrap_words(rest, max(width - indent - more, floor)) if rest else []
    return [pad + first, *(pad + " " * more + line for line in tail)]


__all__ = [
    "BOXED",
    "PLAIN",
    "Column",
    "TablePlan",
    "TableStyle",
    "fold",
    "footer",
    "hanging",
    "longest_number",
    "plan_table",
    "shorten_distinct",
    "shorten_middle",
    "vertical_blocks",
    "wrap_words",
]
