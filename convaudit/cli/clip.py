"""``convaudit clip MODEL --bound C -o OUT``: project every conv onto {σ_max ≤ C} and write a copy.

Exit codes: 0 every clipped layer re-measured within its bound in the written file; 1 the
post-check failed (nothing written); 2 bad input or a layer that cannot be clipped.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from convaudit.cli.app import command
from convaudit.cli.cluster import SCHEDULER_ENV, cluster_spec, configured_scheduler, open_executor
from convaudit.cli.options import (
    ARCH,
    INPUT_SHAPE,
    INPUT_SIZE,
    INPUT_VALUE,
    SCHEDULER,
    TRUST_PICKLE,
    WORKERS,
    load_options,
    parse_bytes,
    resolve_device,
    stdout_width,
)
from convaudit.cli.progress import LazyProgress, stderr_is_tty
from convaudit.errors import EXIT_CHECK_FAILED, ConfigError
from convaudit.gate.config import load_toml

if TYPE_CHECKING:
    from convaudit.clipping import ClipReport

#: the projection's tolerance when neither --tol nor the config file sets one (a test checks
#: that it is the engine's DEFAULT_TOL; importing that here would import torch for --help)
DEFAULT_TOL = 1e-3


class Method(str, Enum):
    ALTERNATING = "alternating"
    DYKSTRA = "dykstra"
    RESCALE = "rescale"


class ClipFormat(str, Enum):
    TABLE = "table"
    JSON = "json"


_CONFIG_KEYS = {
    "bound",
    "bound-for",
    "layers",
    "method",
    "tol",
    "max-iter",
    "fold-bn",
    "include-dense",
    "exact",
    "scheduler",
}


def read_clip_config(path: Path) -> dict[str, Any]:
    """A TOML file with the options as kebab-case keys, at top level or under ``[clip]``;
    ``bound-for`` is a table ``{ "REGEX" = VALUE }``."""

    data = load_toml(path)
    table = data.get("clip", data)
    unknown = sorted(set(table) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}",
            hint=f"known keys: {', '.join(sorted(_CONFIG_KEYS))}",
        )
    rules = table.get("bound-for", {})
    if not isinstance(rules, dict):
        raise ConfigError(f"{path}: bound-for must be a table of REGEX = VALUE")
    scheduler = table.get("scheduler")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler):
        raise ConfigError(f"{path}: scheduler must be an address such as tcp://host:8786")
    table = dict(table)
    table["bound-for"] = [f"{k}={v}" for k, v in rules.items()]
    return table


@command("clip")
def clip(
    model: Path = typer.Argument(..., metavar="MODEL", help="Model file (ONNX, PyTorch, Keras)."),
    bound: float | None = typer.Option(None, "--bound", help="sigma_max bound for every conv."),
    bound_for: list[str] | None = typer.Option(
        None,
        "--bound-for",
        metavar="REGEX=VALUE",
        help="Bound for the layers whose name matches REGEX (first match wins); repeatable. "
        "Also selects dense layers.",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        metavar="FILE.toml",
        help="Read these options from a TOML file ([clip] table).",
    ),
    layers: str | None = typer.Option(
        None, "--layers", metavar="REGEX", help="Only clip layers whose name matches REGEX."
    ),
    include_dense: bool = typer.Option(
        False, "--include-dense", help="Apply --bound to dense layers too (exact SVD clip)."
    ),
    method: Method = typer.Option(Method.ALTERNATING, "--method", help="Projection method."),
    tol: float | None = typer.Option(
        None,
        "--tol",
        help=f"Stop when sigma_max <= bound*(1+tol); then rescale the last bit (default {DEFAULT_TOL:g}).",
    ),
    max_iter: int | None = typer.Option(None, "--max-iter", help="Iteration cap per layer."),
    exact: bool = typer.Option(
        False, "--exact", help="Also report the exact sigma_max of each clipped layer."
    ),
    fold_bn: bool = typer.Option(
        False,
        "--fold-bn",
        help="Clip each conv together with its eval-mode BatchNorm (written into the conv; BN untouched).",
    ),
    input_shape: list[str] | None = INPUT_SHAPE,
    input_size: str | None = INPUT_SIZE,
    input_value: list[str] | None = INPUT_VALUE,
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the clipped model here."
    ),
    in_place: bool = typer.Option(False, "--in-place", help="Replace the input file (atomically)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing -o file."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Report what would change; write nothing."
    ),
    fmt: ClipFormat = typer.Option(
        ClipFormat.TABLE, "--format", "-f", help="Report format (stdout)."
    ),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda[:N]."),
    max_memory: str | None = typer.Option(
        None, "--max-memory", metavar="SIZE", help="Working-memory budget per chunk, e.g. 1G."
    ),
    trust_pickle: bool = TRUST_PICKLE,
    arch: str | None = ARCH,
    workers: int | None = WORKERS,
    scheduler: str | None = SCHEDULER,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or messages."),
) -> None:
    """Project conv (and dense) layers onto {sigma_max <= bound} and write a checked copy.

    The guarantee is for each layer's REAL operator: zero-padded layers are projected on the
    enlarged grid whose circular sigma_max certifies the zero-padded one (needs --input-shape
    for models without fixed input sizes). After writing, the file is reloaded and re-measured.
    """
    from convaudit.clipping import ClipOptions, check_options, clip_model, parse_bound_rule

    file_opts = read_clip_config(config) if config is not None else {}
    rules = [
        parse_bound_rule(text) for text in [*(bound_for or []), *file_opts.get("bound-for", [])]
    ]
    options = ClipOptions(
        bound=bound if bound is not None else file_opts.get("bound"),
        bound_for=tuple(rules),
        layers=layers if layers is not None else file_opts.get("layers"),
        include_dense=include_dense or bool(file_opts.get("include-dense", False)),
        method=method.value
        if method is not Method.ALTERNATING
        else str(file_opts.get("method", method.value)),
        tol=tol if tol is not None else float(file_opts.get("tol", DEFAULT_TOL)),
        max_iter=max_iter if max_iter is not None else file_opts.get("max-iter"),
        fold_bn=fold_bn or bool(file_opts.get("fold-bn", False)),
        exact=exact or bool(file_opts.get("exact", False)),
        device=resolve_device(device),
        max_memory=None if max_memory is None else parse_bytes(max_memory),
    )
    loading = load_options(
        input_shape, trust_pickle, arch, input_size=input_size, input_value=input_value
    )
    check_options(options)  # every option error before a cluster starts
    fallback = None
    if not workers and not scheduler:
        fallback = os.environ.get(SCHEDULER_ENV) or file_opts.get("scheduler")
        fallback = fallback or configured_scheduler()
    cluster = cluster_spec(workers, scheduler, fallback=fallback)
    show = not quiet and fmt is ClipFormat.TABLE and stderr_is_tty()
    with (
        open_executor(cluster, quiet=quiet) as executor,
        LazyProgress("clipping", enabled=show) as progress,
    ):
        if executor is not None:
            budget = executor.task_memory(options.max_memory)
            options = dataclasses.replace(options, max_memory=budget)
        report = clip_model(
            model,
            output=output,
            in_place=in_place,
            force=force,
            dry_run=dry_run,
            options=options,
            load_options=loading,
            progress=progress,
            executor=executor,
        )
    if fmt is ClipFormat.JSON:
        from convaudit.report.clip_json import render_clip_json

        text = render_clip_json(report)
    else:
        from convaudit.report.clip_table import render_clip_table

        text = render_clip_table(report, width=stdout_width())
    sys.stdout.write(text)
    sys.stdout.flush()
    _summary(report, quiet=quiet)
    if not report.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _summary(report: ClipReport, *, quiet: bool) -> None:
    over = [r.name for r in report.layers if not r.within_bound]
    if over:
        sys.stderr.write(
            f"error: {len(over)} layer(s) above their bound after re-measuring "
            f"the written file: {', '.join(over)}; nothing was written\n"
        )
        return
    if quiet:
        return
    changed = sum(not r.unchanged for r in report.layers)
    if report.written:
        sys.stderr.write(
            f"wrote {report.output}: {changed} of {len(report.layers)} layer(s) changed; "
            "reloaded and re-measured: every layer within its bound\n"
        )
    elif report.output is None:
        sys.stderr.write(
            f"dry run: {changed} of {len(report.layers)} layer(s) would change; nothing written\n"
        )
    else:
        sys.stderr.write("every layer already within its bound; the input was left as it is\n")
