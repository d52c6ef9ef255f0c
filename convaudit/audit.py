"""Measure one model for ``convaudit check``: per-layer values, graph bound, empirical bound.

Library code (never prints). The per-layer values come from :func:`convaudit.analysis.analyse`
(the engine's sigma_max of each layer's real operator, plus the circular spectrum's sigma_min
and condition when a limit needs them); the graph bound gets the engine's certified upper
bounds injected (:class:`convaudit.network.graph.LayerBounds`); the empirical lower bound runs the
model itself where a runtime can (ONNX via onnxruntime).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from convaudit.analysis import AnalysisOptions, LayerResult, ModelReport, analyse
from convaudit.errors import ConvauditError, InputShapeError, UnsupportedLayerError
from convaudit.gate.config import Settings
from convaudit.gate.findings import LayerMetrics, ModelCheck
from convaudit.ir import ConvLayer, ModelIR
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
    ir: ModelIR, report: ModelReport, options: AnalysisOptions, *, tight: bool = True
) -> LayerBounds:
    """Certified per-layer upper bounds for the graph: the analysed ones, plus whichever of
    (conv alone, conv + BN) the analysis did not compute and the graph needs. With ``tight``,
    a dense layer whose analysis only converged (its upper end a cheap norm bound) gets its
    Cholesky-certified upper end."""
    from convaudit.engine.layer import layer_upper_bound

    engine = options.engine_options()
    measured = {
        r.name: r.spectrum.sigma_max.upper
        for r in report.layers
        if r.spectrum.sigma_max is not None
    }
    for r in report.layers:
        sigma = r.spectrum.sigma_max
        if tight and r.kind == "dense" and sigma is not None and sigma.guarantee == "converged":
            measured[r.name] = min(measured[r.name], layer_upper_bound(ir.layer(r.name)).upper)
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
    plain = {name: v for name, v in measured.items() if not (options.fold_bn and name in with_bn)}
    folded = {name: measured[name] for name in with_bn if options.fold_bn}
    for name in with_bn:
        layer = ir.layer(name)
        if options.fold_bn and name not in plain:
            plain[name] = layer_upper_bound(layer, fold_bn=False, options=engine).upper
        if not options.fold_bn and name in folded_targets:
            folded[name] = layer_upper_bound(layer, fold_bn=True, options=engine).upper
    return LayerBounds.with_bn_gains(ir.layers, plain, folded)


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
        return onnx_blackbox(ir.path, shapes).search(options.search)
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
    ir: ModelIR, key: str, options: AuditOptions, *, progress: Progress | None = None
) -> ModelCheck:
    analysis = dataclasses.replace(options.analysis, full=options.spectrum)
    report = analyse(ir, analysis, progress=progress)
    network: NetworkBound | None = None
    network_error = None
    if ir.graph is None:
        network_error = f"the {ir.format} loader gave no graph for this file"
    else:
        bounds = layer_bounds(ir, report, analysis, tight=options.tight_network)
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


__all__ = ["AuditOptions", "audit_model", "empirical_bound", "gate_limits", "layer_bounds"]
