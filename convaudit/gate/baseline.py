"""A committed baseline of measured values, keyed by model path, layer name and code.

Never by position: reordering layers, or adding one elsewhere in the model, does not shift the
keys. Model paths are stored relative to the baseline file's folder (POSIX separators), so the
baseline works from any checkout location and any working directory. Floats are written with 12
significant digits and keys sorted, so re-writing an unchanged model gives an identical file.

Format (JSON)::

    {"schema_version": 1, "tool": "convaudit", "version": "0.1.0",
     "models": {"models/net.onnx": {"conv1": {"CA001": 1.23, "CA003": 40.1},
                                    "(network)": {"CA010": 310.5}}}}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convaudit.atomic import atomic_open
from convaudit.errors import ConfigError

SCHEMA_VERSION = 1

Entries = Mapping[str, Mapping[str, Mapping[str, float | None]]]


def model_key(model_path: str | Path, baseline_path: str | Path) -> str:
    """The model's path relative to the baseline's folder (POSIX), its key in the baseline."""
    base = Path(baseline_path).resolve().parent
    rel = os.path.relpath(Path(model_path).resolve(), base)
    return Path(rel).as_posix()


@dataclass(frozen=True)
class Baseline:
    entries: Entries

    def has_model(self, model: str) -> bool:
        return model in self.entries

    def has_layer(self, model: str, layer: str) -> bool:
        return layer in self.entries.get(model, {})

    def value(self, model: str, layer: str, code: str) -> float | None:
        return self.entries.get(model, {}).get(layer, {}).get(code)

    def violated(self, model: str, layer: str, code: str, limit: float, *, below: bool) -> bool:
        """True if the baseline value already broke this limit (an accepted, known finding)."""
        old = self.value(model, layer, code)
        if old is None:
            return False
        return old < limit if below else old > limit


def _rounded(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.12g}")


def write_baseline(path: str | Path, entries: Entries, *, version: str) -> None:
    """Write (or replace: the user asked for it) the baseline atomically."""
    models = {
        model: {
            layer: {code: _rounded(v) for code, v in sorted(codes.items())}
            for layer, codes in sorted(layers.items())
        }
        for model, layers in sorted(entries.items())
    }
    document = {
        "schema_version": SCHEMA_VERSION,
        "tool": "convaudit",
        "version": version,
        "models": models,
    }
    if not Path(path).parent.exists():
        raise ConfigError(
            f"cannot write baseline {path}: folder {Path(path).parent} does not exist"
        )
    with atomic_open(path) as f:
        json.dump(document, f, indent=2, sort_keys=True)
        f.write("\n")


def read_baseline(path: str | Path) -> Baseline:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"baseline {p} does not exist", hint=f"create it with --write-baseline {p}"
        )
    try:
        document: Any = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read baseline {p}: {exc}") from None
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"{p} is not a convaudit baseline (schema_version {SCHEMA_VERSION})",
            hint="re-create it with --write-baseline",
        )
    models = document.get("models")
    if not isinstance(models, dict) or not all(
        isinstance(layers, dict)
        and all(
            isinstance(codes, dict)
            and all(v is None or isinstance(v, (int, float)) for v in codes.values())
            for codes in layers.values()
        )
        for layers in models.values()
    ):
        raise ConfigError(
            f"baseline {p} is malformed: models must map model -> layer -> code -> number"
        )
    return Baseline(models)


__all__ = ["SCHEMA_VERSION", "Baseline", "model_key", "read_baseline", "write_baseline"]
