"""`convaudit spectrum` end to end on the bundled sample models (real files, real pipeline)."""

from __future__ import annotations

import csv
import io
import json
import math

import jsonschema
import numpy as np
import pytest
from cli_helpers import one_error_line

from convaudit.report.json import spectrum_schema

DEMO = "sample_models/resnet_tiny.onnx"
SIGNAL = "sample_models/signal_1d.onnx"


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, spectrum_schema())
    return doc


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
    elif isinstance(expected, str) and "·" in expected:
        assert actual.split("·")[0] == expected.split("·")[0], where  # descriptions hold no floats
        assert actual == expected, where
    else:
        assert actual == expected, where


def test_table_golden(cli, golden):
    result = cli("spectrum", DEMO)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # no progress bar: stderr is not a terminal
    assert result.stdout == golden("spectrum_resnet_tiny.txt", result.stdout)


def test_json_golden_schema_and_determinism(cli, golden):
    first = cli("spectrum", DEMO, "--format", "json")
    second = cli("spectrum", DEMO, "--format", "json")
    assert first.stdout == second.stdout  # byte-identical for the same input
    assert "\x1b[" not in first.stdout and first.stderr == ""
    doc = _json(first)
    expected = json.loads(golden("spectrum_resnet_tiny.json", first.stdout))
    _close_floats(expected, doc)


def test_every_number_is_labelled(cli):
    doc = _json(cli("spectrum", DEMO, "--format", "json"))
    assert "circular-padding operator" in doc["notes"]["spectrum"]
    model = doc["models"][0]
    assert model["input_shapes"] == {"input": [1, 3, 32, 32]}
    convs = [layer for layer in model["layers"] if layer["kind"] != "dense"]
    assert len(convs) == 10
    for layer in convs:
        sigma = layer["sigma_max"]
        assert sigma["quantity"] in ("exact", "upper-bound")
        assert sigma["lower"] <= sigma["value"] * (1 + 1e-9) and sigma["value"] <= sigma[
            "upper"
        ] * (1 + 1e-9)
        assert sigma["operator"] == "zeros" and sigma["grid"] is not None
        assert layer["spectrum"]["operator"] == "circular"
    naive = model["summary"]["naive_product"]
    assert naive["certified_bound"] is False
    values = [layer["sigma_max"]["value"] for layer in model["layers"]]
    assert naive["value"] == pytest.approx(math.prod(values), rel=1e-9)


def test_signal_1d_matches_the_dense_operator(cli):
    """Every layer of a real exported 1-D model against its dense matrix, built with torch."""
    import oracle

    import convaudit

    ir = convaudit.load(SIGNAL)
    doc = _json(cli("spectrum", SIGNAL, "--format", "json", "--full"))
    layers = {layer["name"]: layer for layer in doc["models"][0]["layers"]}
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
        assert entry["sigma_max"]["value"] == pytest.approx(truth[0], rel=1e-6)
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


def test_stride1_spectra_match_the_papers_formula(cli):
    """Stride-1 undilated 2-D layers: numpy FFT + SVD as published (Sedghi et al. 2019)."""
    import convaudit

    ir = convaudit.load(DEMO)
    doc = _json(
        cli("spectrum", DEMO, "--format", "json", "--full", "--layers", "stem|block1|pointwise")
    )
    entries = {layer["name"]: layer for layer in doc["models"][0]["layers"]}
    assert len(entries) == 4
    for name, entry in entries.items():
        conv = ir.layer(name)
        n = conv.input_size
        transforms = np.fft.fft2(conv.kernel.transpose(2, 3, 0, 1), n, axes=[0, 1])
        truth = np.sort(np.linalg.svd(transforms, compute_uv=False).ravel())[::-1]
        np.testing.assert_allclose(entry["singular_values"], truth, atol=1e-10 * truth[0])


def test_fold_bn_uses_the_batchnorm(cli):
    import oracle

    import convaudit

    ir = convaudit.load(SIGNAL)
    conv = next(c for c in ir.convs if c.bn is not None)
    doc = _json(
        cli("spectrum", SIGNAL, "--format", "json", "--fold-bn", "--layers", f"^{conv.name}$")
    )
    (entry,) = doc["models"][0]["layers"]
    assert entry["bn_folded"] is True
    scale = conv.bn.gamma / np.sqrt(conv.bn.var + conv.bn.eps)
    folded = conv.kernel * scale[:, None, None]
    truth = oracle.dense_singular_values(
        folded, conv.input_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation
    )
    assert entry["sigma_max"]["value"] == pytest.approx(truth[0], rel=1e-6)


def test_sigma_bound_is_an_upper_bound(cli):
    exact = _json(cli("spectrum", DEMO, "--format", "json"))["models"][0]["layers"]
    bound = _json(cli("spectrum", DEMO, "--format", "json", "--sigma", "bound"))["models"][0][
        "layers"
    ]
    for e, b in zip(exact, bound, strict=True):
        assert b["sigma_max"]["value"] >= e["sigma_max"]["value"] * (1 - 1e-9)
        assert b["sigma_max"]["quantity"] in ("upper-bound", "exact")


def test_float32_agrees_with_float64(cli):
    f64 = _json(cli("spectrum", SIGNAL, "--format", "json"))["models"][0]["layers"]
    f32 = _json(cli("spectrum", SIGNAL, "--format", "json", "--dtype", "float32"))["models"][0][
        "layers"
    ]
    for a, b in zip(f64, f32, strict=True):
        assert b["sigma_max"]["value"] == pytest.approx(a["sigma_max"]["value"], rel=1e-5)


def test_csv(cli):
    result = cli("spectrum", DEMO, "--format", "csv")
    assert result.exit_code == 0 and result.stderr == "" and "\x1b[" not in result.stdout
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 11 and {r["model"] for r in rows} == {DEMO}
    assert all(float(r["sigma_max"]) > 0 for r in rows)


def test_several_models(cli):
    doc = _json(cli("spectrum", DEMO, SIGNAL, "--format", "json"))
    assert [m["path"] for m in doc["models"]] == [DEMO, SIGNAL]


def test_layers_regex(cli):
    doc = _json(cli("spectrum", DEMO, "--format", "json", "--layers", "down"))
    names = [layer["name"] for layer in doc["models"][0]["layers"]]
    assert names and all("down" in name for name in names)
    assert doc["models"][0]["summary"]["naive_product"]["complete"] is False
    assert "matches no layer" in one_error_line(cli("spectrum", DEMO, "--layers", "no-such-layer"))
    assert "regular expression" in one_error_line(cli("spectrum", DEMO, "--layers", "("))


def test_output_file_is_atomic_and_never_clobbered(cli, tmp_path):
    dest = tmp_path / "report.json"
    result = cli("spectrum", DEMO, "--format", "json", "-o", str(dest))
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    written = dest.read_text()
    jsonschema.validate(json.loads(written), spectrum_schema())
    dest.write_text("precious")
    refused = cli("spectrum", DEMO, "--format", "json", "-o", str(dest))
    assert refused.exit_code == 2 and "refusing to overwrite" in one_error_line(refused)
    assert dest.read_text() == "precious"
    forced = cli("spectrum", DEMO, "--format", "json", "-o", str(dest), "--force")
    assert forced.exit_code == 0 and dest.read_text() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_save_spectra_matches_json(cli, tmp_path):
    dest = tmp_path / "spectra.npz"
    doc = _json(cli("spectrum", SIGNAL, "--format", "json", "--full", "--save-spectra", str(dest)))
    saved = np.load(dest)
    meta = json.loads(str(saved["__meta__"]))
    with_spectra = [layer for layer in doc["models"][0]["layers"] if layer["singular_values"]]
    assert len(with_spectra) >= 3  # every conv
    assert sorted(saved.files) == sorted(["__meta__", *(layer["name"] for layer in with_spectra)])
    for layer in with_spectra:
        np.testing.assert_allclose(saved[layer["name"]], layer["singular_values"], rtol=1e-11)
        assert meta[layer["name"]]["grid"] == layer["spectrum"]["grid"]


def test_plot_writes_a_real_image(cli, tmp_path):
    import matplotlib.image

    dest = tmp_path / "spectra.png"
    result = cli("spectrum", DEMO, "--plot", str(dest), "--quiet")
    assert result.exit_code == 0, result.stderr
    image = matplotlib.image.imread(dest)
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 500
    assert image[..., :3].std() > 0.05  # not blank


def test_plot_refuses_an_unknown_suffix_before_computing(cli, tmp_path, monkeypatch):
    import convaudit.cli.spectrum as spectrum_cli

    monkeypatch.setattr(spectrum_cli, "analyse", lambda *a, **k: pytest.fail("computed"))
    line = one_error_line(cli("spectrum", DEMO, "--plot", str(tmp_path / "x.gif")))
    assert "gif" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("sample_models/no_such_model.onnx",), "no such file"),
        ((DEMO, "--input-shape", "input=1,3,x"), "--input-shape"),
        ((DEMO, "--max-memory", "lots"), "memory size"),
        ((DEMO, "--device", "tpu"), "device"),
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

    assert main(["spectrum", DEMO, "--format", "xml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_interrupt_exits_130(cli, monkeypatch):
    import convaudit.cli.spectrum as spectrum_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(spectrum_cli, "analyse", interrupted)
    result = cli("spectrum", DEMO)
    assert result.exit_code == 130 and result.stdout == ""
    assert result.stderr.strip() == "error: interrupted"


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
    for a, b in zip(cpu["models"][0]["layers"], gpu["models"][0]["layers"], strict=True):
        assert b["sigma_max"]["value"] == pytest.approx(a["sigma_max"]["value"], rel=rel)
        assert b["spectrum"]["stable_rank"] == pytest.approx(a["spectrum"]["stable_rank"], rel=rel)
