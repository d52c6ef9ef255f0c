"""``convaudit clip --format json``: every layer's outcome, stable keys, ``schema_version``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convaudit.clipping import ClipReport

CLIP_SCHEMA_VERSION = 1


def render_clip_json(report: ClipReport) -> str:
    doc = {
        "schema_version": CLIP_SCHEMA_VERSION,
        "source": report.source,
        "output": report.output,
        "written": report.written,
        "checked": report.checked,
        "ok": report.ok,
        "method": report.method,
        "layers": [
            {
                "name": r.name,
                "kind": r.kind,
                "bound": r.bound,
                "method": r.method,
                "iterations": r.iterations,
                "converged": r.converged,
                "unchanged": r.unchanged,
                "sigma_before": r.sigma_before,
                "sigma_after": r.sigma_after,
                "sigma_quantity": "upper-bound",
                "operator": r.operator,
                "rechecked": r.rechecked,
                "exact_after": r.exact_after,
                "relative_change": r.relative_change,
                "bn_folded": r.bn_folded,
                "within_bound": r.within_bound,
            }
            for r in report.layers
        ],
        "skipped": [{"name": s.name, "reason": s.reason} for s in report.skipped],
    }
    return json.dumps(doc, indent=2) + "\n"


__all__ = ["CLIP_SCHEMA_VERSION", "render_clip_json"]
