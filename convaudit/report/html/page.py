"""The html document: element building, the page skeleton, and the pieces both reports share.

Elements are :mod:`xml.etree.ElementTree` elements serialised with ``method="html"``: text and
attribute values are always escaped, so nothing taken from a model file becomes markup. The
page inlines ``assets/report.css`` and ``assets/report.js`` and pins them with a
Content-Security-Policy of their SHA-256 hashes: no other script or style runs, and nothing is
fetched (``default-src 'none'``), so the file works offline and leaks nothing when opened.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from convaudit import __version__
from convaudit.report.interface import printable


def el(tag: str, *children: ET.Element | str | None, **attrs: Any) -> ET.Element:
    """An element with ``children`` (elements, or strings as text) and ``attrs``.

    Attribute names: a trailing ``_`` is dropped (``class_``) and ``_`` becomes ``-``
    (``data_sort``); None values are left out.
    """
    node = ET.Element(tag, {_attr(k): str(v) for k, v in attrs.items() if v is not None})
    append(node, *children)
    return node


def _attr(name: str) -> str:
    return name.rstrip("_").replace("_", "-")


def append(node: ET.Element, *children: ET.Element | str | None) -> ET.Element:
    """Append elements and text (strings) to ``node``, in order."""
    for child in children:
        if child is None:
            continue
        if isinstance(child, str):
            if len(node):
                last = node[-1]
                last.tail = (last.tail or "") + child
            else:
                node.text = (node.text or "") + child
        else:
            node.append(child)
    return node


def text(value: str) -> str:
    """A string from the model file, with invisible control characters made visible."""
    return printable(value)


@cache
def asset(name: str) -> str:
    return (resources.files("convaudit.report.html") / "assets" / name).read_text("utf-8")


def _sha256(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def document(title: str, body: Sequence[ET.Element]) -> str:
    """The whole page: head (charset, CSP, inline CSS), ``body``, the inline sorting script."""
    css, js = asset("report.css"), asset("report.js")
    policy = (
        f"default-src 'none'; style-src {_sha256(css)}; script-src {_sha256(js)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    html = el(
        "html",
        el(
            "head",
            el("meta", charset="utf-8"),
            el("meta", http_equiv="Content-Security-Policy", content=policy),
            el("meta", name="viewport", content="width=device-width, initial-scale=1"),
            el("meta", name="generator", content=f"convaudit {__version__}"),
            el("title", title),
            el("style", css),
        ),
        el("body", *body, el("script", js)),
        lang="en",
    )
    _break_lines(html)
    return "<!DOCTYPE html>\n" + ET.tostring(html, encoding="unicode", method="html") + "\n"


#: elements whose children go on lines of their own (whitespace there renders as nothing)
_BLOCKS = frozenset(
    {"html", "head", "body", "div", "table", "thead", "tbody", "tr", "ul", "dl", "figure", "svg"}
)


def _break_lines(node: ET.Element) -> None:
    """A line break between the children of block elements, so that the file reads and diffs
    line by line; inline content (cells, headers, paragraphs) is left exactly as built."""
    if node.tag in _BLOCKS and len(node):
        if not (node.text or "").strip():
            node.text = "\n"
        for child in node:
            if not (child.tail or "").strip():
                child.tail = "\n"
    for child in node:
        _break_lines(child)


# --- shared pieces ----------------------------------------------------------------------------


def number(value: float | None, digits: int = 4) -> str:
    """A number for the page: ``digits`` significant digits, '-' when absent."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def sort_key(value: float | None) -> str | None:
    """The ``data-sort`` of a numeric cell: the full value (None: sorts last)."""
    if value is None or math.isnan(value):
        return None
    return repr(float(value))


@dataclass(frozen=True)
class Col:
    """A column of a sortable table: its header, whether it sorts as numbers, a tooltip."""

    header: str
    numeric: bool = False
    title: str | None = None


@dataclass(frozen=True)
class Cell:
    """One cell: what it shows, how it sorts (numbers: the full value), its class."""

    shown: str
    sort: str | None = None
    css: str | None = None


def num_cell(value: float | None, digits: int = 4) -> Cell:
    return Cell(number(value, digits), sort_key(value) or "", "num")


def sortable_table(
    columns: Sequence[Col],
    rows: Iterable[Sequence[Cell | str]],
    *,
    row_classes: Sequence[str | None] | None = None,
    label: str,
) -> ET.Element:
    """A table whose headers sort it (report.js), wrapped so that it scrolls when wide."""
    head = el(
        "tr",
        *(
            el(
                "th",
                el("button", c.header, type="button"),
                scope="col",
                title=c.title,
                data_type="number" if c.numeric else "text",
            )
            for c in columns
        ),
    )
    body = el("tbody")
    for i, row in enumerate(rows):
        tr = el("tr", class_=None if row_classes is None else row_classes[i])
        for cell in row:
            cell = cell if isinstance(cell, Cell) else Cell(cell)
            tr.append(el("td", cell.shown, data_sort=cell.sort, class_=cell.css))
        body.append(tr)
    table = el("table", el("thead", head), body, class_="sortable", aria_label=label)
    return el("div", table, class_="wrap")


def facts(items: Mapping[str, str | ET.Element]) -> ET.Element:
    """A definition list of ``name: value`` pairs."""
    dl = el("dl", class_="facts")
    for name, value in items.items():
        append(dl, el("dt", name), el("dd", value))
    return dl


def options_facts(options: Any) -> ET.Element:
    """Every field of an options dataclass, as the run used it."""
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        values = dataclasses.asdict(options)
    else:
        values = dict(options)
    return facts({key: _option(value) for key, value in values.items()})


def _option(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_option(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{k}={_option(v)}" for k, v in value.items()) or "-"
    return text(str(value))


def header(title: str, subtitle: str) -> list[ET.Element]:
    return [el("h1", title), el("p", subtitle, class_="muted")]


def figures(*items: ET.Element | None) -> ET.Element | None:
    """Figures side by side where the window is wide enough."""
    shown = [item for item in items if item is not None]
    return el("div", *shown, class_="figures") if shown else None


def bullet_list(lines: Iterable[str]) -> ET.Element | None:
    items = [el("li", line) for line in lines]
    return el("ul", *items) if items else None


__all__ = [
    "Cell",
    "Col",
    "append",
    "bullet_list",
    "document",
    "el",
    "facts",
    "figures",
    "header",
    "num_cell",
    "number",
    "options_facts",
    "sort_key",
    "sortable_table",
    "text",
]
