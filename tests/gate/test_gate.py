"""The gate on hand-made measurements: limits, strictness, ignores, baseline, exit codes."""

from __future__ import annotations

import json
import math

import pytest

from convaudit.errors import ConfigError
from convaudit.gate.baseline import model_key, read_baseline, write_baseline
from convaudit.gate.config import Override, Settings
from convaudit.gate.findings import (
    NETWORK,
    IgnoreRule,
    LayerMetrics,
    ModelCheck,
    baseline_entries,
    evaluate,
)
from convaudit.ir import SkippedLayer
from convaudit.network.graph import Blocker, NetworkBound


def layer(
    name: str,
    sigma_max: float | None,
    sigma_min: float | None = None,
    condition: float | None = None,
):
    return LayerMetrics(
        name,
        "conv",
        sigma_max,
        "exact, zeros padding, 8x8",
        sigma_min,
        condition,
        "circular operator, 8x8",
    )


def network(value: float, blocked: tuple[Blocker, ...] = ()) -> NetworkBound:
    return NetworkBound(
        value=value, naive_product=value, per_output={"y": value}, blocked_by=blocked
    )


def model(
    *layers: LayerMetrics, skipped=(), net: NetworkBound | None = None, key: str = "m.onnx"
) -> ModelCheck:
    return ModelCheck(
        path="m.onnx", key=key, format="onnx", layers=layers, skipped=skipped, network=net
    )


def codes(result, status="fail"):
    return sorted(f.code for f in result.findings if f.status == status)


def test_limits_pass_and_fail_with_exit_codes():
    m = model(layer("a", 1.2), layer("b", 1.6))
    passing = evaluate([m], Settings(max_sigma=2.0))
    assert passing.passed and passing.exit_code == 0 and len(passing.checks) == 2
    failing = evaluate([m], Settings(max_sigma=1.5))
    assert not failing.passed and failing.exit_code == 1
    (finding,) = failing.findings
    assert (finding.code, finding.layer, finding.value, finding.limit) == ("CA001", "b", 1.6, 1.5)
    assert "exact, zeros padding" in finding.message  # says what the number is
    assert evaluate([m], Settings(max_sigma=1.5, exit_zero=True)).exit_code == 0


def test_non_finite_values_never_pass():
    result = evaluate(
        [model(layer("nan", math.nan), layer("inf", math.inf))], Settings(max_sigma=10.0)
    )
    assert codes(result) == ["CA001", "CA001"]


def test_min_sigma_condition_and_missing_metric():
    m = model(layer("a", 2.0, sigma_min=0.001, condition=2000.0), layer("b", 2.0))
    result = evaluate([m], Settings(min_sigma=0.01, max_condition=1000.0))
    assert codes(result) == ["CA002", "CA003"]
    assert codes(result, "warn") == ["CA101", "CA101"]  # b has no spectrum: not checked
    strict = evaluate([m], Settings(min_sigma=0.01, max_condition=1000.0, strict=True))
    assert codes(strict) == ["CA002", "CA003", "CA101", "CA101"]


def test_overrides_change_the_limit_per_layer():
    m = model(layer("stem.conv", 3.0), layer("body.conv", 3.0))
    settings = Settings(max_sigma=1.5, overrides=(Override("stem.*", {"max-sigma": 4.0}),))
    result = evaluate([m], settings)
    assert [f.layer for f in result.findings] == ["body.conv"]


def test_unanalysable_layers_warn_unless_strict():
    m = model(layer("a", 1.0), skipped=(SkippedLayer("q", "ConvInteger inside a Loop", "Conv"),))
    relaxed = evaluate([m], Settings(max_sigma=2.0))
    assert relaxed.passed and codes(relaxed, "warn") == ["CA100"]
    strict = evaluate([m], Settings(max_sigma=2.0, strict=True))
    assert not strict.passed and codes(strict) == ["CA100"]


def test_network_limit_and_uncertified_network():
    ok = evaluate([model(layer("a", 1.0), net=network(5.0))], Settings(max_lipschitz=10.0))
    assert ok.passed and ok.checks[-1].layer == NETWORK and ok.checks[-1].value == 5.0
    over = evaluate([model(net=network(50.0))], Settings(max_lipschitz=10.0))
    assert codes(over) == ["CA010"]
    blocked = network(math.inf, (Blocker("n7", "Erfinv", "no Lipschitz rule for this op"),))
    relaxed = evaluate([model(net=blocked)], Settings(max_lipschitz=10.0))
    assert relaxed.passed and codes(relaxed, "warn") == ["CA011"]
    assert "op Erfinv at node n7" in relaxed.findings[0].message
    assert codes(evaluate([model(net=blocked)], Settings(max_lipschitz=10.0, strict=True))) == [
        "CA011"
    ]


@pytest.mark.parametrize(
    ("rule", "ignored"),
    [("CA001", 2), ("CA001:stem.*", 1), ("ca001:re:^body", 1), ("CA00*", 2), ("CA003", 0)],
)
def test_ignores_by_code_and_layer_glob_are_counted(rule, ignored):
    m = model(layer("stem.conv", 3.0), layer("body.conv", 3.0))
    result = evaluate([m], Settings(max_sigma=1.5, ignore=(rule,)))
    assert result.count("ignored") == ignored
    assert result.count("fail") == 2 - ignored
    assert result.passed == (ignored == 2)


def test_bad_ignore_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="names no known code"):
        IgnoreRule.parse("CA999")
    with pytest.raises(ConfigError, match="bad regular expression"):
        IgnoreRule.parse("CA001:re:[")


def _write(tmp_path, checks):
    path = tmp_path / "baseline.json"
    write_baseline(path, baseline_entries(checks), version="test")
    return read_baseline(path)


def test_baseline_accepts_known_violations_and_fails_on_regressions_and_new_layers(tmp_path):
    before = model(layer("a", 1.8), layer("b", 1.48), net=network(40.0))
    baseline = _write(tmp_path, [before])
    settings = Settings(max_sigma=1.5, max_lipschitz=30.0, baseline_tolerance=0.05)
    same = evaluate([before], settings, baseline)
    assert same.passed and same.count("baselined") == 2  # a's CA001 and the network's CA010

    # reordered layers, values within tolerance: still passes (keys are names, not positions)
    drift = model(layer("b", 1.49), layer("a", 1.85), net=network(41.0))
    assert evaluate([drift], settings, baseline).passed

    worse = model(layer("a", 2.0), layer("b", 1.48), net=network(40.0))
    result = evaluate([worse], settings, baseline)
    assert (
        codes(result) == ["CA020"] and "regressed from baseline 1.8" in result.findings[-1].message
    )

    # b newly over the limit, though within the tolerance: a new violation
    crossing = model(layer("a", 1.8), layer("b", 1.52), net=network(40.0))
    assert codes(evaluate([crossing], settings, baseline)) == ["CA001"]

    grown = model(layer("a", 1.8), layer("b", 1.48), layer("c", 0.5), net=network(40.0))
    assert codes(evaluate([grown], settings, baseline)) == ["CA021"]

    other = model(layer("a", 1.0), key="other.onnx")
    assert codes(evaluate([other], settings, baseline)) == ["CA021"]


def test_baseline_regression_of_sigma_min_goes_down(tmp_path):
    baseline = _write(tmp_path, [model(layer("a", 1.0, sigma_min=0.5, condition=2.0))])
    result = evaluate([model(layer("a", 1.0, sigma_min=0.4, condition=2.0))], Settings(), baseline)
    assert codes(result) == ["CA020"] and "sigma-min" in result.findings[0].message


def test_baseline_file_is_stable_and_keyed_by_relative_path(tmp_path):
    (tmp_path / "ci").mkdir()
    (tmp_path / "models").mkdir()
    key = model_key(tmp_path / "models" / "net.onnx", tmp_path / "ci" / "baseline.json")
    assert key == "../models/net.onnx"
    checks = [model(layer("b", 1.0 / 3.0), layer("a", 2.0), key=key)]
    path = tmp_path / "ci" / "baseline.json"
    write_baseline(path, baseline_entries(checks), version="test")
    first = path.read_text()
    write_baseline(path, baseline_entries(checks), version="test")
    assert path.read_text() == first
    document = json.loads(first)
    assert document["schema_version"] == 1
    assert list(document["models"][key]) == ["a", "b"]
    assert document["models"][key]["b"]["CA001"] == 0.333333333333


@pytest.mark.parametrize(
    "text", ["not json", '{"schema_version": 99}', '{"schema_version": 1, "models": {"m": 3}}']
)
def test_malformed_baseline_is_a_config_error(tmp_path, text):
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(ConfigError):
        read_baseline(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_baseline(tmp_path / "missing.json")
