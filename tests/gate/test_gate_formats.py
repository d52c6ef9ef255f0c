"""Every output format of ``convaudit check``, validated by an independent parser or schema."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from check_samples import GITHUB_LINE, SARIF_SUBSET_SCHEMA, sample_result

from convaudit.gate.config import Settings
from convaudit.gate.findings import ModelCheck, evaluate
from convaudit.report.formats import CheckFormat
from convaudit.report.formats import check_renderer as renderer
from convaudit.report.github import escape_data, escape_property


def test_every_format_has_a_renderer():
    result = sample_result()
    for fmt in CheckFormat:
        text = renderer(fmt)(result)
        assert isinstance(text, str) and text.endswith("\n"), fmt
        assert "\x1b[" not in text  # no ANSI codes in any format by default


def test_json_report():
    result = sample_result()
    doc = json.loads(renderer(CheckFormat.JSON)(result))
    assert doc["schema_version"] == "1.0" and doc["passed"] is False and doc["exit_code"] == 1
    assert doc["counts"] == {
        "checks": len(result.checks),
        "fail": 2,
        "warn": 2,
        "ignored": 1,
        "baselined": 0,
    }
    a, b = doc["models"]
    assert a["network"]["bound"] == 10.0 and a["network"]["quantity"] == "upper-bound"
    assert a["network"]["empirical"]["lower_bound"] == 2.5 and a["network"]["gap"] == 4.0
    assert "naive" in a["network"]["naive_product_label"]
    assert b["network"]["bounded"] is False and b["network"]["bound"] is None
    assert b["network"]["blocked_by"] == [{"node": "n1", "op": "Erfinv", "reason": "no rule"}]
    assert {f["code"] for f in doc["findings"]} == {"CA001", "CA010", "CA011", "CA100"}


def test_junit_parses_with_one_testcase_per_layer_and_limit():
    root = ET.fromstring(renderer(CheckFormat.JUNIT)(sample_result()))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["models/a.onnx", "models/b.onnx"]
    names = [c.get("name") for c in suites[0].findall("testcase")]
    assert names == [
        "stem, the: 100% conv\nx [max-sigma 1.5]",
        "body.conv [max-sigma 1.5]",
        "head.fc [max-sigma 1.5]",
        "q.conv [analysable]",
        "(network) [max-lipschitz 8]",
    ]
    failures = [
        c.get("name")
        for s in suites
        for c in s.findall("testcase")
        if c.find("failure") is not None
    ]
    assert failures == ["stem, the: 100% conv\nx [max-sigma 1.5]", "(network) [max-lipschitz 8]"]
    assert int(root.get("failures")) == 2 and int(root.get("tests")) == 7
    for suite in suites:
        assert int(suite.get("tests")) == len(suite.findall("testcase"))


def test_junit_has_a_passing_case_when_clean():
    result = evaluate([ModelCheck("m.onnx", "m.onnx", "onnx", ())], Settings())
    root = ET.fromstring(renderer(CheckFormat.JUNIT)(result))
    (case,) = root.iter("testcase")
    assert case.find("failure") is None and root.get("failures") == "0" and root.get("tests") == "1"


def test_sarif_validates_against_the_sarif_2_1_0_subset_schema():
    doc = json.loads(renderer(CheckFormat.SARIF)(sample_result()))
    jsonschema.validate(doc, SARIF_SUBSET_SCHEMA, format_checker=jsonschema.FormatChecker())
    (run,) = doc["runs"]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    for res in run["results"]:
        assert rules[res["ruleIndex"]] == res["ruleId"]
    ignored = [r for r in run["results"] if "suppressions" in r]
    assert [r["ruleId"] for r in ignored] == ["CA001"]
    assert (
        run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        == "models/a.onnx"
    )


def test_sarif_schema_rejects_what_sarif_forbids():
    doc = json.loads(renderer(CheckFormat.SARIF)(sample_result()))
    doc["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SARIF_SUBSET_SCHEMA)


def test_github_lines_are_well_formed_and_escaped():
    text = renderer(CheckFormat.GITHUB)(sample_result())
    lines = text.splitlines()
    assert lines and all(GITHUB_LINE.match(line) for line in lines), lines
    errors = [line for line in lines if line.startswith("::error")]
    assert len(errors) == 2
    assert "stem, the: 100%25 conv%0Ax" in errors[0]  # message escaping
    assert "file=models/a.onnx,title=CA001 sigma-max-above-limit::" in errors[0]
    assert escape_property("a,b:c%") == "a%2Cb%3Ac%25" and escape_data("1\r\n") == "1%0D%0A"
    assert sum(line.startswith("::warning") for line in lines) == 2


def test_table_shows_bounds_findings_and_verdict():
    text = renderer(CheckFormat.TABLE)(sample_result())
    assert "graph bound: 10 (certified upper bound)" in text
    assert "naive product 5.4 (naive; not a bound with skip connections)" in text
    assert "empirical lower bound 2.5" in text and "gap (upper / lower) 4x" in text
    assert "unbounded (op Erfinv at node n1: no rule)" in text
    assert "FAILED" in text and "1 ignored" in text
    assert "PASSED" in renderer(CheckFormat.TABLE)(sample_result(passing=True))
