"""``convaudit check --format json``: the whole gate result, stable keys, ``schema_version``.

Floats are rounded to 12 significant digits; non-finite values are null (an unbounded network
bound is ``"bounded": false`` with ``blocked_by``).
"""

from __future__ import annotations

import json
from typing import Any

from convaudit import __version__
from convaudit.gate.findings import CODES, Finding, GateResult, ModelCheck
from convaudit.network.graph import NAIVE_LABEL
from convaudit.report.interface import round_float

CHECK_SCHEMA_VERSION = "1.0"


def _finding(f: Finding) -> dict[str, Any]:
    return {
        "code": f.code,
        "name": CODES[f.code][0],
        "status": f.status,
        "model": f.model,
        "layer": f.layer,
        "message": f.message,
        "value": round_float(f.value),
        "limit": round_float(f.limit),
    }


def network_json(model: ModelCheck) -> dict[str, Any]:
    bound = model.network
    out: dict[str, Any] = {"error": model.network_error}
    if bound is not None:
        out.update(
            bound=round_float(bound.value),
            bounded=bound.bounded,
            quantity="upper-bound",
            assumed_chain=bound.assumed,
            blocked_by=[{"node": b.node, "op": b.op, "reason": b.reason} for b in bound.blocked_by],
            naive_product=round_float(bound.naive_product),
            naive_product_label=NAIVE_LABEL,
            notes=list(bound.notes),
        )
    emp = model.empirical
    out["empirical"] = (
        None
        if emp is None
        else {
            "lower_bound": round_float(emp.value),
            "quantity": "lower-bound",
            "method": emp.method,
            "evaluations": emp.evaluations,
        }
    )
    out["empirical_error"] = model.empirical_error
    out["gap"] = round_float(model.gap)
    return out


def _model(model: ModelCheck) -> dict[str, Any]:
    return {
        "path": model.path,
        "key": model.key,
        "format": model.format,
        "network": network_json(model),
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "sigma_max": round_float(layer.sigma_max),
                "sigma_max_is": layer.sigma_max_label,
                "sigma_max_lower": round_float(layer.sigma_max_lower),
                "sigma_max_upper": round_float(layer.sigma_max_upper),
                "sigma_min": round_float(layer.sigma_min),
                "condition": round_float(layer.condition),
                "spectrum_of": layer.spectrum_label or None,
                "bn_folded": layer.bn_folded,
            }
            for layer in model.layers
        ],
        "skipped": [{"name": s.name, "op": s.op, "reason": s.reason} for s in model.skipped],
        "notes": list(model.notes),
    }


def render_check_json(result: GateResult) -> str:
    settings = result.settings
    document = {
        "schema_version": CHECK_SCHEMA_VERSION,
        "tool": {"name": "convaudit", "version": __version__},
        "passed": result.passed,
        "exit_code": result.exit_code,
        "counts": {
            "checks": len(result.checks),
            **{status: result.count(status) for status in ("fail", "warn", "ignored", "baselined")},
        },
        "limits": {
            "max_sigma": settings.max_sigma,
            "min_sigma": settings.min_sigma,
            "max_condition": settings.max_condition,
            "max_lipschitz": settings.max_lipschitz,
            "overrides": [
                {"layers": o.pattern, **{k.replace("-", "_"): v for k, v in o.limits.items()}}
                for o in settings.overrides
            ],
            "strict": settings.strict,
            "baseline": settings.baseline,
            "baseline_tolerance": settings.baseline_tolerance,
        },
        "models": [_model(m) for m in result.models],
        "findings": [_finding(f) for f in result.findings],
        "notes": list(result.notes),
    }
    return json.dumps(document, indent=2) + "\n"


__all__ = ["CHECK_SCHEMA_VERSION", "network_json", "render_check_json"]
