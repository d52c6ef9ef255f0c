"""What the commands share: their common options, parsing of option values (input shapes, sizes
and values, devices, byte sizes), reading the models and writing the report.

Imported by every command module when the CLI starts, so it imports nothing heavy (numpy, torch,
the loaders) at the top: ``--help``, ``--version`` and the error paths start instantly.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from convaudit.atomic import atomic_open
from convaudit.errors import ConfigError, InputShapeError

if TYPE_CHECKING:
    import numpy as np

    from convaudit.ir import ModelIR
    from convaudit.loaders.interface import LoadOptions


def parse_input_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``NAME=1,3,224,224`` (repeatable) or a bare ``1,3,224,224`` for a single-input model."""
    shapes: dict[str, tuple[int, ...]] = {}
    for raw in values or []:
        name, sep, dims = raw.rpartition("=")
        if not sep:
            name, dims = "", raw
        try:
            shape = tuple(int(d) for d in re.split(r"[,x×]", dims.strip()) if d.strip())
        except ValueError:
            raise InputShapeError(
                f"bad --input-shape {raw!r}: dimensions must be integers",
                hint="write it as NAME=1,3,224,224 (or 1,3,224,224 for a single-input model)",
            ) from None
        if not shape or any(d <= 0 for d in shape):
            raise InputShapeError(
                f"bad --input-shape {raw!r}: need positive integer dimensions",
                hint="write it as NAME=1,3,224,224",
            )
        if name in shapes and shapes[name] != shape:
            raise InputShapeError(
                f"--input-shape gives two different shapes for {name or 'the input'!r}"
            )
        shapes[name] = shape
    return shapes


def parse_input_size(text: str | None) -> tuple[int, ...] | None:
    """``640x640`` (H x W; ``16000`` for 1-D, ``DxHxW`` for 3-D) -> (640, 640)."""
    if text is None:
        return None
    parts = re.split(r"[x×,]", text.strip().lower())
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if not 1 <= len(size) <= 3 or any(d <= 0 for d in size):
        raise InputShapeError(
            f"bad --input-size {text!r}: need 1 to 3 positive integers",
            hint="write it as HxW, e.g. --input-size 640x640 (a length for 1-D inputs)",
        )
    return size


def _value(raw: str) -> int | float | bool:
    word = raw.strip().lower()
    if word in ("true", "false"):
        return word == "true"
    try:
        return int(word)
    except ValueError:
        return float(word)


def parse_input_values(values: list[str] | None) -> dict[str, np.ndarray]:
    """``NAME=VALUE`` (repeatable): a number, ``true``/``false``, or a comma list of numbers."""
    import numpy as np

    out: dict[str, np.ndarray] = {}
    for raw in values or []:
        name, sep, text = raw.partition("=")
        name = name.strip()
        try:
            items = [_value(v) for v in text.split(",")] if sep and text.strip() else []
        except ValueError:
            items = []
        if not name or not items:
            raise InputShapeError(
                f"bad --input-value {raw!r}: need NAME=VALUE with a number (or a comma list)",
                hint="e.g. --input-value sr=16000",
            )
        value = np.asarray(items[0] if len(items) == 1 else items)
        if name in out and not np.array_equal(out[name], value):
            raise InputShapeError(f"--input-value gives two different values for {name!r}")
        out[name] = value
    return out


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
}


def parse_bytes(text: str) -> int:
    """'512M', '2GiB', '1073741824' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"bad memory size {text!r}", hint="use e.g. 512M, 4G or a byte count")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


#: the relative precision of sigma_max asked for by default: the table prints 4 digits
DEFAULT_TOL = 1e-4


def check_tol(tol: float) -> float:
    """A relative precision must lie in (0, 1)."""
    if not 0 < tol < 1:
        raise ConfigError(
            f"--tol must be a relative precision between 0 and 1, got {tol:g}",
            hint="e.g. --tol 1e-4 (the default) or --tol 1e-6",
        )
    return tol


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; validate explicit choices."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was requested but torch sees no CUDA device",
            hint="use --device cpu or auto",
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    return device


#: hint when -o (or another output) names one of the input models: a report never replaces one
NOT_AN_INPUT = "choose another output path; a report never replaces an input model"

# Options shared with `spectrum` (defined once so help texts stay in step).
INPUT_SHAPE = typer.Option(
    None,
    "--input-shape",
    metavar="NAME=1,3,224,224",
    help="Fix a model input's full shape (batch and channels included); repeatable.",
)
INPUT_SIZE = typer.Option(
    None,
    "--input-size",
    metavar="HxW",
    help="Spatial size of the model's one image-like input, e.g. 640x640 (batch 1, channels from the graph).",
)
INPUT_VALUE = typer.Option(
    None,
    "--input-value",
    metavar="NAME=VALUE",
    help="Give an ONNX input a value, e.g. sr=16000 (decides If branches); repeatable.",
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
TOL_HELP = (
    "Relative precision of every sigma_max: refined until its certified bracket is within it, "
    "or Lanczos has converged to it (default 1e-4; 1e-6 for the precision of earlier releases)."
)
OUTPUT = typer.Option(
    None, "-o", "--output", help="Write the report to FILE (atomically) instead of stdout."
)
FORCE = typer.Option(False, "--force", help="Replace existing output files.")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda[:N].")
WORKERS = typer.Option(
    None,
    "--workers",
    metavar="N",
    help="Run on a local Dask cluster of N worker processes (needs convaudit\\[distributed]).",
)
SCHEDULER = typer.Option(
    None,
    "--scheduler",
    metavar="ADDRESS",
    help="Run on the Dask cluster at ADDRESS, e.g. tcp://host:8786 (also CONVAUDIT_SCHEDULER).",
)


def load_options(
    input_shape: list[str] | None,
    trust_pickle: bool = False,
    arch: str | None = None,
    *,
    input_size: str | None = None,
    input_value: list[str] | None = None,
) -> LoadOptions:
    """The loader options from the shared command-line options' raw values."""
    from convaudit.loaders.interface import LoadOptions

    return LoadOptions(
        input_shapes=parse_input_shapes(input_shape),
        trust_pickle=trust_pickle,
        arch=arch,
        input_size=parse_input_size(input_size),
        input_values=parse_input_values(input_value),
    )


def load_irs(models: list[Path], options: LoadOptions) -> list[ModelIR]:
    from convaudit.loaders import load_model

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
