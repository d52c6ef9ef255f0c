"""Reporters on hand-built reports: formats, determinism, schema, no ANSI in machine formats."""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import jsonschema
import pytest
from handmade import handmade_report

from convaudit.errors import ConfigError, ConvauditError
from convaudit.report.csv import COLUMNS
from convaudit.report.formats import Format, renderer
from convaudit.report.interface import RenderOptions, describe_sigma, round_float
from convaudit.report.json import spectrum_schema


@pytest.fixture(scope="module")
def report():
    return handmade_report()


def test_every_format_has_a_renderer(report):
    for fmt in Format:
        text = renderer(fmt)([report], RenderOptions())
        assert isinstance(text, str) and text.strip()
        if fmt.machine:
            assert "\x1b[" not in text


def test_json_is_valid_deterministic_and_rounded(report):
    schema = spectrum_schema()
    for full in (False, True):
        text = renderer(Format.JSON)([report], RenderOptions(full=full))
        assert text == renderer(Format.JSON)([report], RenderOptions(full=full))
        doc = json.loads(text)
        jsonschema.validate(doc, schema)
        layer = doc["models"][0]["layers"][0]
        assert ("singular_values" in layer) is full
        if full:
            assert len(layer["singular_values"]) == 64
        assert layer["sigma_max"]["description"] == "exact · zeros · 8x8"
        naive = doc["models"][0]["summary"]["naive_product"]
        assert naive["certified_bound"] is False and "NOT a certified" in naive["label"]
        expected = math.prod(r.spectrum.sigma_max.value for r in report.layers)
        assert naive["value"] == pytest.approx(expected, rel=1e-11)


def test_round_float_fixes_the_digits():
    assert round_float(1 / 3) == 0.333333333333
    assert round_float(float("nan")) is None and round_float(None) is None


def test_describe_sigma_says_what_the_number_is(report):
    bound = handmade_report(4).layers[3].spectrum.sigma_max
    assert describe_sigma(bound) == "≤ bound · any input size"
    assert describe_sigma(report.layers[-1].spectrum.sigma_max) == "exact · dense"
    assert describe_sigma(None) == "-"


def test_csv_rows_and_columns(report):
    text = renderer(Format.CSV)([report], RenderOptions())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0].keys()) == COLUMNS
    assert [r["layer"] for r in rows] == [*(r.name for r in report.layers), "loop/conv"]
    assert rows[-1]["status"] == "skipped" and "Loop" in rows[-1]["reason"]
    assert float(rows[0]["sigma_max"]) == pytest.approx(report.layers[0].spectrum.sigma_max.value)
    assert rows[0]["sigma_max_quantity"] == "exact" and rows[0]["spectrum_operator"] == "circular"


def test_table_labels_every_number(report):
    text = renderer(Format.TABLE)([report], RenderOptions(width=200))
    assert "\x1b[" not in text
    text4 = renderer(Format.TABLE)([handmade_report(4)], RenderOptions(width=200))
    assert "≤ bound · any input size" in text4
    for needle in (
        "σ_max is",
        "exact · zeros · 8x8",
        "circular-padding",
        "naive product",
        "not a certified network bound",
        "skipped loop/conv",
    ):
        assert needle in text, needle
    colored = renderer(Format.TABLE)([report], RenderOptions(width=200, color=True))
    assert "\x1b[" in colored


def test_plot_needs_a_known_suffix(tmp_path, report):
    from convaudit.report.plot import write_plot

    with pytest.raises(ConfigError, match="gif") as info:
        write_plot([report], tmp_path / "figure.gif")
    assert ".png" in (info.value.hint or "")
    assert not (tmp_path / "figure.gif").exists()


def test_plot_without_matplotlib_gives_the_install_hint(monkeypatch, report, tmp_path):
    from convaudit.report import plot

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ConvauditError) as info:
        plot.write_plot([report], tmp_path / "x.png")
    assert "convaudit[plot]" in (info.value.hint or "")


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_plot_fifty_layers(tmp_path, suffix):
    from convaudit.report.plot import write_plot

    dest = tmp_path / f"spectra.{suffix}"
    write_plot([handmade_report(50)], dest)
    data = dest.read_bytes()
    if suffix == "png":
        import matplotlib.image

        image = matplotlib.image.imread(dest)
        height, width = image.shape[:2]
        assert width >= 1000 and height >= 500
        assert image[..., :3].std() > 0.05  # not blank
    elif suffix == "svg":
        assert b"<svg" in data[:500] and data.count(b"<path") > 50
    else:
        assert data.startswith(b"%PDF")
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]  # no temp file left
