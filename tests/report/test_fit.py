"""The table-fitting rules (report/fit.py), checked on their own and over generated tables:
nothing fixed is ever cut, names stay identifiable, columns go in their stated order, and the
result fits the width."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from convaudit.report.fit import (
    BOXED,
    PLAIN,
    Column,
    fold,
    plan_table,
    shorten_distinct,
    shorten_middle,
    vertical_blocks,
    wrap_words,
)

COLUMNS = (
    Column("layer", shrink="name"),
    Column("kind", drop=3),
    Column("kernel", drop=2),
    Column("σ_max", "right"),
    Column("σ_max is"),
    Column("finding", shrink="prose", drop=4),
    Column("stable rank*", "right", drop=1),
)

name_parts = st.sampled_from(
    ["backbone", "stage2", "block1", "conv", "Conv", "layer.3", "attention", "If_0_else_branch__",
     "Inline_0__", "encoder", "query", "名前", "x"]
)  # fmt: skip
names = st.lists(name_parts, min_size=1, max_size=9).map(lambda parts: "/" + "/".join(parts))
numbers = st.floats(1e-9, 1e9).map(lambda v: f"{v:.4g}")


@st.composite
def tables(draw):
    layer_names = draw(st.lists(names, min_size=1, max_size=12, unique=True))
    rows = []
    for name in layer_names:
        sigma = draw(numbers)
        finding = f"{name}: sigma_max {sigma} > max-sigma {draw(numbers)} (exact, zeros padding)"
        rows.append((name, "conv", "64x64x3x3", sigma, "exact · zeros · 224x224", finding, "1413"))
    return rows


def test_shorten_middle_keeps_both_ends():
    text = "If_0_else_branch__Inline_0__/encoder/layer.3/attention/conv/Conv"
    short = shorten_middle(text, 24)
    assert cell_len(short) == 24 and "…" in short
    head, tail = short.split("…")
    assert text.startswith(head) and text.endswith(tail)
    assert shorten_middle("short", 24) == "short"


def test_shorten_distinct_moves_the_cut_to_keep_names_apart():
    names = [f"/backbone/stage2/block{i}/conv/Conv" for i in range(3)]
    short = shorten_distinct(names, 20)
    assert short is not None and len(set(short)) == 3
    assert all(cell_len(s) <= 20 for s in short)
    assert shorten_distinct(["a" * 30 + "1", "a" * 30 + "1b"], 4) is None or True  # total


def test_fold_and_wrap_lose_nothing():
    text = "If_0_else_branch__Inline_0__/encoder/layer.3/attention/conv/Conv"
    for width in (8, 13, 20):
        pieces = fold(text, width, breaks="/._")
        assert "".join(pieces) == text and all(cell_len(p) <= width for p in pieces)
    message = "stem: sigma_max (exact, zeros padding, 8x8) 1.812345 > max-sigma 1.5"
    lines = wrap_words(message, 24)
    assert " ".join(lines).split() == message.split()
    assert all(cell_len(line) <= 24 for line in lines)


@settings(max_examples=150, deadline=None)
@given(rows=tables(), width=st.integers(60, 220), boxed=st.booleans())
def test_plans_fit_and_never_cut_a_number(rows, width, boxed):
    style = BOXED if boxed else PLAIN
    plan = plan_table(COLUMNS, rows, width, style)
    if plan is None:  # too narrow for a table: the blocks keep every value whole
        lines = vertical_blocks(COLUMNS, rows, width)
        text = "\n".join(lines)
        for row in rows:
            assert f"σ_max: {row[3]}" in text
        return
    assert style.overhead(len(plan.columns)) + plan.width <= width
    always = [i for i, c in enumerate(COLUMNS) if c.drop is None]
    assert set(always) <= set(plan.columns)

    # columns go in their stated order; a less important one is shown instead of a more
    # important one only when that one needs more room than there is
    def natural(i: int) -> int:
        return max(cell_len(COLUMNS[i].header), *(cell_len(r[i]) for r in rows))

    shown = [
        i for i in plan.columns if COLUMNS[i].drop is not None and COLUMNS[i].shrink == "fixed"
    ]
    for d in (i for i, c in enumerate(COLUMNS) if c.header in plan.dropped and c.shrink == "fixed"):
        for k in shown:
            if (COLUMNS[k].drop or 0) < (COLUMNS[d].drop or 0):
                assert natural(d) > natural(k), (COLUMNS[d].header, COLUMNS[k].header)
    for row, cells in zip(rows, plan.rows, strict=True):
        for index, width_i, lines in zip(plan.columns, plan.widths, cells, strict=True):
            assert all(cell_len(line) <= width_i for line in lines)
            column = COLUMNS[index]
            if column.shrink == "fixed":
                assert lines == (row[index],)  # never cut, never wrapped
            elif column.shrink == "prose":  # wrapped at spaces, words too long for a line folded
                assert "".join(lines).replace(" ", "") == row[index].replace(" ", "")
                words = [w for line in lines for w in line.split()]
                for token in row[index].split():
                    if re.fullmatch(r"[-+]?\d[\d.]*(e[-+]?\d+)?", token):
                        assert token in words  # a number is one whole word on one line
    # every layer identifiable: whole (maybe folded over lines), or cut to a distinct form
    name_at = plan.columns.index(0)
    names = ["".join(cells[name_at]) for cells in plan.rows]
    if "layer" in plan.shortened:
        assert len(set(names)) == len(rows)
        for name, short in zip((r[0] for r in rows), names, strict=True):
            head, _, tail = short.partition("…")
            assert name.startswith(head) and name.endswith(tail)
    else:
        assert names == [r[0] for r in rows]


def test_piped_output_keeps_every_column_at_full_width():
    rows = [("/a/very/long/name/" * 8, "conv", "3x3", "1.5", "exact", "x " * 80, "9")]
    plan = plan_table(COLUMNS, rows, None)
    assert plan is not None and plan.columns == tuple(range(len(COLUMNS)))
    assert plan.rows[0][0] == (rows[0][0],) and not plan.dropped


@pytest.mark.parametrize("width", [30, 45])
def test_vertical_blocks_fit_and_keep_numbers_whole(width):
    rows = [("If_0_else_branch__Inline_0__/encoder/layer.3/attention/conv/Conv", "conv",
             "64x64x3x3", "1.945", "exact · zeros · 224x224", "a finding", "1413")]  # fmt: skip
    lines = vertical_blocks(COLUMNS, rows, width)
    assert all(cell_len(line) <= width for line in lines)
    assert "".join(lines[:3]).startswith("If_0_else_branch__Inline_0__/encoder")
    assert any("σ_max: 1.945" in line for line in lines)
