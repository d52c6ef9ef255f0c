"""Shared samples for the ``check`` format tests: a GateResult and the SARIF/GitHub checkers."""

from __future__ import annotations

import math
import re

from convaudit.gate.config import Settings
from convaudit.gate.findings import LayerMetrics, ModelCheck, evaluate
from convaudit.ir import SkippedLayer
from convaudit.network.empirical import EmpiricalBound, SearchOptions
from convaudit.network.graph import Blocker, NetworkBound

# No installed package ships the official SARIF 2.1.0 JSON schema (checked: the venv and the
# system site-packages hold none; there is no network), so this is a compact subset transcribed
# from the OASIS SARIF 2.1.0 specification: the required properties and the enumerations of
# every object convaudit writes (sarifLog, run, tool, toolComponent, reportingDescriptor,
# result, location, physicalLocation, artifactLocation, logicalLocation, suppression, invocation).
_MESSAGE = {
    "type": "object",
    "anyOf": [{"required": ["text"]}, {"required": ["id"]}],
    "properties": {"text": {"type": "string"}},
}
SARIF_SUBSET_SCHEMA = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string", "format": "uri"},
        "runs": {"type": "array", "items": {
            "type": "object",
            "required": ["tool"],
            "properties": {
                "tool": {"type": "object", "required": ["driver"], "properties": {"driver": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "rules": {"type": "array", "items": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {
                                "id": {"type": "string"},
                                "name": {"type": "string"},
                                "shortDescription": {"type": "object", "required": ["text"]},
                                "defaultConfiguration": {"type": "object", "properties": {
                                    "level": {"enum": ["none", "note", "warning", "error"]}}},
                            },
                        }},
                    },
                }}},
                "invocations": {"type": "array", "items": {
                    "type": "object", "required": ["executionSuccessful"],
                    "properties": {"executionSuccessful": {"type": "boolean"}, "exitCode": {"type": "integer"}},
                }},
                "results": {"type": "array", "items": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {
                        "ruleId": {"type": "string"},
                        "ruleIndex": {"type": "integer", "minimum": -1},
                        "level": {"enum": ["none", "note", "warning", "error"]},
                        "message": _MESSAGE,
                        "baselineState": {"enum": ["new", "unchanged", "updated", "absent"]},
                        "partialFingerprints": {"type": "object", "additionalProperties": {"type": "string"}},
                        "suppressions": {"type": "array", "items": {
                            "type": "object", "required": ["kind"],
                            "properties": {"kind": {"enum": ["inSource", "external"]},
                                           "justification": {"type": "string"}},
                        }},
                        "locations": {"type": "array", "items": {"type": "object", "properties": {
                            "physicalLocation": {"type": "object", "properties": {"artifactLocation": {
                                "type": "object", "properties": {"uri": {"type": "string", "format": "uri-reference"}}}}},
                            "logicalLocations": {"type": "array", "items": {
                                "type": "object", "properties": {"name": {"type": "string"}, "kind": {"type": "string"}}}},
                        }}},
                    },
                }},
            },
        }},
    },
}  # fmt: skip

GITHUB_LINE = re.compile(
    r"^::(error|warning|notice)( [a-z]+=[^,:\n\r]*(,[a-z]+=[^,:\n\r]*)*)?::[^\n\r]*$"
)


def sample_result(*, passing: bool = False):
    layers = (
        LayerMetrics("stem, the: 100% conv\nx", "conv", 1.8, "exact, zeros padding, 8x8"),
        LayerMetrics("body.conv", "conv", 1.2, "exact, zeros padding, 8x8"),
        LayerMetrics("head.fc", "dense", 2.5, "exact, dense"),
    )
    net = NetworkBound(10.0, 5.4, {"y": 10.0})
    emp = EmpiricalBound(2.5, "zeroth-order block search", 110, SearchOptions())
    skipped = (SkippedLayer("q.conv", "ConvInteger inside a Loop body", "Conv"),)
    blocked = NetworkBound(math.inf, 3.0, {"y": math.inf}, (Blocker("n1", "Erfinv", "no rule"),))
    models = [
        ModelCheck("models/a.onnx", "models/a.onnx", "onnx", layers, skipped, net, None, emp),
        ModelCheck("models/b.onnx", "models/b.onnx", "onnx", layers[1:2], (), blocked),
    ]
    if passing:
        return evaluate(models, Settings(max_sigma=3.0))
    settings = Settings(max_sigma=1.5, max_lipschitz=8.0, ignore=("CA001:head.*",))
    return evaluate(models, settings)
