"""``convaudit layers MODEL``: print the parsed IR (geometry, input sizes, provenance); no maths."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from convaudit.atomic import check_destination
from convaudit.cli.app import command
from convaudit.cli.options import (
    ARCH,
    FORCE,
    INPUT_SHAPE,
    NOT_AN_INPUT,
    OUTPUT,
    TRUST_PICKLE,
    emit,
    load_irs,
    stdout_width,
)


class LayersFormat(str, Enum):
    TABLE = "table"
    JSON = "json"


@command("layers")
def layers(
    models: list[Path] = typer.Argument(
        ..., metavar="MODEL...", help="Model files (ONNX, PyTorch, Keras)."
    ),
    fmt: LayersFormat = typer.Option(LayersFormat.TABLE, "--format", "-f", help="Output format."),
    output: Path | None = OUTPUT,
    force: bool = FORCE,
    input_shape: list[str] | None = INPUT_SHAPE,
    trust_pickle: bool = TRUST_PICKLE,
    arch: str | None = ARCH,
) -> None:
    """Print the parsed layers (geometry, input sizes, provenance); computes nothing.

    Each conv and dense layer as convaudit read it: kernel shape, stride, dilation, groups,
    padding, input size, attached BatchNorm and where its weights live. Use it to check a file
    by eye before trusting the numbers.
    """
    if output is not None:
        check_destination(output, overwrite=force, protect=models, protect_hint=NOT_AN_INPUT)
    irs = load_irs(models, input_shape, trust_pickle, arch)
    if fmt is LayersFormat.JSON:
        from convaudit.report.json import render_layers_json

        text = render_layers_json(irs)
    else:
        from convaudit.report.table import render_layers_table

        to_tty = output is None and sys.stdout.isatty()
        text = render_layers_table(
            irs, width=stdout_width() if output is None else None, color=to_tty
        )
    emit(text, output)
