"""Inline SVG charts for the html report: a plot frame with a log-scale y axis, and the marks
the report's figures need (polylines, points, brackets, limit ticks).

Coordinates are written with one decimal, so the same data always gives the same bytes. Text
(layer names in tooltips, axis labels) goes through the element builder and is escaped.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from convaudit.report.html.page import el, number

#: viridis, sampled at ten points (matplotlib's default colour map, also used by --plot)
_VIRIDIS = (
    (68, 1, 84),
    (72, 40, 120),
    (62, 73, 137),
    (49, 104, 142),
    (38, 130, 142),
    (31, 158, 137),
    (53, 183, 121),
    (110, 206, 88),
    (181, 222, 43),
    (253, 231, 37),
)
EXACT = "#1f5fa8"
BOUND = "#c0392b"
LIMIT = "#444a55"


def viridis(t: float) -> str:
    """The colour at ``t`` in [0, 1] (depth: first layer dark, last layer yellow)."""
    t = min(max(t, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    f = t - i
    rgb = (round(a + (b - a) * f) for a, b in zip(_VIRIDIS[i], _VIRIDIS[i + 1], strict=True))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _f(x: float) -> str:
    return f"{x:.1f}"


@dataclass(frozen=True)
class LogScale:
    """A log10 axis over [lo, hi] (both positive)."""

    lo: float
    hi: float

    @classmethod
    def covering(cls, values: Sequence[float]) -> LogScale:
        """A range a little wider than the positive finite ``values`` (1 when there are none)."""
        good = [v for v in values if v > 0 and math.isfinite(v)]
        if not good:
            return cls(0.5, 2.0)
        lo, hi = min(good), max(good)
        if hi / lo < 4:  # too narrow for ticks to mean anything: widen around the middle
            mid = math.sqrt(lo * hi)
            lo, hi = min(lo, mid / 2), max(hi, mid * 2)
        return cls(lo / 1.15, hi * 1.15)

    def fraction(self, value: float) -> float:
        return (math.log10(value) - math.log10(self.lo)) / (
            math.log10(self.hi) - math.log10(self.lo)
        )

    def ticks(self) -> list[float]:
        """Powers of ten inside the range; with fewer than three, also 2× and 5× them."""
        first, last = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
        decades = [10.0**k for k in range(first, last + 1)]
        inside = [t for t in decades if self.lo <= t <= self.hi]
        if len(inside) >= 3:
            step = max(1, len(inside) // 8)
            return inside[::step]
        fine = [m * t for t in decades for m in (1, 2, 5)]
        return [t for t in fine if self.lo <= t <= self.hi]


@dataclass(frozen=True)
class Frame:
    """A plot area of ``width`` × ``height`` pixels inside the margins, x in [0, 1]."""

    width: float
    height: float
    left: float = 62.0
    top: float = 30.0
    right: float = 16.0
    bottom: float = 42.0

    def x(self, fraction: float) -> float:
        return self.left + fraction * self.width

    def y(self, fraction: float) -> float:
        return self.top + (1.0 - fraction) * self.height

    @property
    def total(self) -> tuple[float, float]:
        return self.left + self.width + self.right, self.top + self.height + self.bottom


def chart(frame: Frame, scale: LogScale, *, title: str, x_label: str, y_label: str) -> ET.Element:
    """An ``svg`` element with the frame, the log y axis (grid, ticks, labels) and the titles;
    the caller appends its marks."""
    w, h = frame.total
    svg = el(
        "svg",
        el("title", title),
        viewBox=f"0 0 {_f(w)} {_f(h)}",
        width=_f(w),
        height=_f(h),
        role="img",
    )
    for tick in scale.ticks():
        y = frame.y(scale.fraction(tick))
        svg.append(
            el(
                "line",
                x1=_f(frame.left),
                x2=_f(frame.left + frame.width),
                y1=_f(y),
                y2=_f(y),
                class_="grid",
            )
        )
        svg.append(
            el(
                "text",
                number(tick, 3),
                x=_f(frame.left - 6),
                y=_f(y + 4),
                text_anchor="end",
                class_="label",
            )
        )
    svg.append(
        el(
            "rect",
            x=_f(frame.left),
            y=_f(frame.top),
            width=_f(frame.width),
            height=_f(frame.height),
            class_="frame",
        )
    )
    svg.append(el("text", title, x=_f(frame.left), y=_f(frame.top - 10), font_weight="600"))
    svg.append(
        el(
            "text",
            x_label,
            x=_f(frame.left + frame.width / 2),
            y=_f(frame.top + frame.height + 34),
            text_anchor="middle",
            class_="label",
        )
    )
    cy = frame.top + frame.height / 2
    svg.append(
        el(
            "text",
            y_label,
            x=_f(14),
            y=_f(cy),
            text_anchor="middle",
            transform=f"rotate(-90 14 {_f(cy)})",
            class_="label",
        )
    )
    return svg


def x_ticks(svg: ET.Element, frame: Frame, ticks: Sequence[tuple[float, str]]) -> None:
    """Labels under the frame at x fractions."""
    for fraction, label in ticks:
        svg.append(
            el(
                "text",
                label,
                x=_f(frame.x(fraction)),
                y=_f(frame.top + frame.height + 16),
                text_anchor="middle",
                class_="label",
            )
        )


def polyline(points: Sequence[tuple[float, float]], colour: str, tooltip: str) -> ET.Element:
    return el(
        "polyline",
        el("title", tooltip),
        points=" ".join(f"{_f(x)},{_f(y)}" for x, y in points),
        fill="none",
        stroke=colour,
        stroke_width="1.3",
        stroke_linejoin="round",
    )


def point(x: float, y: float, *, filled: bool, colour: str, tooltip: str) -> ET.Element:
    return el(
        "circle",
        el("title", tooltip),
        cx=_f(x),
        cy=_f(y),
        r="3.6",
        fill=colour if filled else "#ffffff",
        stroke=colour,
        stroke_width="1.5",
    )


def bracket(x: float, y_low: float, y_high: float, colour: str) -> ET.Element:
    """A vertical line from the lower to the upper bound, with end caps."""
    d = (
        f"M{_f(x)},{_f(y_low)}V{_f(y_high)}"
        f"M{_f(x - 3)},{_f(y_low)}H{_f(x + 3)}M{_f(x - 3)},{_f(y_high)}H{_f(x + 3)}"
    )
    return el("path", d=d, stroke=colour, stroke_width="1.2", fill="none")


def tick_mark(x: float, y: float, half: float, colour: str, tooltip: str) -> ET.Element:
    """A short horizontal dash (a per-layer limit)."""
    return el(
        "line",
        el("title", tooltip),
        x1=_f(x - half),
        x2=_f(x + half),
        y1=_f(y),
        y2=_f(y),
        stroke=colour,
        stroke_width="2",
    )


def legend(svg: ET.Element, frame: Frame, entries: Sequence[tuple[str, str, bool]]) -> None:
    """Entries (label, colour, filled) in the top right corner of the frame."""
    x = frame.left + frame.width - 150
    for i, (label, colour, filled) in enumerate(entries):
        y = frame.top + 14 + 15 * i
        svg.append(
            el(
                "circle",
                cx=_f(x),
                cy=_f(y - 4),
                r="3.6",
                fill=colour if filled else "#ffffff",
                stroke=colour,
                stroke_width="1.5",
            )
        )
        svg.append(el("text", label, x=_f(x + 9), y=_f(y), class_="label"))


def depth_bar(svg: ET.Element, frame: Frame, first: str, last: str, *, ident: str) -> None:
    """A colour bar by the title: the spectra's colours run from the first layer to the last.
    ``ident``: the gradient's id, unique in the page."""
    svg.append(
        el(
            "defs",
            el(
                "linearGradient",
                *(el("stop", offset=f"{i / 9:.3f}", stop_color=viridis(i / 9)) for i in range(10)),
                id=ident,
            ),
        )
    )
    x, y = frame.left + frame.width - 190, frame.top - 20
    svg.append(el("rect", x=_f(x), y=_f(y), width="120", height="8", fill=f"url(#{ident})"))
    svg.append(el("text", first, x=_f(x - 4), y=_f(y + 8), text_anchor="end", class_="label"))
    svg.append(el("text", last, x=_f(x + 124), y=_f(y + 8), class_="label"))


__all__ = [
    "BOUND",
    "EXACT",
    "LIMIT",
    "Frame",
    "LogScale",
    "bracket",
    "chart",
    "depth_bar",
    "legend",
    "point",
    "polyline",
    "tick_mark",
    "viridis",
    "x_ticks",
]
