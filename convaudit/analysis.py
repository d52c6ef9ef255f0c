"""Model-level analysis: run the engine over every selected layer of a ModelIR.

``analyse(ir) -> ModelReport`` is what ``convaudit spectrum`` and the Python API call; the
reporters in :mod:`convaudit.report` render the report. Library code: never prints; progress goes
through a callback.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from convaudit.engine.results import SPECTRUM_SKIPPED, EngineOptions, LayerSpectrum
from convaudit.errors import ConfigError, ModelFileError, UnsupportedLayerError
from convaudit.executor import SEQUENTIAL, LayerExecutor
from convaudit.ir import ConvLayer, Layer, ModelIR, SkippedLayer

#: progress(done_layers, total_layers, layer_name)
ModelProgress = Callable[[int, int, str], None]

NAIVE_PRODUCT_LABEL = (
    "naive product of the per-layer sigma_max; NOT a certified network bound: skip connections, "
    "concatenations and non-conv ops are ignored (`convaudit check` gives the graph-aware bound)"
)


#: AnalysisOptions.sigma -> the engine's name for it
ENGINE_SIGMA = {"exact": "exact", "bound": "upper-bound"}


@dataclass(frozen=True)
class AnalysisOptions:
    """What ``analyse`` computes.

    ``full``: keep every singular value (needed for --full, --plot, --save-spectra).
    ``sigma``: "exact" (sigma_max of the layer's real operator, refined to ``tol``) or "bound"
    (the cheap certified bracket, not refined). ``tol``: the relative precision asked for of
    every sigma_max (the CLI's --tol; 1e-4, the table's 4 digits); refinement stops once the
    certified bracket is within it, or Lanczos has converged to it. ``layers``: a regular
    expression; only layers whose name it matches (``re.search``) are analysed. ``fold_bn``:
    analyse conv + attached eval-mode BatchNorm. ``limits``: a gate's sigma_max limit per
    layer name: that layer's refinement also stops once its bracket lies on one side of it
    (``math.inf``: never refined beyond the cheap bracket; a name not listed: refined to tol).
    """

    full: bool = False
    fold_bn: bool = False
    sigma: Literal["exact", "bound"] = "exact"
    layers: str | None = None
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "cpu"
    max_memory: int | None = None
    tol: float = 1e-4
    limits: Mapping[str, float] | None = None

    def engine_options(self, layer: str | None = None) -> EngineOptions:
        """The engine's options (for ``layer``: with its limit, if one is set)."""
        limit = None if self.limits is None or layer is None else self.limits.get(layer)
        return EngineOptions(
            dtype=self.dtype,
            device=self.device,
            max_memory=self.max_memory,
            tol=self.tol,
            limit=limit,
        )


@dataclass(frozen=True)
class LayerGeometry:
    """The displayable geometry of one layer (no weights). Dense layers leave conv fields empty."""

    kernel_shape: tuple[int, ...]
    stride: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    padding_mode: str = ""
    padding: tuple[tuple[int, int], ...] = ()
    transposed: bool = False
    input_size: tuple[int, ...] | None = None
    bn: str | None = None

    @classmethod
    def of(cls, layer: Layer) -> LayerGeometry:
        if not isinstance(layer, ConvLayer):
            return cls(kernel_shape=tuple(int(d) for d in layer.weight.shape))
        return cls(
            kernel_shape=tuple(int(d) for d in layer.kernel.shape),
            stride=layer.stride,
            dilation=layer.dilation,
            groups=layer.groups,
            padding_mode=layer.padding_mode,
            padding=layer.padding,
            transposed=layer.transposed,
            input_size=layer.input_size,
            bn=None if layer.bn is None else (layer.bn.name or "yes"),
        )


@dataclass(frozen=True)
class LayerResult:
    """One analysed layer: its geometry from the IR and what the engine said about it."""

    name: str
    kind: str
    geometry: LayerGeometry
    spectrum: LayerSpectrum


@dataclass(frozen=True)
class NaiveProduct:
    """Product of the per-layer sigma_max. Labelled: it is not a network bound in general."""

    value: float | None
    factors: int
    complete: bool  # every conv/dense layer of the model contributed a finite sigma_max
    label: str = NAIVE_PRODUCT_LABEL


@dataclass(frozen=True)
class ModelSummary:
    layers_analysed: int
    layers_skipped: int
    largest_sigma_max: tuple[str, float] | None
    naive_product: NaiveProduct
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelReport:
    """Everything ``convaudit spectrum`` reports about one model; reporters render it."""

    path: str
    format: str
    input_shapes: Mapping[str, tuple[int | None, ...]]
    layers: tuple[LayerResult, ...]
    skipped: tuple[SkippedLayer, ...]
    summary: ModelSummary
    options: AnalysisOptions
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: the eigensolver backends that computed its spectra (engine.spectrum.eigensolvers)
    eigensolvers: tuple[str, ...] = ()


def select_layers(
    ir: ModelIR, pattern: str | None
) -> tuple[tuple[Layer, ...], tuple[SkippedLayer, ...]]:
    """The layers (and skipped layers) whose names match ``pattern`` (all when None)."""
    if pattern is None:
        return ir.layers, ir.skipped
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"bad --layers regular expression {pattern!r}: {exc}") from None
    layers = tuple(layer for layer in ir.layers if regex.search(layer.name))
    skipped = tuple(s for s in ir.skipped if regex.search(s.name))
    if not layers and not skipped:
        names = ", ".join(layer.name for layer in ir.layers[:5])
        raise ConfigError(
            f"--layers {pattern!r} matches no layer of {ir.path}",
            hint=f"layer names look like: {names}" if names else "the model has no conv layers",
        )
    return layers, skipped


def require_convs(ir: ModelIR, *, dense_suffices: bool = False) -> None:
    """Refuse a model with nothing to audit: no conv layer, found or skipped (with
    ``dense_suffices``, a model of dense layers only passes)."""
    dense = sum(not isinstance(layer, ConvLayer) for layer in ir.layers)
    if len(ir.layers) > dense or ir.skipped or (dense_suffices and dense):
        return
    found = f"only {dense} dense layer{'s' if dense != 1 else ''}" if dense else "no layers"
    raise ModelFileError(
        f"no convolution layers found in {ir.path} ({found})",
        hint=f"`convaudit layers {ir.path}` lists what was read; is this the model you meant?",
    )


#: ops of skipped layers that are dense, not convolutions
_DENSE_OPS = frozenset(
    {"dense", "Dense", "Linear", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}
)


def require_analysed(
    path: str, analysed_kinds: Iterable[str], skipped: Sequence[SkippedLayer]
) -> None:
    """Refuse a model whose convs were all skipped (exit 2 with the reasons): a table of
    skipped layers is no audit, and a gate that checked nothing must not pass."""
    if any(kind != "dense" for kind in analysed_kinds):
        return
    convs = [s for s in skipped if s.op not in _DENSE_OPS]
    if not convs:
        return
    shown = "; ".join(f"{s.name}: {' '.join(s.reason.split())}" for s in convs[:3])
    more = f" (+{len(convs) - 3} more)" if len(convs) > 3 else ""
    raise UnsupportedLayerError(
        f"none of the {len(convs)} conv layer(s) of {path} could be analysed: {shown}{more}",
        hint=f"`convaudit layers {path}` lists what was read and why each was skipped",
    )


def analyse(
    ir: ModelIR | str | Path,
    options: AnalysisOptions | None = None,
    *,
    progress: ModelProgress | None = None,
    executor: LayerExecutor | None = None,
    **overrides: Any,
) -> ModelReport:
    """Analyse every selected conv and dense layer of ``ir`` (a ModelIR, or a path to load).

    Keyword ``overrides`` set AnalysisOptions fields, e.g. ``analyse(ir, fold_bn=True)``.
    A layer the engine cannot analyse exactly becomes a skipped layer with the engine's reason.
    ``executor`` runs the layers (default: here, one after the other; see convaudit.executor).
    """
    opts = dataclasses.replace(options or AnalysisOptions(), **overrides)
    if not isinstance(ir, ModelIR):
        from convaudit.loaders import load_model

        ir = load_model(ir)
    (report,) = analyse_models([ir], opts, progress=progress, executor=executor)
    return report


def analyse_models(
    irs: Sequence[ModelIR],
    options: AnalysisOptions | None = None,
    *,
    progress: ModelProgress | None = None,
    executor: LayerExecutor | None = None,
) -> list[ModelReport]:
    """:func:`analyse` for several models as one batch of layers, so that an executor with
    workers fans out across models too. Reports come back in model order."""
    opts = options or AnalysisOptions()
    selections = [select_layers(ir, opts.layers) for ir in irs]
    layers = [layer for chosen, _ in selections for layer in chosen]
    labels = [
        layer.name if len(irs) == 1 else f"{Path(ir.path).name}: {layer.name}"
        for ir, (chosen, _) in zip(irs, selections, strict=True)
        for layer in chosen
    ]
    outcomes = iter(
        (executor or SEQUENTIAL).map(
            functools.partial(analyse_one, options=opts), layers, progress=progress, labels=labels
        )
    )
    reports = []
    for ir, (chosen, skipped_in_ir) in zip(irs, selections, strict=True):
        results: list[LayerResult] = []
        skipped = list(skipped_in_ir)
        used: set[str] = set()
        for outcome, backends in itertools.islice(outcomes, len(chosen)):
            used.update(backends)
            if isinstance(outcome, SkippedLayer):
                skipped.append(outcome)
            else:
                results.append(outcome)
        reports.append(
            ModelReport(
                path=ir.path,
                format=ir.format,
                input_shapes=dict(ir.input_shapes),
                layers=tuple(results),
                skipped=tuple(skipped),
                summary=summarise(results, skipped, opts, selected=opts.layers is not None),
                options=opts,
                notes=ir.notes,
                eigensolvers=tuple(sorted(used)),
            )
        )
    return reports


def analyse_one(
    layer: Layer, options: AnalysisOptions
) -> tuple[LayerResult | SkippedLayer, tuple[str, ...]]:
    """One layer's analysis: the unit of work an executor runs (it pickles: numpy only), with
    the eigensolver backends that ran for it (recorded where it ran, which may be a worker)."""
    from convaudit.engine.layer import analyse_layer
    from convaudit.engine.spectrum.eigensolvers import recording

    with recording() as used:
        try:
            spectrum = analyse_layer(
                layer,
                full=options.full,
                fold_bn=options.fold_bn,
                sigma=ENGINE_SIGMA[options.sigma],
                options=options.engine_options(layer.name),
            )
        except UnsupportedLayerError as exc:
            return SkippedLayer(layer.name, exc.message, op=layer.kind), tuple(sorted(used))
    return LayerResult(layer.name, layer.kind, LayerGeometry.of(layer), spectrum), tuple(
        sorted(used)
    )


def summarise(
    results: list[LayerResult],
    skipped: list[SkippedLayer],
    opts: AnalysisOptions,
    *,
    selected: bool = False,
) -> ModelSummary:
    """Largest sigma_max and the (labelled) naive product over the analysed layers."""
    sigmas = [
        (r.name, r.spectrum.sigma_max.value)
        for r in results
        if r.spectrum.sigma_max is not None and math.isfinite(r.spectrum.sigma_max.value)
    ]
    complete = len(sigmas) == len(results) and not skipped and not selected
    product = math.prod(value for _, value in sigmas) if sigmas else None
    notes: list[str] = []
    if not complete:
        notes.append("the naive product covers only the layers listed with a finite sigma_max")
    if not opts.fold_bn and any(r.geometry.bn for r in results):
        notes.append("BatchNorm scales are not included (use --fold-bn to include them)")
    if any(r.spectrum.sigma_max is not None and not r.spectrum.sigma_max.exact for r in results):
        notes.append("some factors are upper bounds, not exact values")
    skipped_spectra = sum(
        any(note.startswith(SPECTRUM_SKIPPED) for note in r.spectrum.notes) for r in results
    )
    if skipped_spectra:
        notes.append(
            f"sigma_min, condition and stable rank not computed for {skipped_spectra} "
            f"layer{'s' if skipped_spectra != 1 else ''}: their full spectra are over the "
            "default work budget (--full computes them)"
        )
    largest = max(sigmas, key=lambda item: item[1]) if sigmas else None
    return ModelSummary(
        layers_analysed=len(results),
        layers_skipped=len(skipped),
        largest_sigma_max=largest,
        naive_product=NaiveProduct(product, len(sigmas), complete),
        notes=tuple(notes),
    )
