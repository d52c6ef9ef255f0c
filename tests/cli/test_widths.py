"""What a person sees in a terminal 60, 80, 100, 120 and 200 columns wide: golden files of the
``spectrum``, ``layers``, ``check`` and ``clip`` tables, on the sample models and on a generated
ONNX model with long real-world-style layer names (regenerate with --regen-golden).

Beyond the golden bytes, each rendering is checked against the report it renders: no line is
wider than the terminal, and every layer's σ_max appears in full (a cut one would read ``1.…``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import REPO

from convaudit import analyse, load
from convaudit.clipping import ClipReport, LayerClip
from convaudit.ir import ConvLayer
from convaudit.report.clip_table import render_clip_table
from convaudit.report.formats import Format, renderer
from convaudit.report.interface import RenderOptions, dims, short
from convaudit.report.table import render_layers_table

WIDTHS = (60, 80, 100, 120, 200)
LONG_NAMES = (
    "If_0_else_branch__Inline_0__/encoder/layer.0/attention/self/query/Conv",
    "If_0_else_branch__Inline_0__/encoder/layer.1/attention/self/query/Conv",
    "/backbone/stage2/block1/conv/Conv",
    "/backbone/stage2/block2/conv/Conv",
    "/model.22/cv3.2/cv3.2.1/conv/Conv",
    "StatefulPartitionedCall/model/efficientnet-b0/block6a_expand_conv/Conv2D__1234",
)


def long_names_model(path: Path) -> Path:
    """A chain of small 3x3 convs named like exported real models, then a dense head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "input"
    for i, name in enumerate(LONG_NAMES):
        weight = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * (0.2 + 0.1 * i)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        out = f"t{i}"
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [out], name=name, pads=[1, 1, 1, 1]))
        x = out
    inits.append(numpy_helper.from_array(rng.standard_normal((10, 256)).astype(np.float32), "wd"))
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="/classifier/Flatten"))
    nodes.append(
        helper.make_node("Gemm", ["flat", "wd"], ["logits"], name="/classifier/head/Gemm", transB=1)
    )
    graph = helper.make_graph(
        nodes,
        "long_names",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, object]:
    """Each model read once and analysed once (the cheap certified σ_max: only rendering is
    under test here)."""
    folder = tmp_path_factory.mktemp("widths")
    paths = {
        "resnet_tiny": REPO / "sample_models" / "resnet_tiny.onnx",
        "signal_1d": REPO / "sample_models" / "signal_1d.onnx",
        "long_names": long_names_model(folder / "long_names.onnx"),
    }
    out: dict[str, object] = {}
    for key, path in paths.items():
        ir = load(path)
        ir = dataclasses.replace(ir, path=f"models/{path.name}")  # a stable title
        out[key] = (ir, analyse(ir, sigma="bound"))
    return out


def _fits(text: str, width: int) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, too_wide


def _every_sigma_in_full(text: str, values: list[float | None]) -> None:
    for value in values:
        shown = short(value)
        assert re.search(rf"(?<![\w.]){re.escape(shown)}(?![\w.])", text), shown


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("model", ["resnet_tiny", "signal_1d", "long_names"])
def test_spectrum_table_at_width(models, model, width, golden):
    _, report = models[model]
    text = renderer(Format.TABLE)([report], RenderOptions(width=width))
    assert text == golden(f"widths/spectrum_{model}_{width}.txt", text)
    _fits(text, width)
    _every_sigma_in_full(text, [r.spectrum.sigma_max.value for r in report.layers])
    assert "1.…" not in text and "0.…" not in text


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("model", ["resnet_tiny", "long_names"])
def test_layers_table_at_width(models, model, width, golden):
    ir, _ = models[model]
    text = render_layers_table([ir], width=width)
    assert text == golden(f"widths/layers_{model}_{width}.txt", text)
    _fits(text, width)
    for layer in ir.layers:  # every kernel shape whole
        weight = layer.kernel if isinstance(layer, ConvLayer) else layer.weight
        assert dims(weight.shape) in text


@pytest.mark.parametrize("width", WIDTHS)
def test_check_table_at_width(models, width, golden):
    from check_samples import sample_result

    from convaudit.gate.config import Settings
    from convaudit.gate.findings import LayerMetrics, ModelCheck, evaluate
    from convaudit.report.check_table import render_check_table

    _, report = models["long_names"]
    layers = tuple(
        LayerMetrics(r.name, r.kind, r.spectrum.sigma_max.value, r.spectrum.sigma_max.describe())
        for r in report.layers
    )
    long = ModelCheck("models/long_names.onnx", "models/long_names.onnx", "onnx", layers)
    result = evaluate([long], Settings(max_sigma=0.5))
    text = render_check_table(result, width=width) + render_check_table(
        sample_result(), width=width
    )
    assert text == golden(f"widths/check_{width}.txt", text)
    _fits(text, width)
    for f in result.findings:  # every failing value and limit whole
        assert f.value is not None and f"{f.value:.6g}" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_clip_table_at_width(models, width, golden):
    _, report = models["long_names"]
    rows = tuple(
        LayerClip(
            name=r.name,
            kind=r.kind,
            bound=1.0,
            method="alternating",
            iterations=7 + i,
            sigma_before=r.spectrum.sigma_max.value,
            sigma_after=min(r.spectrum.sigma_max.value, 0.9999931),
            relative_change=0.0123 * i,
            unchanged=r.spectrum.sigma_max.value <= 1.0,
            converged=True,
            operator="zeros padding, certified by the circular operator on an enlarged grid",
            rechecked=min(r.spectrum.sigma_max.value, 0.9999931),
        )
        for i, r in enumerate(report.layers)
    )
    clip = ClipReport("models/long_names.onnx", "out.onnx", "alternating", rows, (), True, True)
    text = render_clip_table(clip, width=width)
    assert text == golden(f"widths/clip_{width}.txt", text)
    _fits(text, width)
    for row in rows:
        assert f"{row.sigma_after:.7g}" in text and f"{row.bound:.7g}" in text
