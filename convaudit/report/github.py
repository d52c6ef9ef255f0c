"""``convaudit check --format github``: GitHub Actions workflow commands.

One ``::error`` line per failing finding and ``::warning`` per warning (file = the model, so
the annotation lands on it in the pull request), then one ``::notice`` per model with its
network bounds. Ignored and baselined findings are not annotated. Escaping follows the runner's
rules: in messages ``%``, CR and LF are percent-encoded; in properties also ``:`` and ``,``.
"""

from __future__ import annotations

from convaudit.gate.findings import GateResult
from convaudit.report.check_common import network_summary

_LEVEL = {"fail": "error", "warn": "warning"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(level: str, message: str, **properties: str) -> str:
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    return f"::{level}{' ' + props if props else ''}::{escape_data(message)}"


def render_github(result: GateResult) -> str:
    lines = []
    for f in result.findings:
        if f.status in _LEVEL:
            lines.append(command(_LEVEL[f.status], f.message, file=f.model, title=f.title))
    for model in result.models:
        lines.append(
            command(
                "notice", network_summary(model), file=model.path, title="convaudit network bound"
            )
        )
    verdict = "passed" if result.passed else "failed"
    lines.append(
        command(
            "notice",
            f"convaudit check {verdict}: {result.count('fail')} failing, {result.count('warn')} warnings, "
            f"{result.count('ignored')} ignored, {result.count('baselined')} baselined, {len(result.checks)} checks",
            title="convaudit check",
        )
    )
    return "\n".join(lines) + "\n"


__all__ = ["command", "escape_data", "escape_property", "render_github"]
