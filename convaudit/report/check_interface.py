"""Output formats of ``convaudit check``: an enum, and the renderer for each (lazily imported).

``renderer(fmt)`` maps every CheckFormat to a function ``GateResult -> str``; a test proves the
mapping exhaustive. Renderers never print; the CLI writes their text to stdout or ``-o``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from enum import Enum

from convaudit.gate import GateResult, ModelCheck


class CheckFormat(str, Enum):
    TABLE = "table"
    JSON = "json"
    GITHUB = "github"
    JUNIT = "junit"
    SARIF = "sarif"


CheckRenderer = Callable[[GateResult], str]

_RENDERERS: dict[CheckFormat, tuple[str, str]] = {
    CheckFormat.TABLE: ("convaudit.report.check_table", "render_check_table"),
    CheckFormat.JSON: ("convaudit.report.check_json", "render_check_json"),
    CheckFormat.GITHUB: ("convaudit.report.github", "render_github"),
    CheckFormat.JUNIT: ("convaudit.report.junit", "render_junit"),
    CheckFormat.SARIF: ("convaudit.report.sarif", "render_sarif"),
}


def renderer(fmt: CheckFormat) -> CheckRenderer:
    module, name = _RENDERERS[fmt]
    func: CheckRenderer = getattr(importlib.import_module(module), name)
    return func


def network_summary(model: ModelCheck) -> str:
    """One line: graph bound, naive product (labelled), empirical lower bound, gap."""
    return "; ".join(network_lines(model))


def network_lines(model: ModelCheck) -> list[str]:
    """Graph bound, naive product (labelled), empirical lower bound and gap, one per item."""
    parts = []
    bound = model.network
    if bound is None:
        parts.append(f"graph bound: not available ({model.network_error})")
    else:
        parts.append(f"graph bound: {bound.describe()}")
        parts.append(
            f"naive product {bound.naive_product:.6g} (naive; not a bound with skip connections)"
        )
    if model.empirical is not None:
        parts.append(f"empirical lower bound {model.empirical.value:.6g}")
    elif model.empirical_error:
        parts.append(f"empirical lower bound: not run ({model.empirical_error})")
    gap = model.gap
    if gap is not None:
        parts.append("gap (upper / lower) " + ("inf" if math.isinf(gap) else f"{gap:.3g}x"))
    return parts


__all__ = ["CheckFormat", "CheckRenderer", "network_lines", "network_summary", "renderer"]
