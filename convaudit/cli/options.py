"""Option parsing shared by the commands: input shapes, devices, byte sizes."""

from __future__ import annotations

import re

from convaudit.errors import ConfigError, InputShapeError


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
