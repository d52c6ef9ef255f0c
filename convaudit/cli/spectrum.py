"""``convaudit spectrum MODEL...``: the singular values of every conv layer, one row per layer."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from convaudit.atomic import atomic_open, check_destination
from convaudit.cli.app import command, debug_enabled
from convaudit.cli.cluster import cluster_spec, configured_scheduler, open_executor
from convaudit.cli.options import (
    ARCH,
    DEFAULT_TOL,
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
    resolve_device,
    stdout_width,
)
from convaudit.cli.progress import LazyProgress, stderr_is_tty
from convaudit.report.formats import Format, renderer

if TYPE_CHECKING:
    from convaudit.analysis import ModelReport


class SigmaMode(str, Enum):
    EXACT = "exact"
    BOUND = "bound"


class Dtype(str, Enum):
    FLOAT32 = "float32"
    FLOAT64 = "float64"


def save_spectra(reports: Sequence[ModelReport], dest: Path) -> None:
    """Every layer's singular values as one array each, plus a ``__meta__`` JSON entry.

    Keys are layer names (``"<model index>:<layer>"`` when several models are given).
    """
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, object]] = {}
    for i, report in enumerate(reports):
        for result in report.layers:
            values = result.spectrum.singular_values
            if values is None:
                continue
            key = result.name if len(reports) == 1 else f"{i}:{result.name}"
            arrays[key] = np.asarray(values)
            grid = result.spectrum.spectrum_grid
            meta[key] = {
                "model": report.path,
                "layer": result.name,
                "operator": result.spectrum.spectrum_operator,
                "grid": None if grid is None else list(grid),
            }
    arrays["__meta__"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_open(dest, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def _debug_eigensolvers(device: str, reports: Sequence[ModelReport]) -> None:
    from convaudit.engine.spectrum.eigensolvers import debug_lines

    used = {name for report in reports for name in report.eigensolvers}
    for line in debug_lines(device, used):
        sys.stderr.write(f"debug: {line}\n")


@command("spectrum")
def spectrum(
    models: list[Path] = typer.Argument(
        ..., metavar="MODEL...", help="Model files (ONNX, PyTorch, Keras)."
    ),
    fmt: Format = typer.Option(
        Format.TABLE,
        "--format",
        "-f",
        help="Report format; html is one self-contained page with the figures (use with -o).",
    ),
    output: Path | None = OUTPUT,
    force: bool = FORCE,
    full: bool = typer.Option(
        False, "--full", help="Include every singular value in the JSON report."
    ),
    spectra_file: Path | None = typer.Option(
        None,
        "--save-spectra",
        metavar="FILE.npz",
        help="Save each layer's full spectrum (numpy .npz).",
    ),
    input_shape: list[str] | None = INPUT_SHAPE,
    device: str = DEVICE,
    dtype: Dtype = typer.Option(Dtype.FLOAT64, "--dtype", help="Working precision."),
    fold_bn: bool = typer.Option(
        False, "--fold-bn", help="Analyse each conv together with its eval-mode BatchNorm."
    ),
    layers: str | None = typer.Option(
        None,
        "--layers",
        metavar="REGEX",
        help="Only layers whose name matches this regular expression.",
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        metavar="FILE",
        help="Draw the spectra to a .png, .svg or .pdf (needs convaudit\\[plot]).",
    ),
    sigma: SigmaMode = typer.Option(
        SigmaMode.EXACT,
        "--sigma",
        help="exact: sigma_max of the real operator (padding, input size), refined to --tol; bound: its cheap certified bracket, not refined.",
    ),
    max_memory: str | None = typer.Option(
        None,
        "--max-memory",
        metavar="SIZE",
        help="Working-memory budget, e.g. 2G (default: a quarter of RAM).",
    ),
    input_size: str | None = INPUT_SIZE,
    input_value: list[str] | None = INPUT_VALUE,
    tol: float = typer.Option(DEFAULT_TOL, "--tol", metavar="REL", help=TOL_HELP),
    trust_pickle: bool = TRUST_PICKLE,
    arch: str | None = ARCH,
    workers: int | None = WORKERS,
    scheduler: str | None = SCHEDULER,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Singular values of every conv layer, one row per layer.

    sigma_max is of the layer's real operator (its padding and input size), exact or a certified
    upper bound as labelled; sigma_min, condition number and stable rank are of the circular
    operator on the layer's grid (the paper's characterisation).
    """
    # Fail on every bad option before the (possibly long) computation.
    for dest in (output, spectra_file, plot):
        if dest is not None:
            check_destination(dest, overwrite=force, protect=models, protect_hint=NOT_AN_INPUT)
    if plot is not None:
        from convaudit.report.plot import plot_format, require_matplotlib

        plot_format(plot)
        require_matplotlib()  # the install hint now, not after the computation
    from convaudit.analysis import (
        AnalysisOptions,
        analyse,
        analyse_models,
        require_analysed,
        require_convs,
    )
    from convaudit.report.interface import RenderOptions

    memory = None if max_memory is None else parse_bytes(max_memory)
    loading = load_options(
        input_shape, trust_pickle, arch, input_size=input_size, input_value=input_value
    )
    irs = load_irs(models, loading)
    for ir in irs:
        require_convs(ir)  # before computing anything
    options = AnalysisOptions(
        # the html report draws every layer's sorted spectrum, as --plot does
        full=full or plot is not None or spectra_file is not None or fmt is Format.HTML,
        fold_bn=fold_bn,
        sigma=sigma.value,
        layers=layers,
        dtype=dtype.value,
        device=resolve_device(device),  # imports torch: after the files are known to be good
        max_memory=memory,
        tol=check_tol(tol),
    )
    cluster = cluster_spec(
        workers, scheduler, fallback=None if workers or scheduler else configured_scheduler()
    )

    show_progress = not quiet and not fmt.machine and stderr_is_tty()
    reports: list[ModelReport] = []
    with (
        open_executor(cluster, quiet=quiet) as executor,
        LazyProgress("analysing", enabled=show_progress) as progress,
    ):
        if executor is None:
            for ir in irs:
                progress.relabel(Path(ir.path).name)
                reports.append(analyse(ir, options, progress=progress))
        else:  # every layer of every model at once, so that the workers share them all
            budget = executor.task_memory(options.max_memory)
            reports = analyse_models(
                irs,
                dataclasses.replace(options, max_memory=budget),
                progress=progress,
                executor=executor,
            )
    if debug_enabled():
        _debug_eigensolvers(options.device, reports)
    for report in reports:
        require_analysed(report.path, (r.kind for r in report.layers), report.skipped)

    to_tty = output is None and sys.stdout.isatty() and not fmt.machine
    render_options = RenderOptions(
        full=full, width=stdout_width() if output is None else None, color=to_tty
    )
    emit(renderer(fmt)(reports, render_options), output)
    if spectra_file is not None:
        save_spectra(reports, spectra_file)
    if plot is not None:
        from convaudit.report.plot import write_plot

        write_plot(reports, plot)
