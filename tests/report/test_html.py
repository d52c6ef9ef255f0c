"""The html reports: self-contained, escaped, deterministic, every label present; and opened in a
real headless Chromium (skipped, with the reason, when none is installed).

Truths: the page is parsed back with the standard library's HTML parser (what a browser's
parser sees), the CSP hashes are recomputed from the inline code, figure marks are compared with
the report's own numbers by order, and the browser reports its console, its network requests
and the table's order after a click.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import Browser, find_chromium
from handmade import handmade_report

from convaudit.analysis import ModelReport
from convaudit.report.formats import CheckFormat, Format, check_renderer, renderer
from convaudit.report.html.spectrum import COLUMNS
from convaudit.report.interface import RenderOptions, describe_sigma, printable

REPO = Path(__file__).resolve().parents[2]
EVIL = "</script><script>alert(1)</script><img src=x onerror=alert(2)>\"'&\x1b[2J"


class Page(HTMLParser):
    """Every start tag with its attributes, the text inside each script/style, all text."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.raw: dict[str, list[str]] = {"script": [], "style": []}
        self.texts: list[str] = []
        self._open: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1] in self.raw:
            self.raw[self._open[-1]].append(data)
        else:
            self.texts.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]

    @property
    def text(self) -> str:
        return "".join(self.texts)


def _renamed(report: ModelReport, index: int, name: str) -> ModelReport:
    import dataclasses

    layers = list(report.layers)
    layers[index] = dataclasses.replace(layers[index], name=name)
    return dataclasses.replace(report, layers=tuple(layers), path=f"models/{name}.onnx")


@pytest.fixture(scope="module")
def report() -> ModelReport:
    return handmade_report(6)


@pytest.fixture(scope="module")
def spectrum_html(report) -> str:
    return renderer(Format.HTML)([report], RenderOptions())


@pytest.fixture(scope="module")
def check_html() -> str:
    from test_gate_formats import sample_result

    return check_renderer(CheckFormat.HTML)(sample_result())


def _self_contained(source: str) -> Page:
    page = Page(source)
    assert source.startswith("<!DOCTYPE html>")
    # nothing to fetch: no external script, style sheet, image, frame, font or link
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "action", "data", "poster"):
            value = attrs.get(key)
            assert value is None or value.startswith(("#", "url(#")), (tag, key, value)
        assert not any(key.startswith("on") for key in attrs), (tag, attrs)
    assert {t for t, _ in page.tags}.isdisjoint({"link", "img", "iframe", "object", "embed"})
    (script,), (style,) = page.raw["script"], page.raw["style"]
    assert len(page.all("script")) == 1 and len(page.all("style")) == 1
    (policy,) = [
        a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert policy is not None and "default-src 'none'" in policy
    for code, directive in ((script, "script-src"), (style, "style-src")):
        digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy
    return page


def test_spectrum_page_is_self_contained_and_deterministic(report, spectrum_html):
    _self_contained(spectrum_html)
    assert renderer(Format.HTML)([report], RenderOptions()) == spectrum_html
    assert "\x1b" not in spectrum_html


def test_check_page_is_self_contained_and_deterministic(check_html):
    from test_gate_formats import sample_result

    page = _self_contained(check_html)
    assert check_renderer(CheckFormat.HTML)(sample_result()) == check_html
    assert "FAILED" in page.text and "CA001" in page.text and "CA010" in page.text
    # the newline in a layer name is shown, not obeyed
    assert printable("stem, the: 100% conv\nx") in page.text


def test_every_label_and_number_is_in_the_spectrum_table(report, spectrum_html):
    page = Page(spectrum_html)
    for layer in report.layers:
        sigma = layer.spectrum.sigma_max
        assert layer.name in page.text
        assert describe_sigma(sigma) in page.text  # exact / bound, padding, grid
        cells = [a.get("data-sort") for a in page.all("td")]
        assert repr(float(sigma.value)) in cells and repr(float(sigma.upper)) in cells
    for field in ("sigma", "fold_bn", "dtype", "device", "tol"):
        assert field in page.text  # the options of the run
    assert "conv inside a Loop subgraph" in page.text  # the skipped layer and its reason
    assert "NOT a certified network bound" in page.text


def test_figures_draw_every_layer_in_order(report, spectrum_html):
    page = Page(spectrum_html)
    with_spectrum = [r for r in report.layers if r.spectrum.singular_values is not None]
    assert len(page.all("polyline")) == len(with_spectrum)
    # σ_max marks: one per layer (plus two in the legend); the higher σ_max, the higher the mark
    circles = [a for a in page.all("circle") if a.get("r") == "3.6"][: len(report.layers)]
    values = [r.spectrum.sigma_max.value for r in report.layers]
    heights = [-float(c["cy"]) for c in circles]
    by_value = sorted(range(len(values)), key=lambda i: values[i])
    assert sorted(range(len(heights)), key=lambda i: heights[i]) == by_value
    filled = [c["fill"] != "#ffffff" for c in circles]
    assert filled == [r.spectrum.sigma_max.exact for r in report.layers]


@pytest.mark.parametrize("where", ["layer", "path"])
def test_model_strings_cannot_inject_markup(report, where):
    evil = _renamed(report, 1, EVIL) if where == "layer" else _renamed(report, 1, "ok")
    if where == "path":
        import dataclasses

        evil = dataclasses.replace(evil, path=EVIL)
    source = renderer(Format.HTML)([evil], RenderOptions())
    page = _self_contained(source)  # still exactly one script, no handler, no image
    assert printable(EVIL) in page.text
    assert "alert(1)" not in "".join(page.raw["script"])


def test_check_strings_cannot_inject_markup():
    import dataclasses

    from test_gate_formats import sample_result

    result = sample_result()
    model = result.models[0]
    layers = (dataclasses.replace(model.layers[0], name=EVIL), *model.layers[1:])
    evil_model = dataclasses.replace(model, layers=layers, path=EVIL)
    from convaudit.gate.config import Settings
    from convaudit.gate.findings import evaluate

    evil = evaluate([evil_model], Settings(max_sigma=1.5))
    page = _self_contained(check_renderer(CheckFormat.HTML)(evil))
    assert printable(EVIL) in page.text


# --- a real browser ---------------------------------------------------------------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _column(browser: Browser, index: int) -> list[str]:
    return browser.evaluate(
        "Array.from(document.querySelector('table.sortable').tBodies[0].rows)"
        f".map(r => r.cells[{index}].textContent)"
    )


@needs_chromium
def test_spectrum_page_in_chromium(tmp_path, report, spectrum_html):
    page_file = tmp_path / "report.html"
    page_file.write_text(spectrum_html, encoding="utf-8")
    shot = tmp_path / "report.png"
    sigma_col = [c.header for c in COLUMNS].index("σ_max")
    assert CHROMIUM is not None
    with Browser(CHROMIUM) as browser:
        browser.open(page_file)
        assert browser.evaluate("document.querySelectorAll('svg').length") == 2
        names = _column(browser, 1)
        assert names == [r.name for r in report.layers]
        header = f"document.querySelector('table.sortable').tHead.rows[0].cells[{sigma_col}]"
        assert browser.evaluate(f"{header}.textContent") == "σ_max"
        browser.evaluate(f"{header}.querySelector('button').click()")
        ascending = sorted(report.layers, key=lambda r: r.spectrum.sigma_max.value)
        assert _column(browser, 1) == [r.name for r in ascending]
        assert browser.evaluate(f"{header}.getAttribute('aria-sort')") == "ascending"
        browser.evaluate(f"{header}.querySelector('button').click()")
        assert _column(browser, 1) == [r.name for r in reversed(ascending)]
        browser.screenshot(shot)
        assert browser.errors() == []
        assert browser.requests() == [page_file.resolve().as_uri()]
    width, height = _png_size(shot.read_bytes())
    assert width == 1280 and height > 900
    keep = os.environ.get("CONVAUDIT_SCREENSHOT")  # e.g. docs/html_report.png for the README
    if keep:
        shutil.copyfile(shot, keep)


@needs_chromium
def test_check_page_in_chromium(tmp_path, check_html):
    page_file = tmp_path / "gate.html"
    page_file.write_text(check_html, encoding="utf-8")
    assert CHROMIUM is not None
    with Browser(CHROMIUM) as browser:
        browser.open(page_file)
        statuses = _column(browser, 0)  # the findings table comes first
        assert set(statuses) == {"fail", "warn", "ignored"}
        header = "document.querySelector('table.sortable').tHead.rows[0].cells[0]"
        browser.evaluate(f"{header}.querySelector('button').click()")
        assert _column(browser, 0)[: statuses.count("fail")] == ["fail"] * statuses.count("fail")
        assert browser.errors() == []
        assert browser.requests() == [page_file.resolve().as_uri()]


@needs_chromium
def test_the_browser_checks_can_fail(tmp_path):
    """Control: a page that fetches something and breaks the policy is caught by both checks."""
    bad = tmp_path / "bad.html"
    source = renderer(Format.HTML)([handmade_report(2)], RenderOptions())
    source = source.replace(
        "</body>", '<img src="http://127.0.0.1:9/x.png"><script>alert(1)</script></body>'
    )
    bad.write_text(source, encoding="utf-8")
    assert CHROMIUM is not None
    with Browser(CHROMIUM) as browser:
        browser.open(bad)
        refused = [e for e in browser.errors() if re.search("Content Security Policy", e)]
        assert len(refused) >= 2, browser.errors()  # the image and the script
