"""``convaudit check [MODEL...]``: a CI gate on per-layer norms and the network Lipschitz bound.

Exit codes: 0 pass, 1 a limit is exceeded (or a regression against the baseline), 2 could not
run. ``--exit-zero`` turns 1 into 0, never 2. Settings: command line > environment >
``[tool.convaudit]`` / convaudit.toml > defaults (see convaudit.gate.config).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from convaudit import __version__
from convaudit.atomic import check_destination
from convaudit.cli.app import command
from convaudit.cli.cluster import cluster_spec, open_executor
from convaudit.cli.options import (
    ARCH,
    DEVICE,
    FORCE,
    INPUT_SHAPE,
    INPUT_SIZE,
    INPUT_VALUE,
    NOT_AN_INPUT,
    OUTPUT,
    SCHEDULER,
    TOL_HELP,
    TRUST_PICKLE,
    WORKERS,
    check_tol,
    emit,
    load_irs,
    load_options,
    parse_bytes,
    parse_input_shapes,
    resolve_device,
    stdout_width,
)
from convaudit.cli.progress import LazyProgress, stderr_is_tty
from convaudit.errors import ConfigError
from convaudit.gate.config import LIMIT_KEYS, Override, Settings, check_pattern, load_settings
from convaudit.report.formats import CheckFormat
from convaudit.report.formats import check_renderer as renderer

if TYPE_CHECKING:
    from convaudit.distributed import ClusterSpec
    from convaudit.gate.baseline import Baseline
    from convaudit.gate.findings import GateResult, ModelCheck

_OVERRIDE = re.compile(r"^(?P<pattern>.+):(?P<key>" + "|".join(LIMIT_KEYS) + r")=(?P<value>[^=]+)$")


def parse_override(text: str) -> Override:
    """``PATTERN:max-sigma=4`` (PATTERN a glob, or ``re:REGEX``)."""
    m = _OVERRIDE.match(text.strip())
    if m is None:
        raise ConfigError(
            f"bad --override {text!r}",
            hint=f"write LAYER_GLOB:LIMIT=VALUE with LIMIT one of {', '.join(LIMIT_KEYS)}, e.g. 'head.*:max-sigma=4'",
        )
    check_pattern(m["pattern"])
    try:
        value = float(m["value"])
    except ValueError:
        raise ConfigError(f"bad --override {text!r}: {m['value']!r} is not a number") from None
    return Override(m["pattern"], {m["key"]: value})


def _key(path: str, baseline: str | None) -> str:
    from convaudit.gate.baseline import model_key

    return model_key(path, baseline) if baseline else Path(path).as_posix()


def run_check(
    settings: Settings,
    *,
    write_to: Path | None,
    trust_pickle: bool,
    arch: str | None,
    device: str,
    quiet: bool,
    max_memory: int | None = None,
    cluster: ClusterSpec | None = None,
) -> GateResult:
    """Load, measure, (write the baseline,) evaluate. Raises ConvauditError (exit 2)."""
    from convaudit.analysis import AnalysisOptions, require_analysed, require_convs
    from convaudit.audit import AuditOptions, audit_model, audit_models, gate_limits
    from convaudit.gate.baseline import read_baseline, write_baseline
    from convaudit.gate.findings import IgnoreRule, baseline_entries, evaluate

    if not settings.models:
        raise ConfigError(
            "no model to check",
            hint="pass MODEL, or set models = [...] in [tool.convaudit] (pyproject.toml) or convaudit.toml",
        )
    for text in settings.ignore:
        IgnoreRule.parse(text)  # bad rules fail before the long part
    baseline_path = str(write_to) if write_to is not None else settings.baseline
    baseline: Baseline | None = None
    if settings.baseline and write_to is None:
        baseline = read_baseline(settings.baseline)
    shapes = list(settings.input_shape)
    loading = load_options(
        shapes,
        trust_pickle,
        arch,
        input_size=settings.input_size,
        input_value=list(settings.input_value),
    )
    irs = load_irs([Path(m) for m in settings.models], loading)
    for ir in irs:
        require_convs(ir, dense_suffices=True)  # an MLP's Lipschitz bound is still a check
    options = AuditOptions(
        analysis=AnalysisOptions(
            fold_bn=settings.fold_bn,
            sigma=settings.sigma,  # type: ignore[arg-type]
            device=resolve_device(device),  # imports torch: after the files are known good
            max_memory=max_memory,
            tol=check_tol(settings.tol),
        ),
        spectrum=any(
            "min-sigma" in o.limits or "max-condition" in o.limits for o in settings.overrides
        )
        or settings.min_sigma is not None
        or settings.max_condition is not None,
        empirical=settings.empirical,
        input_shapes=parse_input_shapes(shapes),
        input_values=loading.input_values,
        tight_network=settings.max_lipschitz is not None,
    )
    show = not quiet and settings.format == "table" and stderr_is_tty()
    checks: list[ModelCheck] = []
    # Only what decides the gate is refined (a baseline compares values: all to tol). A limit
    # depends on the layer's name alone, so one map serves every model.
    uses_baseline = write_to is not None or baseline is not None
    limits: dict[str, float] | None = None
    if not uses_baseline:
        limits = {}
        for ir in irs:
            limits.update(gate_limits(ir, settings, baseline=False) or {})
    options = dataclasses.replace(
        options, analysis=dataclasses.replace(options.analysis, limits=limits)
    )
    with (
        open_executor(cluster, quiet=quiet) as executor,
        LazyProgress("checking", enabled=show) as progress,
    ):
        if executor is None:
            for ir in irs:
                progress.relabel(Path(ir.path).name)
                key = _key(ir.path, baseline_path)
                checks.append(audit_model(ir, key, options, progress=progress))
        else:  # every layer of every model at once, so that the workers share them all
            budget = executor.task_memory(max_memory)
            analysis = dataclasses.replace(options.analysis, max_memory=budget)
            checks = audit_models(
                irs,
                [_key(ir.path, baseline_path) for ir in irs],
                dataclasses.replace(options, analysis=analysis),
                progress=progress,
                executor=executor,
            )
    for measured in checks:  # a gate that could check none of a model's convs must not pass
        require_analysed(measured.path, (m.kind for m in measured.layers), measured.skipped)
    if write_to is not None:
        write_baseline(write_to, baseline_entries(checks), version=__version__)
        baseline = read_baseline(write_to)
    return evaluate(checks, settings, baseline)


@command("check")
def check(
    models: list[Path] | None = typer.Argument(
        None, metavar="MODEL", help="Model files (default: models = [...] from the config)."
    ),
    max_sigma: float | None = typer.Option(
        None, "--max-sigma", help="Limit on every layer's sigma_max (CA001)."
    ),
    min_sigma: float | None = typer.Option(
        None, "--min-sigma", help="Lower limit on every layer's sigma_min (CA002)."
    ),
    max_condition: float | None = typer.Option(
        None, "--max-condition", help="Limit on every layer's condition number (CA003)."
    ),
    max_lipschitz: float | None = typer.Option(
        None, "--max-lipschitz", help="Limit on the certified network Lipschitz bound (CA010)."
    ),
    override: list[str] | None = typer.Option(
        None,
        "--override",
        metavar="LAYERS:LIMIT=VALUE",
        help="Per-layer limit, e.g. 'head.*:max-sigma=4' (glob, or re:REGEX); repeatable, last match wins.",
    ),
    strict: bool | None = typer.Option(
        None,
        "--strict/--no-strict",
        help="Fail on what could not be checked (CA011, CA100, CA101).",
    ),
    ignore: list[str] | None = typer.Option(
        None,
        "--ignore",
        metavar="CODE[:LAYERS]",
        help="Ignore findings, e.g. CA003 or 'CA001:stem.*'; repeatable.",
    ),
    baseline: Path | None = typer.Option(
        None, "--baseline", metavar="FILE", help="Fail only on regressions against FILE."
    ),
    write_baseline_to: Path | None = typer.Option(
        None,
        "--write-baseline",
        metavar="FILE",
        help="Record the current values to FILE (replaces it).",
    ),
    tolerance: float | None = typer.Option(
        None,
        "--baseline-tolerance",
        help="Relative change allowed against the baseline (default 0.01).",
    ),
    fmt: CheckFormat | None = typer.Option(
        None, "--format", "-f", help="Report format (default table)."
    ),
    output: Path | None = OUTPUT,
    force: bool = FORCE,
    exit_zero: bool | None = typer.Option(
        None,
        "--exit-zero/--no-exit-zero",
        help="Exit 0 even when limits are exceeded (still 2 on errors).",
    ),
    input_shape: list[str] | None = INPUT_SHAPE,
    input_size: str | None = INPUT_SIZE,
    input_value: list[str] | None = INPUT_VALUE,
    config: Path | None = typer.Option(
        None,
        "--config",
        metavar="FILE",
        help="Read settings from FILE instead of searching upwards.",
    ),
    fold_bn: bool | None = typer.Option(
        None, "--fold-bn/--no-fold-bn", help="Per-layer limits apply to conv + its eval BatchNorm."
    ),
    sigma: str | None = typer.Option(
        None,
        "--sigma",
        metavar="exact|bound",
        help="sigma_max refined as far as the gate needs (default), or only its cheap certified bracket.",
    ),
    tol: float | None = typer.Option(None, "--tol", metavar="REL", help=TOL_HELP),
    empirical: bool | None = typer.Option(
        None,
        "--empirical/--no-empirical",
        help="Search for an empirical lower bound (runs the model).",
    ),
    device: str = DEVICE,
    max_memory: str | None = typer.Option(
        None,
        "--max-memory",
        metavar="SIZE",
        help="Working-memory budget, e.g. 2G (default: a quarter of RAM; per worker on a cluster).",
    ),
    trust_pickle: bool = TRUST_PICKLE,
    arch: str | None = ARCH,
    workers: int | None = WORKERS,
    scheduler: str | None = SCHEDULER,
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar, no verdict on stderr."
    ),
) -> None:
    """Fail the build when layers, or the network as a whole, exceed their Lipschitz limits.

    Every layer's sigma_max is of its real operator (padding, input size); the network bound
    is certified for every input, propagated through the model's graph (skip connections
    included); the naive product and an empirical lower bound are shown beside it.
    """
    cli: dict[str, Any] = {
        "models": tuple(str(m) for m in models or ()),
        "max_sigma": max_sigma,
        "min_sigma": min_sigma,
        "max_condition": max_condition,
        "max_lipschitz": max_lipschitz,
        "strict": strict,
        "ignore": tuple(ignore or ()),
        "baseline": None if baseline is None else str(baseline),
        "baseline_tolerance": tolerance,
        "format": None if fmt is None else fmt.value,
        "exit_zero": exit_zero,
        "input_shape": tuple(input_shape or ()),
        "input_size": input_size,
        "input_value": tuple(input_value or ()),
        "fold_bn": fold_bn,
        "sigma": sigma,
        "tol": tol,
        "empirical": empirical,
        "scheduler": scheduler,
    }
    if sigma is not None and sigma not in ("exact", "bound"):
        raise ConfigError(f"--sigma must be exact or bound, got {sigma!r}")
    settings = load_settings(cli, config_file=config)
    if override:  # added after the file's overrides, so they win (last match wins)
        extra = tuple(parse_override(text) for text in override)
        settings = dataclasses.replace(settings, overrides=settings.overrides + extra)
    if output is not None:
        check_destination(
            output, overwrite=force, protect=settings.models, protect_hint=NOT_AN_INPUT
        )
    if write_baseline_to is not None:  # replacing an old baseline is the point; a model never
        check_destination(
            write_baseline_to, overwrite=True, protect=settings.models, protect_hint=NOT_AN_INPUT
        )
    cluster = cluster_spec(workers, scheduler, fallback=settings.scheduler)
    result = run_check(
        settings,
        write_to=write_baseline_to,
        trust_pickle=trust_pickle,
        arch=arch,
        device=device,
        quiet=quiet,
        max_memory=None if max_memory is None else parse_bytes(max_memory),
        cluster=cluster,
    )
    fmt_value = CheckFormat(settings.format)
    render = renderer(fmt_value)
    if fmt_value is CheckFormat.TABLE:
        to_tty = output is None and sys.stdout.isatty()
        text = render(result, width=stdout_width() if output is None else None, color=to_tty)  # type: ignore[call-arg]
    else:
        text = render(result)
    emit(text, output)
    if not quiet and (output is not None or fmt_value is not CheckFormat.TABLE):
        verdict = "passed" if result.passed else "FAILED"
        sys.stderr.write(
            f"convaudit check {verdict}: {result.count('fail')} failing, {result.count('ignored')} ignored\n"
        )
    raise typer.Exit(result.exit_code)
