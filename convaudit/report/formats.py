"""The output formats of ``spectrum`` and ``check``, and the reporter behind each.

``renderer(fmt)`` / ``check_renderer(fmt)`` map every format to its function (imported lazily:
rich only for tables, the html package only for html); a test proves each mapping exhaustive. Reporters never print; the CLI
writes their text to stdout or ``-o``. Only this module imports the reporters, and none of them
imports it, so the registry forms no cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convaudit.analysis import ModelReport
    from convaudit.gate.findings import GateResult
    from convaudit.report.interface import RenderOptions


class Format(str, Enum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    HTML = "html"

    @property
    def machine(self) -> bool:
        """Machine formats get no progress bar and no ANSI codes."""
        return self is not Format.TABLE


class CheckFormat(str, Enum):
    TABLE = "table"
    JSON = "json"
    GITHUB = "github"
    JUNIT = "junit"
    SARIF = "sarif"
    HTML = "html"


Renderer = Callable[["Sequence[ModelReport]", "RenderOptions"], str]
CheckRenderer = Callable[["GateResult"], str]

_RENDERERS: dict[Format, tuple[str, str]] = {
    Format.TABLE: ("convaudit.report.table", "render_spectrum_table"),
    Format.JSON: ("convaudit.report.json", "render_spectrum_json"),
    Format.CSV: ("convaudit.report.csv", "render_spectrum_csv"),
    Format.HTML: ("convaudit.report.html.spectrum", "render_spectrum_html"),
}

_CHECK_RENDERERS: dict[CheckFormat, tuple[str, str]] = {
    CheckFormat.TABLE: ("convaudit.report.check_table", "render_check_table"),
    CheckFormat.JSON: ("convaudit.report.check_json", "render_check_json"),
    CheckFormat.GITHUB: ("convaudit.report.github", "render_github"),
    CheckFormat.JUNIT: ("convaudit.report.junit", "render_junit"),
    CheckFormat.SARIF: ("convaudit.report.sarif", "render_sarif"),
    CheckFormat.HTML: ("convaudit.report.html.check", "render_check_html"),
}


def renderer(fmt: Format) -> Renderer:
    """The spectrum reporter for ``fmt``."""
    module, name = _RENDERERS[fmt]
    func: Renderer = getattr(importlib.import_module(module), name)
    return func


def check_renderer(fmt: CheckFormat) -> CheckRenderer:
    """The check reporter for ``fmt``."""
    module, name = _CHECK_RENDERERS[fmt]
    func: CheckRenderer = getattr(importlib.import_module(module), name)
    return func


__all__ = ["CheckFormat", "CheckRenderer", "Format", "Renderer", "check_renderer", "renderer"]
