"""``convaudit layers MODEL``: print the parsed IR (geometry, input sizes, provenance); no maths."""

from __future__ import annotations

import shutil
import sys
from enum import Enum
from pathlib import Path

import typer

from convaudit.atomic import atomic_open, check_destination
from convaudit.cli.app import command
from convaudit.cli.options import parse_input_shapes
from convaudit.ir import ModelIR
from convaudit.loaders.interface import LoadOptions

#: hint when -o (or another output) names one of the input models: a report never replaces one
NOT_AN_INPUT = "choose another output path; a report never replaces an input model"

# Options shared with `spectrum` (defined once so help texts stay in step).
INPUT_SHAPE = typer.Option(
    None,
    "--input-shape",
    metavar="NAME=1,3,224,224",
    help="Fix a model input's full shape (batch and channels included); repeatable.",
)
TRUST_PICKLE = typer.Option(
    False,
    "--trust-pickle",
    help="Allow full unpickling of a PyTorch file. This RUNS CODE from the file: trusted files only.",
)
ARCH = typer.Option(
    None,
    "--arch",
    metavar="MODULE:CALLABLE",
    help="Build this architecture for a bare state_dict, to read every conv's geometry and input size.",
)
OUTPUT = typer.Option(
    None, "-o", "--output", help="Write the report to FILE (atomically) instead of stdout."
)
FORCE = typer.Option(False, "--force", help="Replace existing output files.")


class LayersFormat(str, Enum):
    TABLE = "table"
    JSON = "json"


def load_irs(
    models: list[Path], input_shape: list[str] | None, trust_pickle: bool, arch: str | None
) -> list[ModelIR]:
    from convaudit.loaders import load_model

    options = LoadOptions(
        input_shapes=parse_input_shapes(input_shape), trust_pickle=trust_pickle, arch=arch
    )
    return [load_model(path, options) for path in models]


def stdout_width() -> int | None:
    """The terminal's width when stdout is one; None (a fixed wide layout) otherwise."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def emit(text: str, output: Path | None) -> None:
    """The report to ``output`` (atomic; destination already checked) or to stdout."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_open(output) as f:
        f.write(text)


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
