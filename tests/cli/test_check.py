"""The CI contract of ``convaudit check``, end to end through the CLI (stdout and stderr apart).

Models are written by torch.onnx.export: a residual block whose Lipschitz constant is 1.5
exactly, a plain chain, and a net with a gating product (no certified global bound).
"""

from __future__ import annotations

import json
import os
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import torch
import torch.nn as nn
from check_samples import GITHUB_LINE, SARIF_SUBSET_SCHEMA
from conftest import one_error_line
from typer.testing import CliRunner, Result

from convaudit.cli import app


class Residual(nn.Module):
    """y = x + conv(x), conv = 0.5 * identity (a Dirac kernel): Lipschitz constant 1.5."""

    def __init__(self, scale: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            for c in range(2):
                self.conv.weight[c, c, 1, 1] = scale

    def forward(self, x):
        return x + self.conv(x)


class Grown(Residual):
    """The residual block plus one more layer."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Conv2d(2, 2, 1, bias=False)

    def forward(self, x):
        return self.extra(super().forward(x))


class Gated(nn.Module):
    """x * sigmoid(conv(x)): a product of two computed tensors (no certified global bound)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


def export(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.randn(1, 2, 6, 6),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
        )
    return path


class WithHead(nn.Module):
    """A conv, then a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.head = nn.Linear(72, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.conv(x), 1))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "residual": export(Residual(), folder / "residual.onnx"),
        "hotter": export(Residual(0.8), folder / "hotter.onnx"),
        "grown": export(Grown(), folder / "grown.onnx"),
        "gated": export(Gated(), folder / "gated.onnx"),
        "head": export(WithHead(), folder / "head.onnx"),
    }


@pytest.fixture
def work(tmp_path, monkeypatch, models) -> Path:
    """A project folder (no config above it) holding the residual model as model.onnx."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("CONVAUDIT_"):
            monkeypatch.delenv(key)
    (tmp_path / "model.onnx").write_bytes(models["residual"].read_bytes())
    return tmp_path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["check", *args], env={"COLUMNS": "200", **(env or {})})


FAST = ("--no-empirical",)


def test_passes_with_exit_0_and_reports_the_certified_bound(work):
    result = run("model.onnx", "--max-sigma", "1", "--max-lipschitz", "2")
    assert result.exit_code == 0, result.stderr
    assert "graph bound: 1.5 (certified upper bound)" in result.stdout
    assert "naive product 0.5 (naive; not a bound with skip connections)" in result.stdout
    assert "empirical lower bound 1.5" in result.stdout  # the search finds the truth
    assert "PASSED" in result.stdout and result.stderr == ""


def test_fails_with_exit_1_on_a_layer_limit_and_on_the_network_limit(work):
    layer = run("model.onnx", "--max-sigma", "0.4", *FAST)
    assert layer.exit_code == 1
    assert "CA001" in layer.stdout and "FAILED" in layer.stdout
    network = run("model.onnx", "--max-lipschitz", "1.4", *FAST)
    assert network.exit_code == 1 and "CA010" in network.stdout
    assert run("model.onnx", "--max-sigma", "0.4", "--exit-zero", *FAST).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing.onnx", "--max-sigma", "1"), "missing.onnx"),
        (("model.onnx", "--ignore", "CA999"), "names no known code"),
        (("model.onnx", "--override", "conv*:max-sgma=2"), "bad --override"),
        (("model.onnx", "--baseline", "nope.json"), "baseline nope.json does not exist"),
        ((), "no model to check"),
    ],
)
def test_errors_exit_2_with_one_line_even_with_exit_zero(work, args, message):
    result = run(*args, "--exit-zero", *FAST)
    assert result.exit_code == 2
    assert message in one_error_line(result)


def test_unknown_config_key_exits_2(work):
    (work / "pyproject.toml").write_text(
        '[tool.convaudit]\nmodels = ["model.onnx"]\nmax_sigma = 1\n'
    )
    result = run(*FAST)
    assert result.exit_code == 2 and "unknown key 'max_sigma'" in one_error_line(result)


def test_bare_run_reads_pyproject_and_precedence_is_cli_env_file(work):
    sub = work / "sub"
    sub.mkdir()
    (work / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n[tool.convaudit]\nmodels = ["model.onnx"]\nmax-sigma = 0.4\nempirical = false\n'
    )
    os.chdir(sub)  # found from a subfolder, model path relative to the file
    assert run().exit_code == 1
    assert run(env={"CONVAUDIT_MAX_SIGMA": "0.6"}).exit_code == 0  # environment over file
    assert (
        run("--max-sigma", "0.4", env={"CONVAUDIT_MAX_SIGMA": "0.6"}).exit_code == 1
    )  # CLI over env
    assert run("--exit-zero").exit_code == 0


def test_json_format(work):
    result = run("model.onnx", "--max-sigma", "0.4", "--max-lipschitz", "10", "-f", "json", *FAST)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    (model,) = doc["models"]
    assert model["network"]["bound"] == pytest.approx(1.5, rel=1e-9)
    assert model["network"]["naive_product"] == pytest.approx(0.5, rel=1e-9)
    assert [f["code"] for f in doc["findings"]] == ["CA001"]
    assert "FAILED" in result.stderr  # the verdict for the log; the report stays machine-readable


def test_junit_format_parses(work):
    result = run("model.onnx", "--max-sigma", "0.4", "--max-lipschitz", "10", "-f", "junit", *FAST)
    root = ET.fromstring(result.stdout)
    cases = list(root.iter("testcase"))
    assert len(cases) == 2  # one layer x max-sigma, the network x max-lipschitz
    assert [c.find("failure") is not None for c in cases] == [True, False]
    clean = ET.fromstring(run("model.onnx", "-f", "junit", *FAST).stdout)
    assert [c.find("failure") for c in clean.iter("testcase")] == [None]


def test_sarif_format_validates(work):
    result = run("model.onnx", "--max-sigma", "0.4", "-f", "sarif", *FAST)
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SARIF_SUBSET_SCHEMA)
    (res,) = doc["runs"][0]["results"]
    assert res["ruleId"] == "CA001" and res["level"] == "error"
    assert res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "model.onnx"


def test_github_format_lines(work):
    result = run("model.onnx", "--max-sigma", "0.4", "-f", "github", *FAST)
    lines = result.stdout.splitlines()
    assert all(GITHUB_LINE.match(line) for line in lines), lines
    assert lines[0].startswith("::error file=model.onnx,title=CA001 sigma-max-above-limit::")


def test_output_file_is_written_and_not_overwritten_without_force(work):
    assert run("model.onnx", "-f", "json", "-o", "report.json", *FAST).exit_code == 0
    assert json.loads((work / "report.json").read_text())["passed"] is True
    again = run("model.onnx", "-f", "json", "-o", "report.json", *FAST)
    assert again.exit_code == 2 and "refusing to overwrite" in one_error_line(again)
    assert run("model.onnx", "-f", "json", "-o", "report.json", "--force", *FAST).exit_code == 0


def test_baseline_write_then_check(work, models):
    written = run("model.onnx", "--max-sigma", "0.4", "--write-baseline", "baseline.json", *FAST)
    assert written.exit_code == 0 and "1 baselined" in written.stdout
    document = json.loads((work / "baseline.json").read_text())
    assert list(document["models"]) == ["model.onnx"]
    assert (
        run("model.onnx", "--max-sigma", "0.4", "--baseline", "baseline.json", *FAST).exit_code == 0
    )

    (work / "model.onnx").write_bytes(models["hotter"].read_bytes())  # sigma 0.5 -> 0.8
    worse = run("model.onnx", "--baseline", "baseline.json", *FAST)
    assert worse.exit_code == 1 and "CA020" in worse.stdout and "regressed" in worse.stdout

    (work / "model.onnx").write_bytes(models["grown"].read_bytes())
    grown = run("model.onnx", "--baseline", "baseline.json", *FAST)
    assert grown.exit_code == 1 and "CA021" in grown.stdout


def test_ignores_are_applied_and_counted(work):
    result = run("model.onnx", "--max-sigma", "0.4", "--ignore", "CA001:*conv*", *FAST)
    assert result.exit_code == 0 and "1 ignored" in result.stdout
    other = run("model.onnx", "--max-sigma", "0.4", "--ignore", "CA001:head.*", *FAST)
    assert other.exit_code == 1


def test_override_per_layer(work):
    assert (
        run(
            "model.onnx", "--max-sigma", "0.4", "--override", "re:conv:max-sigma=0.6", *FAST
        ).exit_code
        == 0
    )


def test_uncertified_network_warns_and_fails_only_with_strict(work, models):
    (work / "gated.onnx").write_bytes(models["gated"].read_bytes())
    relaxed = run("gated.onnx", "--max-lipschitz", "10", *FAST)
    assert relaxed.exit_code == 0 and "CA011" in relaxed.stdout
    assert re.search(r"unbounded \(op Mul at node", relaxed.stdout)
    strict = run("gated.onnx", "--max-lipschitz", "10", "--strict", *FAST)
    assert strict.exit_code == 1


def test_no_output_replaces_the_input_model(work):
    original = (work / "model.onnx").read_bytes()
    for args in (("-o", "model.onnx", "--force"), ("--write-baseline", "./model.onnx")):
        result = run("model.onnx", *args, *FAST)
        assert result.exit_code == 2
        assert "refusing to overwrite the input" in one_error_line(result)
    assert (work / "model.onnx").read_bytes() == original


def test_a_model_with_nothing_to_check_is_an_error_but_a_dense_one_is_not(work):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph), work / "relu.onnx")
    result = run("relu.onnx", *FAST)
    assert result.exit_code == 2 and "no convolution layers found" in one_error_line(result)
    torch.save(torch.nn.Linear(4, 3).state_dict(), work / "dense.pt")
    assert run("dense.pt", "--max-lipschitz", "100", *FAST).exit_code == 0  # an MLP's bound


def test_html_format_is_a_self_contained_artifact(work):
    result = run("model.onnx", "--max-sigma", "0.4", "--format", "html", "-o", "gate.html", *FAST)
    assert result.exit_code == 1 and result.stdout == ""
    assert "convaudit check FAILED" in result.stderr
    page = (work / "gate.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<script") == 1
    assert "FAILED" in page and "CA001" in page and "max-sigma" in page
    assert "http://" not in page and "https://" not in page


def test_a_dense_layer_is_described_without_padding_or_input_size(work, models):
    (work / "head.onnx").write_bytes(models["head"].read_bytes())
    result = run("head.onnx", "--max-sigma", "0.001", "--format", "json", *FAST)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    (dense,) = [layer for layer in doc["models"][0]["layers"] if layer["kind"] == "dense"]
    assert dense["sigma_max_is"] == "exact, dense"
    (finding,) = [f for f in doc["findings"] if f["layer"] == dense["name"]]
    assert "sigma_max (exact, dense)" in finding["message"]
    assert "padding" not in finding["message"] and "input size" not in finding["message"]


DEMO = str(Path(__file__).resolve().parents[2] / "sample_models" / "resnet_tiny.onnx")


def _layers(result: Result) -> dict[str, dict]:
    doc = json.loads(result.stdout)
    return {layer["name"]: layer for layer in doc["models"][0]["layers"]}


def test_check_refines_only_what_decides_the_gate():
    """A limit far above every bracket: all pass on their cheap brackets, none refined. A limit
    inside the stem's bracket [1.9447, 1.9504]: only the stem is refined (to 1e-4), and its
    converged value 1.94469 passes where its upper bound alone would have failed."""
    far = run(DEMO, "--max-sigma", "10", "--no-empirical", "--format", "json")
    assert far.exit_code == 0, far.stderr
    for layer in _layers(far).values():
        assert layer["sigma_max_upper"] <= 10 and layer["sigma_max_lower"] <= layer["sigma_max"]
        assert layer["sigma_max_is"].startswith(("upper-bound", "exact", "certified"))
    assert _layers(far)["/stem/Conv"]["sigma_max_is"].startswith("upper-bound")
    tight = run(DEMO, "--max-sigma", "1.947", "--no-empirical", "--format", "json")
    layers = _layers(tight)
    stem = layers["/stem/Conv"]
    assert stem["sigma_max_is"].startswith("exact to 1e-4") and stem["sigma_max"] < 1.947
    assert tight.exit_code == 0, tight.stdout  # every other layer is below 1.947 for sure
    assert layers["/block1_conv1/Conv"]["sigma_max_is"].startswith("upper-bound")
    over = run(DEMO, "--max-sigma", "1.9", "--no-empirical", "--format", "json")
    assert over.exit_code == 1  # the stem's certified LOWER bound is above: fails unrefined
    assert _layers(over)["/stem/Conv"]["sigma_max_is"].startswith("upper-bound")
