"""Measure one model for ``convaudit check``: per-layer values, graph bound, empirical bound.

Library code (never prints). The per-layer values come from :func:`convaudit.analysis.analyse`
(the engine's sigma_max of each layer's real operator, plus the circular spectrum's sigma_min
and condition when a limit needs them); the graph bound gets the engine's certified upper
bounds injected (:class:`convaudit.network.graph.LayerBounds`); the empirical lower bound runs the
model itself where a runtime can (ONNX via onnxruntime).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from convaudit.analysis import AnalysisOptions, LayerResult, ModelReport, analyse_models
from convaudit.engine.results import EngineOptions
from convaudit.errors import ConvauditError, InputShapeError, UnsupportedLayerError
from convaudit.executor import SEQUENTIAL, LayerExecutor
from convaudit.gate.config import Settings
from convaudit.gate.findings import LayerMetrics, ModelCheck
from convaudit.ir import ConvLayer, Layer, ModelIR
from convaudit.network.empirical import EmpiricalBound, SearchOptions, search_autograd
from convaudit.network.empirical_runtime import onnx_blackbox, torch_program
from convaudit.network.graph import LayerBounds, NetworkBound, network_bound

#: progress(done, total, what)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class AuditOptions:
    """What to measure. ``spectrum``: also sigma_min / condition (needs the full spectrum)."""

    analysis: AnalysisOptions
    spectrum: bool = False
    empirical: bool = True
    search: SearchOptions = field(default_factory=lambda: SearchOptions(trials=2, iterations=6))
    input_shapes: Mapping[str, tuple[int, ...]] | None = None
    #: values of integer / bool ONNX inputs (--input-value), held fixed by the empirical search
    input_values: Mapping[str, np.ndarray] | None = None
    #: tighten the graph bound's factors where the analysis left only a loose certified upper
    #: end (dense layers too large for their SVD): worth its cost when max-lipschitz gates
    tight_network: bool = True


def gate_limits(ir: ModelIR, settings: Settings, *, baseline: bool) -> dict[str, float] | None:
    """How far each layer's sigma_max must be refined for the gate: up to its max-sigma limit
    (the bracket then lies on one side of it), not at all without one (inf: its certified
    bracket already serves the network bound). None, refine every layer to tol, when a
    baseline is read or written: its regressions compare values, not sides of a limit."""
    if baseline:
        return None
    return {
        layer.name: settings.limits_for(layer.name).get("max-sigma", math.inf)
        for layer in ir.layers
    }


def _metrics(result: LayerResult) -> LayerMetrics:
    spec = result.spectrum
    sigma = spec.sigma_max
    where = ""
    if spec.spectrum_operator is not None:
        grid = "x".join(str(n) for n in spec.spectrum_grid or ())
        where = f"{spec.spectrum_operator} operator, {grid}"
    return LayerMetrics(
        name=result.name,
        kind=result.kind,
        sigma_max=None if sigma is None else sigma.value,
        sigma_max_label="" if sigma is None else sigma.describe(),
        sigma_min=spec.sigma_min,
        sigma_max_lower=None if sigma is None else sigma.lower,
        sigma_max_upper=None if sigma is None else sigma.upper,
        condition=spec.condition,
        spectrum_label=where,
        bn_folded=spec.bn_folded,
    )


def layer_bounds(
    ir: ModelIR,
    report: ModelReport,
    options: AnalysisOptions,
    *,
    executor: LayerExecutor | None = None,
    tight: bool = True,
) -> LayerBounds:
    """Certified per-layer upper bounds for the graph: the analysed ones, plus whichever of
    (conv alone, conv + BN) the analysis did not compute and the graph needs. With ``tight``,
    a dense layer whose analysis only converged (its upper end a cheap norm bound) gets its
    Cholesky-certified upper end."""
    measured = {
        r.name: r.spectrum.sigma_max.upper
        for r in report.layers
        if r.spectrum.sigma_max is not None
    }
    tighten = [
        (ir.layer(r.name), False)
        for r in report.layers
        if tight
        and r.kind == "dense"
        and r.spectrum.sigma_max is not None
        and r.spectrum.sigma_max.guarantee == "converged"
    ]
    with_bn = {
        layer.name
        for layer in ir.layers
        if isinstance(layer, ConvLayer) and layer.bn is not None and layer.name in measured
    }
    folded_targets = {
        str(n.attrs.get("folded_into"))
        for n in (ir.graph.nodes if ir.graph else ())
        if n.kind == "batchnorm"
    }
    missing: list[tuple[Layer, bool]] = []  # (layer, fold_bn) still to bound
    for layer in ir.layers:  # model order, whatever order the set gives
        if layer.name not in with_bn:
            continue
        if options.fold_bn:
            missing.append((layer, False))
        if not options.fold_bn and layer.name in folded_targets:
            missing.append((layer, True))
    bounds = (executor or SEQUENTIAL).map(
        functools.partial(upper_bound, options=options.engine_options()), tighten + missing
    )
    for (layer, _), bound in zip(tighten, bounds[: len(tighten)], strict=True):
        measured[layer.name] = min(measured[layer.name], bound)
    plain = {name: v for name, v in measured.items() if not (options.fold_bn and name in with_bn)}
    folded = {name: measured[name] for name in with_bn if options.fold_bn}
    for (layer, fold), bound in zip(missing, bounds[len(tighten) :], strict=True):
        (folded if fold else plain)[layer.name] = bound
    return LayerBounds.with_bn_gains(ir.layers, plain, folded)


def upper_bound(job: tuple[Layer, bool], options: EngineOptions) -> float:
    """The certified upper bound on one layer's sigma_max, alone or with its BatchNorm."""
    from convaudit.engine.layer import layer_upper_bound

    layer, fold_bn = job
    return layer_upper_bound(layer, fold_bn=fold_bn, options=options).upper


def _input_shapes(ir: ModelIR, given: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    shapes = dict(given)
    for name, shape in ir.input_shapes.items():
        if name not in shapes and all(isinstance(d, int) and d > 0 for d in shape):
            shapes[name] = tuple(int(d) for d in shape if d is not None)
    return shapes


def empirical_bound(ir: ModelIR, options: AuditOptions) -> EmpiricalBound:
    """The empirical lower bound, by running the model: onnxruntime for ONNX, torch for
    TorchScript and torch.export programs."""
    shapes = _input_shapes(ir, options.input_shapes or {})
    if ir.format == "onnx":
        return onnx_blackbox(ir.path, shapes, options.input_values).search(options.search)
    if ir.format == "pytorch":
        program = torch_program(ir.path)
        if len(shapes) != 1:
            raise InputShapeError(
                "the input shape is unknown", hint="pass --input-shape 1,3,224,224"
            )
        (shape,) = shapes.values()
        return search_autograd(program, [shape], options.search, dtype=_torch_float32())
    raise UnsupportedLayerError(f"no runtime here to execute {ir.format} models")


def _torch_float32() -> object:
    import torch

    return torch.float32


def audit_model(
    ir: ModelIR,
    key: str,
    options: AuditOptions,
    *,
    progress: Progress | None = None,
    executor: LayerExecutor | None = None,
) -> ModelCheck:
    (check,) = audit_models([ir], [key], options, progress=progress, executor=executor)
    return check


def audit_models(
    irs: Sequence[ModelIR],
    keys: Sequence[str],
    options: AuditOptions,
    *,
    progress: Progress | None = None,
    executor: LayerExecutor | None = None,
) -> list[ModelCheck]:
    """:func:`audit_model` for several models; their layers go to ``executor`` as one batch.
    The empirical search runs here: it executes the model file itself."""
    analysis = dataclasses.replace(options.analysis, full=options.spectrum)
    reports = analyse_models(irs, analysis, progress=progress, executor=executor)
    return [
        _check(ir, key, report, analysis, options, executor)
        for ir, key, report in zip(irs, keys, reports, strict=True)
    ]


def _check(
    ir: ModelIR,
    key: str,
    report: ModelReport,
    analysis: AnalysisOptions,
    options: AuditOptions,
    executor: LayerExecutor | None,
) -> ModelCheck:
    network: NetworkBound | None = None
    network_error = None
    if ir.graph is None:
        network_error = f"the {ir.format} loader gave no graph for this file"
    else:
        bounds = layer_bounds(ir, report, analysis, executor=executor, tight=options.tight_network)
        network = network_bound(ir.graph, bounds)
    empirical, empirical_error = None, None
    if options.empirical:
        try:
            empirical = empirical_bound(ir, options)
        except ConvauditError as exc:
            empirical_error = exc.message
        except Exception as exc:  # the runtime running the user's model: report, never crash
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            empirical_error = f"running the model failed: {type(exc).__name__}: {first}"
    notes = list(report.notes)
    upper = network.value if network is not None else math.inf
    lower = empirical.value if empirical is not None else 0.0
    if lower > upper * (1 + 1e-4):  # a certified bound below a measured ratio: never expected
        notes.append(
            f"INTERNAL CHECK FAILED: empirical lower bound {lower:.6g} exceeds the "
            f"graph bound {upper:.6g}; please report this model"
        )
    return ModelCheck(
        path=ir.path,
        key=key,
        format=ir.format,
        layers=tuple(_metrics(r) for r in report.layers),
        skipped=report.skipped,
        network=network,
        network_error=network_error,
        empirical=empirical,
        empirical_error=empirical_error,
        notes=tuple(notes),
    )


__all__ = [
    "AuditOptions",
    "audit_model",
    "audit_models",
    "empirical_bound",
    "gate_limits",
    "layer_bounds",
]
