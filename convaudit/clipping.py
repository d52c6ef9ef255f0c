"""Model-level clipping: select layers, project each onto its ball, write a copy, check it.

``clip_model(path, bound, ...)`` (public as ``convaudit.clip``):

1. load the model, select the layers (every conv for ``bound``; ``layers`` regex; per-layer
   bounds from ``bound_for`` (regex, value) rules, the first match winning; dense layers when
   named by a rule or with ``include_dense``);
2. project each selected layer (:func:`convaudit.engine.projection.layer.project_layer`: the
   guarantee covers the layer's REAL operator, e.g. zero padding on the input size given);
3. unless ``dry_run``, write a copy with only those kernels changed, atomically;
4. post-check: reload the written file with convaudit's own loader, re-measure every clipped
   layer, and report whether each is within its bound. A failed check leaves no file behind.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from convaudit.atomic import atomic_path, check_destination
from convaudit.engine.layer import analyse_layer, layer_upper_bound
from convaudit.engine.projection.any_size import CERTIFY_TOL
from convaudit.engine.projection.kernel import (
    DEFAULT_TOL,
    METHODS,
    ProjectionOptions,
    project_matrix,
)
from convaudit.engine.projection.layer import project_layer
from convaudit.engine.results import EngineOptions, ProgressCallback
from convaudit.errors import ConfigError, ConvauditError
from convaudit.executor import SEQUENTIAL, LayerExecutor
from convaudit.ir import ConvLayer, DenseLayer, Layer, ModelIR, SkippedLayer
from convaudit.loaders import LoadOptions, load_model, write_kernels

BoundRule = tuple[str, float]  # (regex searched in the layer name, bound)


@dataclass(frozen=True)
class ClipOptions:
    bound: float | None = None
    bound_for: tuple[BoundRule, ...] = ()
    layers: str | None = None
    include_dense: bool = False
    method: str = "alternating"
    tol: float = DEFAULT_TOL
    max_iter: int | None = None
    fold_bn: bool = False
    exact: bool = False
    device: str = "cpu"
    max_memory: int | None = None

    @property
    def projection(self) -> ProjectionOptions:
        return ProjectionOptions(self.method, self.tol, self.max_iter, self.device, self.max_memory)


@dataclass(frozen=True)
class LayerClip:
    """One layer's outcome. ``sigma_*`` are certified upper bounds of the real operator
    (``operator`` says which); ``exact_after`` is the converged exact σ_max with ``exact``."""

    name: str
    kind: str
    bound: float
    method: str
    iterations: int
    sigma_before: float
    sigma_after: float
    relative_change: float
    unchanged: bool
    converged: bool
    operator: str
    bn_folded: bool = False
    exact_after: float | None = None
    rechecked: float | None = None  # re-measured from the written file (None: not written)

    @property
    def within_bound(self) -> bool:
        measured = self.rechecked if self.rechecked is not None else self.sigma_after
        return measured <= self.bound


@dataclass(frozen=True)
class ClipReport:
    source: str
    output: str | None
    method: str
    layers: tuple[LayerClip, ...]
    skipped: tuple[SkippedLayer, ...]
    written: bool
    checked: bool

    @property
    def ok(self) -> bool:
        return all(layer.within_bound for layer in self.layers)


def parse_bound_rule(text: str) -> BoundRule:
    """``REGEX=VALUE`` (the last ``=`` splits, so the regex may contain ``=``)."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern:
        raise ConfigError(
            f"bad --bound-for {text!r}: expected REGEX=VALUE",
            hint="e.g. --bound-for 'layer4\\..*=2.0'",
        )
    return _compiled(pattern, "--bound-for"), _positive(value, f"--bound-for {text!r}")


def _compiled(pattern: str, what: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"bad regular expression in {what}: {pattern!r} ({exc})") from None
    return pattern


def _positive(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{what}: the bound must be a positive finite number, got {value!r}")
    return number


def check_options(options: ClipOptions) -> None:
    """Every option error, before any (possibly slow) loading."""
    if options.method not in METHODS:
        raise ConfigError(
            f"unknown method {options.method!r}", hint=f"choose one of {', '.join(METHODS)}"
        )
    if options.bound is None and not options.bound_for:
        raise ConfigError(
            "no bound given", hint="pass --bound VALUE and/or --bound-for REGEX=VALUE"
        )
    if options.bound is not None:
        _positive(options.bound, "--bound")
    if options.layers:
        _compiled(options.layers, "--layers")
    if not options.tol >= 0:
        raise ConfigError(f"--tol must be >= 0, got {options.tol}")


def select_layers(ir: ModelIR, options: ClipOptions) -> list[tuple[Layer, float]]:
    """The layers to clip with their bounds, in model order."""
    check_options(options)
    only = re.compile(options.layers) if options.layers else None
    chosen: list[tuple[Layer, float]] = []
    for layer in ir.layers:
        if only is not None and not only.search(layer.name):
            continue
        rule = next((b for p, b in options.bound_for if re.search(p, layer.name)), None)
        wanted = isinstance(layer, ConvLayer) or options.include_dense or rule is not None
        bound = rule if rule is not None else options.bound
        if wanted and bound is not None:
            chosen.append((layer, bound))
    if not chosen:
        raise ConfigError(
            "no layer selected for clipping",
            hint="check --layers / --bound-for against the names `convaudit layers MODEL` prints",
        )
    return chosen


def _exact_sigma(layer: ConvLayer, fold_bn: bool, options: ClipOptions) -> float | None:
    """σ_max of the real operator by the engine's exact method (Lanczos / FFT); None when it
    did not converge (the certified bound still holds)."""
    engine = EngineOptions(device=options.device, max_memory=options.max_memory)
    norm = analyse_layer(layer, fold_bn=fold_bn, sigma="exact", options=engine).sigma_max
    return norm.value if norm is not None and norm.exact else None


def _clip_one(
    layer: Layer, bound: float, options: ClipOptions
) -> tuple[np.ndarray | None, LayerClip]:
    fold = options.fold_bn and isinstance(layer, ConvLayer) and layer.bn is not None
    try:
        if isinstance(layer, DenseLayer):
            dtype = layer.provenance.dtype if layer.provenance else None
            res = project_matrix(layer.weight, bound, storage_dtype=dtype)
            stats, operator, kernel = res.stats, "dense (exact)", res.kernel
            before, after = stats.sigma_before, stats.sigma_after
        else:
            proj = project_layer(layer, bound, options.projection, fold_bn=fold)
            stats, operator, kernel = proj.stats, proj.target.statement, proj.kernel
            before, after = proj.sigma_before, proj.sigma_after
    except ConvauditError as exc:
        if layer.name not in exc.message:
            exc.message = f"layer {layer.name}: {exc.message}"
        if exc.hint is None:
            exc.hint = "leave the layer out with --layers REGEX"
        raise
    clip = LayerClip(
        name=layer.name,
        kind=layer.kind,
        bound=bound,
        method="svd" if isinstance(layer, DenseLayer) else stats.method,
        iterations=stats.iterations,
        sigma_before=before,
        sigma_after=after,
        relative_change=stats.relative_change,
        unchanged=stats.unchanged,
        converged=stats.converged,
        operator=operator,
        bn_folded=fold,
    )
    if options.exact and isinstance(layer, ConvLayer):
        clip = replace(clip, exact_after=_exact_sigma(replace(layer, kernel=kernel), fold, options))
    return (None if stats.unchanged else kernel), clip


def clip_ir(
    ir: ModelIR,
    options: ClipOptions,
    progress: ProgressCallback | None = None,
    *,
    executor: LayerExecutor | None = None,
) -> tuple[dict[str, np.ndarray], list[LayerClip]]:
    """Project the selected layers; returns the new kernels (changed layers only) and the rows."""
    chosen = select_layers(ir, options)
    outcomes = (executor or SEQUENTIAL).map(
        functools.partial(clip_one, options=options),
        chosen,
        progress=progress,
        labels=[layer.name for layer, _ in chosen],
    )
    updates = {row.name: kernel for kernel, row in outcomes if kernel is not None}
    return updates, [row for _, row in outcomes]


def clip_one(job: tuple[Layer, float], options: ClipOptions) -> tuple[np.ndarray | None, LayerClip]:
    """One layer's projection onto its bound: the unit of work an executor runs."""
    layer, bound = job
    return _clip_one(layer, bound, options)


def recheck(
    path: Path,
    rows: Sequence[LayerClip],
    options: ClipOptions,
    load_options: LoadOptions,
    *,
    executor: LayerExecutor | None = None,
) -> list[LayerClip]:
    """Reload ``path`` with convaudit's loader and re-measure each clipped layer with the
    engine's certified upper bound (written independently of the projection code)."""
    ir = load_model(path, load_options)
    engine = EngineOptions(device=options.device, max_memory=options.max_memory, tol=CERTIFY_TOL)
    bounds = (executor or SEQUENTIAL).map(
        functools.partial(_recheck_one, options=engine),
        [(ir.layer(row.name), row.bn_folded) for row in rows],
    )
    return [replace(row, rechecked=bound) for row, bound in zip(rows, bounds, strict=True)]


def _recheck_one(job: tuple[Layer, bool], options: EngineOptions) -> float:
    layer, fold_bn = job
    return layer_upper_bound(layer, fold_bn=fold_bn, options=options).upper


class _CheckFailed(Exception):
    def __init__(self, rows: list[LayerClip]) -> None:
        self.rows = rows


def clip_model(
    path: str | Path,
    bound: float | None = None,
    *,
    output: str | Path | None = None,
    in_place: bool = False,
    force: bool = False,
    dry_run: bool = False,
    options: ClipOptions | None = None,
    load_options: LoadOptions | None = None,
    progress: ProgressCallback | None = None,
    executor: LayerExecutor | None = None,
) -> ClipReport:
    """Clip a model file and write the result (see the module docstring).

    ``bound`` overrides ``options.bound``. The input is never modified unless ``in_place``;
    an existing ``output`` is replaced only with ``force``. ``executor`` runs the per-layer
    projections and re-measurements (default: here; see convaudit.executor).
    """
    options = options or ClipOptions()
    if bound is not None:
        options = replace(options, bound=bound)
    check_options(options)
    load_options = load_options or LoadOptions()
    source = Path(path)
    dest = _destination(source, output, in_place=in_place, force=force, dry_run=dry_run)
    ir = load_model(source, load_options)
    updates, rows = clip_ir(ir, options, progress, executor=executor)
    if dest is None or (in_place and not updates):  # nothing to write
        where = None if dest is None else str(dest)
        return ClipReport(str(source), where, options.method, tuple(rows), ir.skipped, False, False)
    try:
        with atomic_path(dest) as tmp:
            write_kernels(ir, tmp, updates)
            rows = recheck(tmp, rows, options, load_options, executor=executor)
            if not all(row.within_bound for row in rows):
                raise _CheckFailed(rows)
    except _CheckFailed as failed:
        return ClipReport(
            str(source), str(dest), options.method, tuple(failed.rows), ir.skipped, False, True
        )
    return ClipReport(str(source), str(dest), options.method, tuple(rows), ir.skipped, True, True)


def _destination(
    source: Path, output: str | Path | None, *, in_place: bool, force: bool, dry_run: bool
) -> Path | None:
    if in_place and output is not None:
        raise ConfigError("give either -o/--output or --in-place, not both")
    if dry_run:
        return None
    if in_place:
        return check_destination(source, overwrite=True)
    if output is None:
        raise ConfigError(
            "no output file", hint="pass -o OUT (or --in-place to replace the input, or --dry-run)"
        )
    return check_destination(output, overwrite=force, protect=[source])
