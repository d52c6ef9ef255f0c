"""``convaudit check --format junit``: JUnit XML, one testcase per (layer, limit).

A ``testsuite`` per model; testcase ``classname`` = the model path, ``name`` = ``layer
[check limit]``. Failing findings are ``<failure>``, warnings (not analysable without --strict)
``<skipped>``, ignored / baselined ones pass with a ``<system-out>`` note. When nothing was
checked, one passing testcase says so, so CI systems see a result.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from convaudit.gate.findings import Check, GateResult


def _name(check: Check) -> str:
    limit = "" if check.limit is None else f" {check.limit:g}"
    return f"{check.layer} [{check.name}{limit}]"


def _case(suite: ET.Element, check: Check) -> None:
    case = ET.SubElement(suite, "testcase", classname=check.model, name=_name(check), time="0")
    notes = []
    for f in check.findings:
        if f.status == "fail":
            ET.SubElement(case, "failure", message=f.message, type=f.code).text = f.message
        elif f.status == "warn":
            ET.SubElement(case, "skipped", message=f"{f.code}: {f.message}")
        else:
            notes.append(f"{f.status}: {f.code} {f.message}")
    if notes:
        ET.SubElement(case, "system-out").text = "\n".join(notes)


def render_junit(result: GateResult) -> str:
    root = ET.Element("testsuites", name="convaudit check")
    by_model: dict[str, list[Check]] = defaultdict(list)
    for check in result.checks:
        by_model[check.model].append(check)
    for model in result.models:
        by_model.setdefault(model.path, [])
    for model_path, checks in by_model.items():
        suite = ET.SubElement(root, "testsuite", name=model_path)
        if not checks:
            checks = [Check(model_path, "(model)", "no limits set")]
        for check in checks:
            _case(suite, check)
        suite.set("tests", str(len(checks)))
        suite.set("failures", str(sum(1 for c in checks if c.failed)))
        suite.set(
            "skipped",
            str(
                sum(
                    1
                    for c in checks
                    if not c.failed and any(f.status == "warn" for f in c.findings)
                )
            ),
        )
        suite.set("errors", "0")
    if not len(root):
        suite = ET.SubElement(
            root, "testsuite", name="convaudit", tests="1", failures="0", errors="0", skipped="0"
        )
        _case(suite, Check("convaudit", "(none)", "no models"))
    root.set("tests", str(sum(int(s.get("tests", 0)) for s in root)))
    root.set("failures", str(sum(int(s.get("failures", 0)) for s in root)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


__all__ = ["render_junit"]
