"""`convaudit spectrum` end to end on the bundled sample models (real files, real pipeline).

The slow analyses run once per module (fixtures) and serve several tests each.
"""

from __future__ import annotations

import csv
import io
import json
import math

import jsonschema
import numpy as np
import pytest
from cli_helpers import REPO, one_error_line, run_cli

from convaudit.report.json import spectrum_schema

DEMO = "sample_models/resnet_tiny.onnx"
SIGNAL = "sample_models/signal_1d.onnx"
KERAS = "sample_models/keras_cnn.h5"
CIRCULAR = "sample_models/circular_net.ts.pt"


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, spectrum_schema())
    return doc


def _layers(doc: dict, model: int = 0) -> list[dict]:
    return doc["models"][model]["layers"]


@pytest.fixture(scope="module")
def demo_exact():
    """The demo model, exact sigma_max (the default), JSON."""
    return run_cli("spectrum", DEMO, "--format", "json")


@pytest.fixture(scope="module")
def demo_bound():
    """The demo model with the cheap certified bound and every singular value."""
    return run_cli("spectrum", DEMO, "--format", "json", "--sigma", "bound", "--full")


@pytest.fixture(scope="module")
def demo_table(tmp_path_factory):
    """One run: the table on stdout, the figure and the spectra as files."""
    out = tmp_path_factory.mktemp("demo")
    result = run_cli(
        "spectrum",
        DEMO,
        "--sigma",
        "bound",
        "--plot",
        str(out / "spectra.png"),
        "--save-spectra",
        str(out / "spectra.npz"),
    )
    return result, out


@pytest.fixture(scope="module")
def signal_full():
    return run_cli("spectrum", SIGNAL, "--format", "json", "--full")


def _close_floats(expected, actual, rel=1e-6, where="$"):
    """Structural equality with a tolerance on floats (LAPACK's last bits vary across machines)."""
    if isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, (int, float)) and isinstance(expected, (int, float)), where
        assert actual == pytest.approx(expected, rel=rel, abs=1e-12), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), where
        for key in expected:
            _close_floats(expected[key], actual[key], rel, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _close_floats(e, a, rel, f"{where}[{i}]")
    elif where.endswith(".method"):
        assert actual.split("(")[0] == expected.split("(")[0], where  # iteration counts may vary
    elif where.endswith(".iterations"):
        assert isinstance(actual, int) and actual >= 0, where  # they depend on rounding
    else:
        assert actual == expected, where


# --- golden files --------------------------------------------------------------------------------


def test_table_golden_demo(demo_table, golden):
    result, _ = demo_table
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # no progress bar: stderr is not a terminal
    assert result.stdout == golden("spectrum_resnet_tiny_bound.txt", result.stdout)


def test_table_golden_exact(cli, golden):
    result = cli("spectrum", SIGNAL)
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == golden("spectrum_signal_1d.txt", result.stdout)


def test_json_golden(demo_exact, golden):
    doc = _json(demo_exact)
    assert "\x1b[" not in demo_exact.stdout and demo_exact.stderr == ""
    expected = json.loads(golden("spectrum_resnet_tiny.json", demo_exact.stdout))
    _close_floats(expected, doc)


# --- what the numbers are -----------------------------------------------------------------------


def test_every_number_is_labelled(demo_exact):
    doc = _json(demo_exact)
    assert "circular-padding operator" in doc["notes"]["spectrum"]
    model = doc["models"][0]
    assert model["input_shapes"] == {"input": [1, 3, 32, 32]}
    convs = [layer for layer in model["layers"] if layer["kind"] != "dense"]
    assert len(convs) == 10
    assert doc["options"]["tol"] == 1e-4  # the default precision
    for layer in convs:
        sigma = layer["sigma_max"]
        assert sigma["quantity"] == "exact" and sigma["exact"] is True
        assert sigma["lower"] <= sigma["value"] * (1 + 1e-9)
        assert sigma["value"] <= sigma["upper"] * (1 + 1e-9)
        assert sigma["tol"] == 1e-4 and sigma["guarantee"] in ("exact", "certified", "converged")
        if sigma["guarantee"] == "certified":  # the bracket pins it: value = its midpoint
            assert sigma["upper"] <= sigma["lower"] * (1 + 1e-4) ** 2
            midpoint = math.sqrt(sigma["lower"] * sigma["upper"])
            assert abs(sigma["value"] - midpoint) <= 1e-9 * midpoint
            assert sigma["description"].startswith("certified to 1e-4")
        else:  # Lanczos converged: its value is the certified lower end
            assert sigma["value"] - sigma["lower"] <= 1e-9 * sigma["value"]
        if sigma["guarantee"] == "converged":
            assert sigma["description"].startswith("exact to 1e-4")
        assert sigma["operator"] == "zeros" and sigma["grid"] is not None
        assert layer["spectrum"]["operator"] == "circular"
    naive = model["summary"]["naive_product"]
    assert naive["certified_bound"] is False and "NOT a certified" in naive["label"]
    values = [layer["sigma_max"]["value"] for layer in model["layers"]]
    assert naive["value"] == pytest.approx(math.prod(values), rel=1e-9)


def test_bound_is_never_below_exact(demo_exact, demo_bound):
    for exact, bound in zip(_layers(_json(demo_exact)), _layers(_json(demo_bound)), strict=True):
        assert bound["sigma_max"]["value"] >= exact["sigma_max"]["value"] * (1 - 1e-9)
        assert bound["sigma_max"]["quantity"] in ("upper-bound", "exact")


def test_signal_1d_matches_the_dense_operator(signal_full):
    """Every conv of a real exported 1-D model against its dense matrix, built with torch."""
    import oracle

    import convaudit

    ir = convaudit.load(REPO / SIGNAL)
    layers = {layer["name"]: layer for layer in _layers(_json(signal_full))}
    for conv in ir.convs:
        entry = layers[conv.name]
        geometry = {
            "stride": conv.stride,
            "padding": conv.padding,
            "dilation": conv.dilation,
            "groups": conv.groups,
        }
        truth = oracle.dense_singular_values(conv.kernel, conv.input_size, **geometry)
        assert entry["sigma_max"]["quantity"] == "exact"
        assert entry["sigma_max"]["value"] == pytest.approx(truth[0], rel=1e-4)  # --tol 1e-4
        sigma = entry["sigma_max"]  # JSON rounds to 12 digits: a slack of 1e-9
        assert sigma["lower"] * (1 - 1e-9) <= truth[0] <= sigma["upper"] * (1 + 1e-9)
        grid = tuple(entry["spectrum"]["grid"])
        circular = oracle.circular_singular_values(
            conv.kernel, grid, stride=conv.stride, dilation=conv.dilation, groups=conv.groups
        )
        values = np.array(entry["singular_values"])
        assert values.shape == circular.shape
        np.testing.assert_allclose(values, circular, atol=1e-10 * circular[0])
        assert entry["spectrum"]["sigma_min"] == pytest.approx(
            circular[-1], abs=1e-10 * circular[0]
        )
        stable = (circular**2).sum() / circular[0] ** 2
        assert entry["spectrum"]["stable_rank"] == pytest.approx(stable, rel=1e-9)


def test_circular_model_is_exact_everywhere(cli):
    """TorchScript, circular padding, input size recorded by running the model: every value of
    every layer's spectrum against the dense circular operator."""
    import oracle

    import convaudit

    args = ("--input-shape", "1,3,8,8")
    doc = _json(cli("spectrum", CIRCULAR, *args, "--format", "json", "--full"))
    ir = convaudit.load(REPO / CIRCULAR, input_shapes={"": (1, 3, 8, 8)})
    for entry, conv in zip(_layers(doc), ir.convs, strict=True):
        truth = oracle.circular_singular_values(
            conv.kernel,
            conv.input_size,
            stride=conv.stride,
            dilation=conv.dilation,
            groups=conv.groups,
        )
        assert entry["sigma_max"]["description"].startswith("exact · circular")
        assert entry["sigma_max"]["value"] == pytest.approx(truth[0], rel=1e-10)
        np.testing.assert_allclose(entry["singular_values"], truth, atol=1e-10 * truth[0])


def test_stride1_spectra_match_the_papers_formula(demo_bound):
    """Stride-1 undilated 2-D layers: numpy FFT + SVD as published (Sedghi et al. 2019)."""
    import convaudit

    ir = convaudit.load(REPO / DEMO)
    checked = 0
    for entry in _layers(_json(demo_bound)):
        conv = ir.layer(entry["name"])
        if (
            entry["kind"] == "dense"
            or conv.stride != (1, 1)
            or conv.dilation != (1, 1)
            or conv.groups != 1
        ):
            continue
        transforms = np.fft.fft2(
            conv.kernel.astype(np.float64).transpose(2, 3, 0, 1), conv.input_size, axes=[0, 1]
        )
        truth = np.sort(np.linalg.svd(transforms, compute_uv=False).ravel())[::-1]
        np.testing.assert_allclose(entry["singular_values"], truth, atol=1e-10 * truth[0])
        checked += 1
    assert checked == 4  # stem, block1 x2, pointwise


def test_fold_bn_uses_the_batchnorm(cli):
    import oracle

    import convaudit

    ir = convaudit.load(SIGNAL)
    conv = next(c for c in ir.convs if c.bn is not None)
    doc = _json(
        cli("spectrum", SIGNAL, "--format", "json", "--fold-bn", "--layers", f"^{conv.name}$")
    )
    (entry,) = _layers(doc)
    assert entry["bn_folded"] is True
    scale = conv.bn.gamma / np.sqrt(conv.bn.var + conv.bn.eps)
    folded = conv.kernel.astype(np.float64) * scale[:, None, None]
    truth = oracle.dense_singular_values(
        folded, conv.input_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation
    )
    assert entry["sigma_max"]["value"] == pytest.approx(truth[0], rel=1e-6)


def test_float32_agrees_with_float64(cli, signal_full):
    f32 = _json(cli("spectrum", SIGNAL, "--format", "json", "--dtype", "float32"))
    assert f32["options"]["dtype"] == "float32"
    for a, b in zip(_layers(_json(signal_full)), _layers(f32), strict=True):
        assert b["sigma_max"]["value"] == pytest.approx(a["sigma_max"]["value"], rel=1e-5)


# --- formats and files ---------------------------------------------------------------------------


def test_csv(cli):
    result = cli("spectrum", SIGNAL, "--format", "csv", "--sigma", "bound")
    assert result.exit_code == 0 and result.stderr == "" and "\x1b[" not in result.stdout
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["layer"] for r in rows] == ["/conv1/Conv", "/conv2/Conv", "/conv3/Conv", "/head/Gemm"]
    assert all(float(r["sigma_max"]) > 0 for r in rows) and {r["model"] for r in rows} == {SIGNAL}


def test_several_models(cli):
    doc = _json(cli("spectrum", SIGNAL, KERAS, "--format", "json", "--sigma", "bound"))
    assert [m["path"] for m in doc["models"]] == [SIGNAL, KERAS]
    assert [m["format"] for m in doc["models"]] == ["onnx", "keras"]


def test_layers_regex(cli):
    doc = _json(
        cli("spectrum", SIGNAL, "--format", "json", "--layers", "conv[23]", "--sigma", "bound")
    )
    assert [layer["name"] for layer in _layers(doc)] == ["/conv2/Conv", "/conv3/Conv"]
    assert doc["models"][0]["summary"]["naive_product"]["complete"] is False
    assert "matches no layer" in one_error_line(
        cli("spectrum", SIGNAL, "--layers", "no-such-layer")
    )
    assert "regular expression" in one_error_line(cli("spectrum", SIGNAL, "--layers", "("))
    for bad in ("0", "-1e-4", "1.5"):
        assert "--tol must be" in one_error_line(cli("spectrum", SIGNAL, "--tol", bad))


def test_tol_sets_the_precision_of_every_sigma_max(cli):
    """--tol 1e-6: every value within 1e-6 (today's precision), said so in label and JSON."""
    result = cli("spectrum", SIGNAL, "--format", "json", "--tol", "1e-6")
    doc = _json(result)
    assert doc["options"]["tol"] == 1e-6
    for layer in _layers(doc):
        sigma = layer["sigma_max"]
        assert sigma["tol"] == 1e-6 and sigma["exact"]
        if sigma["guarantee"] in ("certified", "converged"):
            assert "to 1e-6" in sigma["description"]


def test_output_file_is_atomic_deterministic_and_never_clobbered(cli, tmp_path):
    dest = tmp_path / "report.json"
    result = cli("spectrum", SIGNAL, "--sigma", "bound", "--format", "json", "-o", str(dest))
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    written = dest.read_text()
    # Byte-identical to a second run of the same input.
    assert written == cli("spectrum", SIGNAL, "--sigma", "bound", "--format", "json").stdout
    dest.write_text("precious")
    refused = cli("spectrum", SIGNAL, "--sigma", "bound", "--format", "json", "-o", str(dest))
    assert refused.exit_code == 2 and "refusing to overwrite" in one_error_line(refused)
    assert dest.read_text() == "precious"
    forced = cli(
        "spectrum", SIGNAL, "--sigma", "bound", "--format", "json", "-o", str(dest), "--force"
    )
    assert forced.exit_code == 0 and dest.read_text() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temp files left


def test_save_spectra_matches_the_json(demo_table, demo_bound):
    _, out = demo_table
    saved = np.load(out / "spectra.npz")
    meta = json.loads(str(saved["__meta__"]))
    layers = [layer for layer in _layers(_json(demo_bound)) if layer["singular_values"]]
    assert sorted(saved.files) == sorted(["__meta__", *(layer["name"] for layer in layers)])
    for layer in layers:
        np.testing.assert_allclose(saved[layer["name"]], layer["singular_values"], rtol=1e-11)
        assert meta[layer["name"]]["grid"] == (layer["spectrum"] or {}).get("grid")


def test_plot_writes_a_real_image(demo_table):
    import matplotlib.image

    _, out = demo_table
    image = matplotlib.image.imread(out / "spectra.png")
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 500
    assert image[..., :3].std() > 0.05  # not blank


def test_plot_refuses_an_unknown_suffix_before_computing(cli, tmp_path, monkeypatch):
    import convaudit.analysis  # the command imports analyse from there when it runs

    monkeypatch.setattr(convaudit.analysis, "analyse", lambda *a, **k: pytest.fail("computed"))
    line = one_error_line(cli("spectrum", SIGNAL, "--plot", str(tmp_path / "x.gif")))
    assert "gif" in line


# --- exit codes and streams ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("sample_models/no_such_model.onnx",), "no such file"),
        ((SIGNAL, "--input-shape", "input=1,2,x"), "--input-shape"),
        ((SIGNAL, "--max-memory", "lots"), "memory size"),
        ((SIGNAL, "--device", "tpu"), "device"),
    ],
)
def test_errors_exit_2_with_one_line(cli, args, needle):
    result = cli("spectrum", *args)
    assert result.exit_code == 2
    assert needle in one_error_line(result)


def test_not_a_model_exits_2(cli, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    result = cli("spectrum", str(junk))
    assert result.exit_code == 2
    one_error_line(result)


def test_usage_error_exits_2(capsys, in_repo):
    from convaudit.cli import main

    assert main(["spectrum", SIGNAL, "--format", "xml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err


def test_interrupt_exits_130(cli, monkeypatch, tmp_path):
    import convaudit.analysis  # the command imports analyse from there when it runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convaudit.analysis, "analyse", interrupted)
    dest = tmp_path / "report.json"
    result = cli("spectrum", SIGNAL, "-o", str(dest))
    assert result.exit_code == 130 and result.stdout == ""
    assert result.stderr.strip() == "error: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_version(cli):
    from convaudit import __version__

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"convaudit {__version__}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_matches_cpu(cli, dtype):
    cpu = _json(cli("spectrum", DEMO, "--format", "json", "--device", "cpu", "--dtype", dtype))
    gpu = _json(cli("spectrum", DEMO, "--format", "json", "--device", "cuda", "--dtype", dtype))
    assert gpu["options"]["device"].startswith("cuda")
    rel = 1e-9 if dtype == "float64" else 1e-4
    for a, b in zip(_layers(cpu), _layers(gpu), strict=True):
        assert b["sigma_max"]["value"] == pytest.approx(a["sigma_max"]["value"], rel=rel)
        assert b["spectrum"]["stable_rank"] == pytest.approx(a["spectrum"]["stable_rank"], rel=rel)


@pytest.mark.parametrize("flag", ["-o", "--save-spectra", "--plot"])
def test_no_output_replaces_an_input_model_even_with_force(cli, tmp_path, flag):
    model = tmp_path / "signal.onnx"
    original = (REPO / SIGNAL).read_bytes()
    model.write_bytes(original)
    for spelling in (str(model), str(tmp_path / "." / "signal.onnx")):
        result = cli("spectrum", str(model), "--sigma", "bound", flag, spelling, "--force")
        assert result.exit_code == 2
        assert "refusing to overwrite the input" in one_error_line(result)
    assert model.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["signal.onnx"]  # no temp file either


def _relu_only_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph), path)


def test_a_model_without_convs_is_an_error(cli, tmp_path):
    import torch

    relu = tmp_path / "relu.onnx"
    _relu_only_onnx(relu)
    dense = tmp_path / "dense.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), dense)
    for model, found in ((relu, "(no layers)"), (dense, "(only 1 dense layer)")):
        result = cli("spectrum", str(model))
        assert result.exit_code == 2 and result.stdout == ""
        line = one_error_line(result)
        assert f"no convolution layers found in {model} {found}" in line
        # `layers` still lists what was read (nothing, or the dense layer): not an error
        assert cli("layers", str(model)).exit_code == 0


def test_debug_names_the_eigensolver(cli, monkeypatch):
    monkeypatch.setenv("CONVAUDIT_DEBUG", "1")
    result = cli("spectrum", SIGNAL, "--format", "json", "--device", "cpu")
    doc = _json(result)
    assert doc["options"]["backend"] == "numpy-lapack"
    lines = result.stderr.splitlines()
    assert "debug: eigensolver on cpu: numpy-lapack" in lines
    assert "debug: eigensolvers that ran: numpy-lapack" in lines
    monkeypatch.delenv("CONVAUDIT_DEBUG")
    assert "debug:" not in cli("spectrum", SIGNAL, "--format", "json").stderr


@pytest.mark.gpu
def test_cuda_report_names_its_eigensolver(cli, monkeypatch):
    monkeypatch.setenv("CONVAUDIT_DEBUG", "1")
    result = cli("spectrum", DEMO, "--format", "json", "--device", "cuda")
    backend = _json(result)["options"]["backend"]
    assert backend and "numpy-lapack" not in backend
    assert any(
        line.startswith("debug: eigensolver on cuda:") for line in result.stderr.splitlines()
    )
