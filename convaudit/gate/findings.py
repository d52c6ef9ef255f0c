"""The CI gate: measured values + limits (+ baseline, ignores) -> findings with stable codes.

``evaluate`` is pure: it takes what was measured (:class:`ModelCheck`, built by
:mod:`convaudit.audit`) and the :class:`~convaudit.gate.config.Settings`, and returns a
:class:`GateResult` that the reporters render and whose ``exit_code`` the CLI returns.
Every check is a (model, layer, limit) triple, so JUnit can write one testcase per check.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from convaudit.errors import EXIT_CHECK_FAILED, EXIT_OK, ConfigError
from convaudit.gate.baseline import Baseline
from convaudit.gate.config import Settings, check_pattern, layer_matches
from convaudit.ir import SkippedLayer
from convaudit.network.empirical import EmpiricalBound
from convaudit.network.graph import NetworkBound

NETWORK = "(network)"

#: code -> (name, what it means). Stable: CI configs ignore findings by these codes.
CODES: dict[str, tuple[str, str]] = {
    "CA001": ("sigma-max-above-limit", "a layer's sigma_max is above its max-sigma limit"),
    "CA002": ("sigma-min-below-limit", "a layer's sigma_min is below its min-sigma limit"),
    "CA003": (
        "condition-above-limit",
        "a layer's condition number is above its max-condition limit",
    ),
    "CA010": (
        "network-bound-above-limit",
        "the certified network Lipschitz bound is above max-lipschitz",
    ),
    "CA011": (
        "network-bound-not-certified",
        "an op without a certified rule leaves the network bound unknown",
    ),
    "CA020": ("regression", "a value got worse than the baseline by more than the tolerance"),
    "CA021": ("new-layer", "a layer or model the baseline does not know"),
    "CA100": ("layer-not-analysable", "a layer could not be analysed"),
    "CA101": (
        "metric-unavailable",
        "a limit is set but its metric was not computed for this layer",
    ),
}
#: codes that fail the gate only with --strict (could not check), else a warning
STRICT_ONLY = frozenset({"CA011", "CA100", "CA101"})

Status = Literal["fail", "warn", "ignored", "baselined"]


@dataclass(frozen=True)
class LayerMetrics:
    """What was measured for one layer. sigma_max is of the real operator; sigma_min and
    condition are of the circular operator on the layer's grid (``spectrum_label`` says)."""

    name: str
    kind: str
    sigma_max: float | None
    sigma_max_label: str = ""
    sigma_min: float | None = None
    condition: float | None = None
    spectrum_label: str = ""
    bn_folded: bool = False
    #: the certified bracket of sigma_max (only as far refined as the gate needed)
    sigma_max_lower: float | None = None
    sigma_max_upper: float | None = None


@dataclass(frozen=True)
class ModelCheck:
    """Everything measured for one model. ``key`` is its baseline key (a relative path)."""

    path: str
    key: str
    format: str
    layers: tuple[LayerMetrics, ...]
    skipped: tuple[SkippedLayer, ...] = ()
    network: NetworkBound | None = None
    network_error: str | None = None
    empirical: EmpiricalBound | None = None
    empirical_error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def gap(self) -> float | None:
        """Certified upper bound / empirical lower bound (>= 1; how loose the bracket is)."""
        if self.network is None or self.empirical is None or not self.network.bounded:
            return None
        return self.network.value / self.empirical.value if self.empirical.value > 0 else math.inf


@dataclass(frozen=True)
class Finding:
    code: str
    model: str
    layer: str
    message: str
    status: Status
    value: float | None = None
    limit: float | None = None

    @property
    def failing(self) -> bool:
        return self.status == "fail"

    @property
    def title(self) -> str:
        return f"{self.code} {CODES[self.code][0]}"


@dataclass(frozen=True)
class Check:
    """One (model, layer, limit) test; ``findings`` empty when it passed."""

    model: str
    layer: str
    name: str  # max-sigma, min-sigma, max-condition, max-lipschitz, analysable, baseline
    limit: float | None = None
    value: float | None = None
    findings: tuple[Finding, ...] = ()

    @property
    def failed(self) -> bool:
        return any(f.failing for f in self.findings)


@dataclass(frozen=True)
class GateResult:
    models: tuple[ModelCheck, ...]
    checks: tuple[Check, ...]
    settings: Settings
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for c in self.checks for f in c.findings)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status == status)

    @property
    def passed(self) -> bool:
        return self.count("fail") == 0

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed or self.settings.exit_zero else EXIT_CHECK_FAILED


# --- ignores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnoreRule:
    """``CODE`` or ``CODE:LAYER`` (code may be a glob like CA00*; LAYER a glob or ``re:...``)."""

    code: str
    layer: str = "*"

    @classmethod
    def parse(cls, text: str) -> IgnoreRule:
        code, _, layer = text.partition(":")
        code = code.strip().upper()
        if not code or not any(fnmatch.fnmatchcase(c, code) for c in CODES):
            raise ConfigError(
                f"ignore rule {text!r} names no known code",
                hint=f"write CODE or CODE:LAYER_GLOB; codes: {', '.join(CODES)}",
            )
        layer = layer.strip() or "*"
        check_pattern(layer)
        return cls(code, layer)

    def matches(self, finding_code: str, layer: str) -> bool:
        return fnmatch.fnmatchcase(finding_code, self.code) and layer_matches(self.layer, layer)


# --- evaluation -----------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _sigma_label(layer: LayerMetrics) -> str:
    """What the sigma_max is, with its certified bracket when that is not closed."""
    lower, upper = layer.sigma_max_lower, layer.sigma_max_upper
    if lower is None or upper is None or not upper > lower * (1 + 1e-9):
        return layer.sigma_max_label
    return f"{layer.sigma_max_label}; certified in [{_fmt(lower)}, {_fmt(upper)}]"


def _exceeds(value: float, limit: float, *, below: bool) -> bool:
    if not math.isfinite(value):
        return True  # NaN / Inf weights never pass a limit
    return value < limit if below else value > limit


class _Evaluator:
    def __init__(self, settings: Settings, baseline: Baseline | None) -> None:
        self.settings = settings
        self.baseline = baseline
        self.ignores = [IgnoreRule.parse(text) for text in settings.ignore]

    def status(self, code: str, layer: str, *, accepted: bool) -> Status:
        if any(rule.matches(code, layer) for rule in self.ignores):
            return "ignored"
        if accepted:
            return "baselined"
        if code in STRICT_ONLY and not self.settings.strict:
            return "warn"
        return "fail"

    def finding(
        self,
        code: str,
        model: ModelCheck,
        layer: str,
        message: str,
        *,
        value: float | None = None,
        limit: float | None = None,
        accepted: bool = False,
    ) -> Finding:
        status = self.status(code, layer, accepted=accepted)
        return Finding(code, model.path, layer, message, status, value, limit)

    def limit_check(
        self,
        model: ModelCheck,
        layer: str,
        name: str,
        code: str,
        value: float | None,
        limit: float,
        what: str,
    ) -> Check:
        below = name.startswith("min")
        if value is None:
            f = self.finding(
                "CA101", model, layer, f"{what} not available, so {name} {limit:g} was not checked"
            )
            return Check(model.path, layer, name, limit, None, (f,))
        if not _exceeds(value, limit, below=below):
            return Check(model.path, layer, name, limit, value)
        accepted = self.baseline is not None and self.baseline.violated(
            model.key, layer, code, limit, below=below
        )
        op = "<" if below else ">"
        msg = f"{layer}: {what} {_fmt(value)} {op} {name} {limit:g}"
        f = self.finding(code, model, layer, msg, value=value, limit=limit, accepted=accepted)
        return Check(model.path, layer, name, limit, value, (f,))

    def model_checks(self, model: ModelCheck) -> list[Check]:
        checks: list[Check] = []
        for layer in model.layers:
            limits = self.settings.limits_for(layer.name)
            metrics = {
                "max-sigma": ("CA001", layer.sigma_max, f"sigma_max ({_sigma_label(layer)})"),
                "min-sigma": ("CA002", layer.sigma_min, f"sigma_min ({layer.spectrum_label})"),
                "max-condition": (
                    "CA003",
                    layer.condition,
                    f"condition number ({layer.spectrum_label})",
                ),
            }
            for name, (code, value, what) in metrics.items():
                if name in limits:
                    checks.append(
                        self.limit_check(model, layer.name, name, code, value, limits[name], what)
                    )
        for skipped in model.skipped:
            msg = f"{skipped.name}: not analysable: {skipped.reason}"
            checks.append(
                Check(
                    model.path,
                    skipped.name,
                    "analysable",
                    findings=(self.finding("CA100", model, skipped.name, msg),),
                )
            )
        checks.extend(self.network_checks(model))
        if self.baseline is not None:
            checks.extend(self.baseline_checks(model))
        return checks

    def network_checks(self, model: ModelCheck) -> list[Check]:
        limit = self.settings.max_lipschitz
        if limit is None:
            return []
        bound = model.network
        if bound is None or not bound.bounded:
            why = model.network_error or (bound.describe() if bound is not None else "no graph")
            f = self.finding(
                "CA011",
                model,
                NETWORK,
                f"network bound not certified: {why}; max-lipschitz {limit:g} not checked",
            )
            return [Check(model.path, NETWORK, "max-lipschitz", limit, None, (f,))]
        what = "certified network Lipschitz bound" + (
            " (assuming a plain chain)" if bound.assumed else ""
        )
        return [
            self.limit_check(model, NETWORK, "max-lipschitz", "CA010", bound.value, limit, what)
        ]

    def baseline_checks(self, model: ModelCheck) -> list[Check]:
        assert self.baseline is not None
        tol = self.settings.baseline_tolerance
        if not self.baseline.has_model(model.key):
            f = self.finding("CA021", model, "*", f"model {model.key} is not in the baseline")
            return [Check(model.path, "*", "baseline", findings=(f,))]
        checks = []
        for layer, values in current_values(model).items():
            if not self.baseline.has_layer(model.key, layer):
                f = self.finding("CA021", model, layer, f"{layer}: new layer, not in the baseline")
                checks.append(Check(model.path, layer, "baseline", findings=(f,)))
                continue
            findings = []
            for code, value in values.items():
                old = self.baseline.value(model.key, layer, code)
                if old is not None and regressed(value, old, tol, below=code == "CA002"):
                    name = CODES[code][0].split("-above")[0].split("-below")[0]
                    change = f"{(value - old) / old:+.1%}" if old else "from 0"
                    msg = f"{layer}: {name} {_fmt(value)} regressed from baseline {_fmt(old)} ({change}, tolerance {tol:.1%})"
                    findings.append(
                        self.finding("CA020", model, layer, msg, value=value, limit=old)
                    )
            checks.append(Check(model.path, layer, "baseline", findings=tuple(findings)))
        return checks


def regressed(value: float, old: float, tol: float, *, below: bool) -> bool:
    if not math.isfinite(value):
        return True
    return value < old * (1 - tol) if below else value > old * (1 + tol) + 1e-300


def current_values(model: ModelCheck) -> dict[str, dict[str, float]]:
    """The values a baseline records: layer -> code -> value (the network as NETWORK)."""
    out: dict[str, dict[str, float]] = {}
    for layer in model.layers:
        values = {"CA001": layer.sigma_max, "CA002": layer.sigma_min, "CA003": layer.condition}
        out[layer.name] = {k: v for k, v in values.items() if v is not None}
    for skipped in model.skipped:
        out.setdefault(skipped.name, {})
    if model.network is not None and model.network.bounded:
        out[NETWORK] = {"CA010": model.network.value}
    return out


def gated(settings: Settings) -> bool:
    """True if any limit is set."""
    limits = (
        settings.max_sigma,
        settings.min_sigma,
        settings.max_condition,
        settings.max_lipschitz,
    )
    return any(v is not None for v in limits) or any(o.limits for o in settings.overrides)


def evaluate(
    models: Sequence[ModelCheck], settings: Settings, baseline: Baseline | None = None
) -> GateResult:
    """Apply limits, ignores and the baseline to what was measured."""
    evaluator = _Evaluator(settings, baseline)
    checks = [check for model in models for check in evaluator.model_checks(model)]
    notes = []
    if not gated(settings) and baseline is None:
        notes.append(
            "no limits set: nothing was gated (set max-sigma / max-lipschitz or a baseline)"
        )
    return GateResult(tuple(models), tuple(checks), settings, tuple(notes))


def baseline_entries(
    models: Sequence[ModelCheck],
) -> Mapping[str, Mapping[str, Mapping[str, float | None]]]:
    """model key -> layer -> code -> value, for writing a baseline."""
    return {model.key: current_values(model) for model in models}


__all__ = [
    "CODES",
    "NETWORK",
    "Check",
    "Finding",
    "GateResult",
    "IgnoreRule",
    "LayerMetrics",
    "ModelCheck",
    "baseline_entries",
    "evaluate",
]
