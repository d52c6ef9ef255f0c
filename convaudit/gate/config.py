"""``convaudit check`` settings: ``[tool.convaudit]`` in pyproject.toml, or convaudit.toml.

Keys are kebab-case. Precedence: command line > environment (``CONVAUDIT_MAX_SIGMA=1.5``, the key
upper-cased with ``_``) > file > defaults. The file is found from the current directory upwards:
in each folder ``convaudit.toml`` (top-level keys, or a ``[tool.convaudit]`` table) wins over a
``pyproject.toml`` that has a ``[tool.convaudit]`` table; the first folder with either is used.
Unknown keys and values of the wrong type are a ConfigError (exit 2). Relative paths in a file
(``models``, ``baseline``) are relative to that file's folder.

Example::

    [tool.convaudit]
    models = ["model.onnx"]
    input-shape = ["x=1,3,224,224"]
    max-sigma = 1.5
    max-lipschitz = 1e4
    ignore = ["CA003", "CA001:stem.*"]
    scheduler = "tcp://scheduler:8786"   # optional: run on this Dask cluster
    [[tool.convaudit.overrides]]
    layers = "head.*"          # a glob; "re:" starts a regular expression
    max-sigma = 4.0
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convaudit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "CONVAUDIT_"
FORMATS = ("table", "json", "github", "junit", "sarif", "html")
LIMIT_KEYS = ("max-sigma", "min-sigma", "max-condition")


@dataclass(frozen=True)
class Override:
    """Per-layer limits for the layers whose name matches ``pattern`` (glob, or ``re:REGEX``)."""

    pattern: str
    limits: Mapping[str, float]

    def matches(self, layer: str) -> bool:
        return layer_matches(self.pattern, layer)


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = ()
    input_shape: tuple[str, ...] = ()
    input_size: str | None = None
    input_value: tuple[str, ...] = ()
    max_sigma: float | None = None
    min_sigma: float | None = None
    max_condition: float | None = None
    max_lipschitz: float | None = None
    overrides: tuple[Override, ...] = ()
    strict: bool = False
    ignore: tuple[str, ...] = ()
    baseline: str | None = None
    baseline_tolerance: float = 0.01
    format: str = "table"
    fold_bn: bool = False
    sigma: str = "exact"
    tol: float = 1e-4
    empirical: bool = True
    exit_zero: bool = False
    scheduler: str | None = None  # a Dask scheduler's address: run there (convaudit.distributed)
    source: str | None = None  # the file the settings came from, for messages

    def limits_for(self, layer: str) -> dict[str, float]:
        """The limits that apply to ``layer``: global ones, then the last matching override."""
        limits = {
            key: value
            for key, value in (
                ("max-sigma", self.max_sigma),
                ("min-sigma", self.min_sigma),
                ("max-condition", self.max_condition),
            )
            if value is not None
        }
        for override in self.overrides:
            if override.matches(layer):
                limits.update(override.limits)
        return limits


def layer_matches(pattern: str, layer: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], layer) is not None
    return fnmatch.fnmatchcase(layer, pattern)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if not out >= 0:
        raise ConfigError(f"{key} must be a non-negative number, got {value!r}")
    return out


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # environment variables: comma separated
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{key} must be a list of strings, got {value!r}")


def _precision(key: str, value: Any) -> float:
    out = _number(key, value)
    if not 0 < out < 1:
        raise ConfigError(f"{key} must be a relative precision between 0 and 1, got {value!r}")
    return out


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _overrides(key: str, value: Any) -> tuple[Override, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{key} must be an array of tables ([[tool.convaudit.overrides]])")
    out = []
    for table in value:
        unknown = set(table) - {"layers", *LIMIT_KEYS}
        if unknown:
            raise ConfigError(
                f"unknown key {sorted(unknown)[0]!r} in {key}",
                hint=f"an override takes layers plus any of {', '.join(LIMIT_KEYS)}",
            )
        pattern = _text(f"{key}.layers", table.get("layers"))
        check_pattern(pattern)
        limits = {k: _number(f"{key}.{k}", table[k]) for k in LIMIT_KEYS if k in table}
        out.append(Override(pattern, limits))
    return tuple(out)


def check_pattern(pattern: str) -> None:
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            raise ConfigError(f"bad regular expression {pattern[3:]!r}: {exc}") from None


#: kebab-case key -> parser; the Settings field is the key with "-" -> "_"
KEYS: dict[str, Callable[[str, Any], Any]] = {
    "models": _strings,
    "input-shape": _strings,
    "input-size": _text,
    "input-value": _strings,
    "max-sigma": _number,
    "min-sigma": _number,
    "max-condition": _number,
    "max-lipschitz": _number,
    "overrides": _overrides,
    "strict": _bool,
    "ignore": _strings,
    "baseline": _text,
    "baseline-tolerance": _number,
    "format": _choice(FORMATS),
    "fold-bn": _bool,
    "sigma": _choice(("exact", "bound")),
    "tol": _precision,
    "empirical": _bool,
    "exit-zero": _bool,
    "scheduler": _text,
}
_PATH_KEYS = ("models", "baseline")


def parse_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate a TOML table into Settings field values (unknown keys are errors)."""
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in KEYS:
            close = [k for k in KEYS if k.replace("-", "_") == key or k == key.replace("_", "-")]
            raise ConfigError(
                f"unknown key {key!r} in {where}",
                hint=f"did you mean {close[0]!r}? keys are kebab-case"
                if close
                else f"known keys: {', '.join(KEYS)}",
            )
        values[key.replace("-", "_")] = KEYS[key](key, raw)
    return values


def find_config(start: Path) -> tuple[Path, Mapping[str, Any]] | None:
    """The nearest convaudit.toml / pyproject.toml with settings, from ``start`` upwards."""
    for folder in (start, *start.parents):
        for name in ("convaudit.toml", "pyproject.toml"):
            path = folder / name
            if path.is_file():
                table = read_config(path)
                if table is not None:
                    return path, table
    return None


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; unreadable or invalid files become one-line ConfigErrors."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def read_config(path: Path) -> Mapping[str, Any] | None:
    """The convaudit table of one file (None: a pyproject.toml without [tool.convaudit])."""
    data = load_toml(path)
    tool = data.get("tool", {}).get("convaudit") if isinstance(data.get("tool"), dict) else None
    if path.name == "pyproject.toml":
        return tool
    return tool if tool is not None else data


def _resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in _PATH_KEYS:
        if key in values and values[key] is not None:
            if isinstance(values[key], tuple):
                values[key] = tuple(
                    str(base / p) if not Path(p).is_absolute() else p for p in values[key]
                )
            elif not Path(values[key]).is_absolute():
                values[key] = str(base / values[key])
    return values


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, parser in KEYS.items():
        name = ENV_PREFIX + key.upper().replace("-", "_")
        if key != "overrides" and environ.get(name, "") != "":
            values[key.replace("-", "_")] = parser(name, environ[name])
    return values


def scheduler_setting(config_file: str | Path | None = None, cwd: Path | None = None) -> str | None:
    """Only the ``scheduler`` key of the config file (``config_file``, else the one found from
    ``cwd`` upwards): the commands other than ``check`` take just that from it."""
    if config_file is not None:
        table: Mapping[str, Any] = read_config(Path(config_file)) or {}
    else:
        found = find_config((cwd or Path.cwd()).resolve())
        table = found[1] if found is not None else {}
    value = table.get("scheduler")
    return None if value is None else _text("scheduler", value)


def load_settings(
    cli: Mapping[str, Any],
    *,
    config_file: str | Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults < file < environment < ``cli`` (Settings field names; None = not given)."""
    values: dict[str, Any] = {}
    source = None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        found: tuple[Path, Mapping[str, Any]] | None = (path, read_config(path) or {})
    else:
        found = find_config((cwd or Path.cwd()).resolve())
    if found is not None:
        path, table = found
        source = str(path)
        values.update(_resolve_paths(parse_table(table, str(path)), path.parent))
    values.update(from_environment(os.environ if environ is None else environ))
    values.update({k: v for k, v in cli.items() if v is not None and v != ()})
    fields = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(values) - fields
    if unknown:  # a programming error in the CLI layer, not a user's
        raise AssertionError(f"unknown settings {sorted(unknown)}")
    return Settings(**values, source=source)


__all__ = [
    "FORMATS",
    "KEYS",
    "Override",
    "Settings",
    "find_config",
    "layer_matches",
    "load_settings",
    "scheduler_setting",
]
