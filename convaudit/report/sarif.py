"""``convaudit check --format sarif``: SARIF 2.1.0 for GitHub code scanning and other viewers.

One run; the rules are the finding codes; each finding is a result located on the model file
(``physicalLocation``) and the layer (``logicalLocations``). Ignored findings carry a
``suppressions`` entry, baselined ones ``baselineState: unchanged`` plus a suppression, so
viewers show them as accepted. ``partialFingerprints`` is model|layer|code: stable across runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from convaudit import __version__
from convaudit.gate.findings import CODES, STRICT_ONLY, Finding, GateResult
from convaudit.report.check_common import network_summary
from convaudit.report.check_json import network_json

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"fail": "error", "warn": "warning"}


def artifact_uri(path: str) -> str:
    """A relative POSIX URI where possible (what code scanning expects), else a file URI."""
    p = Path(path)
    try:
        rel = os.path.relpath(p.resolve(), Path.cwd())
    except ValueError:  # another drive on Windows
        return p.resolve().as_uri()
    return Path(rel).as_posix() if not rel.startswith("..") else p.resolve().as_uri()


def _rule(code: str) -> dict[str, Any]:
    name, text = CODES[code]
    return {
        "id": code,
        "name": "".join(part.capitalize() for part in name.split("-")),
        "shortDescription": {"text": text},
        "defaultConfiguration": {"level": "warning" if code in STRICT_ONLY else "error"},
    }


def _result(f: Finding, index: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ruleId": f.code,
        "ruleIndex": index[f.code],
        "level": _LEVEL.get(f.status, "warning" if f.code in STRICT_ONLY else "error"),
        "message": {"text": f.message},
        "locations": [
            {
                "physicalLocation": {"artifactLocation": {"uri": artifact_uri(f.model)}},
                "logicalLocations": [{"name": f.layer, "kind": "member"}],
            }
        ],
        "partialFingerprints": {"convauditFinding/v1": f"{f.model}|{f.layer}|{f.code}"},
    }
    if f.value is not None or f.limit is not None:
        out["properties"] = {"value": f.value, "limit": f.limit}
    if f.status == "ignored":
        out["suppressions"] = [
            {"kind": "external", "justification": "ignored by the convaudit ignore setting"}
        ]
    elif f.status == "baselined":
        out["baselineState"] = "unchanged"
        out["suppressions"] = [
            {"kind": "external", "justification": "accepted in the convaudit baseline"}
        ]
    return out


def render_sarif(result: GateResult) -> str:
    codes = sorted(CODES)
    index = {code: i for i, code in enumerate(codes)}
    run = {
        "tool": {
            "driver": {
                "name": "convaudit",
                "version": __version__,
                "rules": [_rule(code) for code in codes],
            }
        },
        "invocations": [{"executionSuccessful": True, "exitCode": result.exit_code}],
        "results": [_result(f, index) for f in result.findings],
        "properties": {
            "models": [
                {"path": m.path, "summary": network_summary(m), "network": network_json(m)}
                for m in result.models
            ]
        },
    }
    document = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(document, indent=2) + "\n"


__all__ = ["SARIF_SCHEMA", "render_sarif"]
