"""What every reporter shares: render options, and how numbers and shapes are written.

A reporter turns ModelReports (or ModelIRs, for ``convaudit layers``) into text; it never
prints. :mod:`convaudit.report.formats` maps each output format to its reporter. This module
imports no reporter, so every reporter can import it.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from convaudit.engine.results import NormResult

SCHEMA_VERSION = "1.0"

SPECTRUM_NOTE = (
    "sigma_min, condition, stable rank and singular_values are of spectrum.operator on "
    "spectrum.grid: for convs the circular-padding operator, exact for circular layers and, for "
    "zero-padded ones, the paper's characterisation, not the layer's own operator"
)


@dataclass(frozen=True)
class RenderOptions:
    full: bool = False  # every singular value in JSON
    width: int | None = None  # table width (None: the terminal's)
    color: bool = False  # ANSI styles in the table


# --- shared formatting --------------------------------------------------------------------------


def round_float(value: float | None, digits: int = 12) -> float | None:
    """A float rounded to ``digits`` significant digits (None for None / NaN / Inf).

    Machine formats write these, so the same input gives byte-identical output even when the
    last bits of a LAPACK result vary with threading.
    """
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def short(value: float | None, digits: int = 4) -> str:
    """A number for humans: 4 significant digits, '-' when absent."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def dims(values: Sequence[int | None] | None, sep: str = "x") -> str:
    """(3, 3) -> '3x3'; None -> '?'."""
    if values is None:
        return "?"
    return sep.join("?" if v is None else str(v) for v in values) or "-"


def compact(values: Sequence[int | None]) -> str:
    """(2, 2) -> '2', (2, 1) -> '2x1', () -> '-': geometry columns stay narrow."""
    if not values:
        return "-"
    if len(set(values)) == 1:
        return str(values[0])
    return dims(values)


def printable(text: str) -> str:
    """``text`` with control and format characters written as escapes (``\\n``, ``\\x1b``).

    Layer names, node names and paths come from the model file, which is untrusted: in a
    terminal an escape sequence in a name could rewrite what the report shows.
    """
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch == " " or unicodedata.category(ch)[0] not in "CZ" or ch.isprintable()
        else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


QUANTITY_WORDS = {
    "exact": "exact",
    "upper-bound": "≤ bound",
    "lower-bound": "≥ bound",
    "estimate": "estimate",
}


def describe_sigma(result: NormResult | None) -> str:
    """What a sigma_max IS, e.g. 'certified to 1e-4 · zeros · 32x32' (its certified bracket is
    within 1e-4), 'exact to 1e-4 · zeros · 32x32' (Lanczos converged to 1e-4), 'exact · dense'
    or '≤ bound · any input size'."""
    if result is None:
        return "-"
    quantity = QUANTITY_WORDS.get(result.quantity, result.quantity)
    if result.quantity == "exact":
        quantity = result.precision
    if result.operator == "any-size":
        return f"{quantity} · any input size"
    if result.grid is None:  # e.g. a dense layer: no padding, no grid
        return f"{quantity} · {result.operator}"
    return f"{quantity} · {result.operator} · {dims(result.grid)}"
