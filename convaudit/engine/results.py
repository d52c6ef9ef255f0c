"""Result types of the engine. Every number says what it is and for which operator."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

#: exact (a converged computation of the real quantity), upper-bound (certified >= truth),
#: lower-bound (certified <= truth), estimate (no certificate)
Quantity = Literal["exact", "upper-bound", "lower-bound", "estimate"]

#: Which statement holds for a σ_max (``NormResult.guarantee``):
#: exact: the bracket is closed to rounding (SVD, FFT, 1x1, dense), whatever the tolerance;
#: certified: the certified bracket pins σ_max to ``tol`` (upper <= lower·(1 + tol)², see
#: ``pins``), the value is its geometric midpoint √(lower·upper), within tol of σ_max;
#: converged: Lanczos converged to ``tol`` (float64 residual), the bracket may be wider;
#: bound: neither within the work budget; the value is the certified upper bound.
Guarantee = Literal["exact", "certified", "converged", "bound"]

#: a bracket at most this wide (relative) is exact whatever tolerance was asked for
ROUNDING_WIDTH = 1e-10

#: how a layer's note starts when its full spectrum was left out for its cost
SPECTRUM_SKIPPED = "full spectrum skipped"

#: progress(done, total, what): called by engine loops; never prints
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EngineOptions:
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    #: peak working-memory budget for frequency chunks, in bytes (None: a quarter of RAM)
    max_memory: int | None = None
    #: relative precision asked for of sigma_max: refinement stops once the certified bracket
    #: is within it, or Lanczos has converged to it
    tol: float = 1e-6
    progress: ProgressCallback | None = None
    #: CPU worker threads for batched decompositions (None: one per core)
    threads: int | None = None
    #: a limit on sigma_max (a CI gate's): refinement also stops once the certified bracket
    #: lies on one side of it (None: refine to ``tol``; inf: never refine beyond the bracket)
    limit: float | None = None


@dataclass(frozen=True)
class NormResult:
    """sigma_max of one operator with its certified bracket.

    ``value`` is the reported number: the computed value for an ``exact`` or ``converged``
    guarantee, the bracket's geometric midpoint (certified within ``tol`` of the truth) when
    ``certified``, else ``upper`` (a certified upper bound). A certified upper bound is always
    ``upper``.
    ``exact`` (and ``quantity == "exact"``) means the value is within ``tol`` of σ_max, by
    either ``guarantee``. ``operator`` names the padding the statement is about ("circular",
    "zeros", "reflect", "replicate", or "any-size" for the size-independent bound) and
    ``grid`` the input spatial size (None for "any-size"). ``tol``: the relative precision
    that was asked for (None where it played no part).
    """

    value: float
    lower: float
    upper: float
    exact: bool
    quantity: Quantity
    operator: str
    grid: tuple[int, ...] | None
    method: str
    iterations: int = 0
    tol: float | None = None
    guarantee: Guarantee | None = None  # None: derived from ``exact`` (exact or bound)

    def __post_init__(self) -> None:
        if self.guarantee is None:
            object.__setattr__(self, "guarantee", "exact" if self.exact else "bound")

    @property
    def precision(self) -> str:
        """What the number is worth: 'exact', 'certified to 1e-4', 'exact to 1e-4' (Lanczos
        converged) or 'upper-bound'."""
        if self.guarantee == "certified" and self.tol is not None:
            return f"certified to {tol_text(self.tol)}"
        if self.guarantee == "converged" and self.tol is not None:
            return f"exact to {tol_text(self.tol)}"
        return "exact" if self.guarantee in ("exact", "certified", "converged") else self.quantity

    def describe(self) -> str:
        """Short human label, e.g. 'certified to 1e-4, zeros padding, 32x32' or 'exact, dense'."""
        if self.operator == "dense":  # a matrix: no padding, and no input size to speak of
            return f"{self.precision}, dense"
        where = "any input size" if self.grid is None else "x".join(str(n) for n in self.grid)
        pad = "size-independent" if self.operator == "any-size" else f"{self.operator} padding"
        return f"{self.precision}, {pad}, {where}"


def tol_text(tol: float) -> str:
    """1e-4 -> '1e-4', 2.5e-05 -> '2.5e-5': a relative precision, briefly."""
    mantissa, exponent = f"{tol:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def pins(lower: Any, upper: Any, tol: float) -> Any:
    """Does the bracket [lower, upper] pin σ_max to the relative precision ``tol``?

    Its geometric midpoint m = √(lower·upper) then lies within ``tol`` of every σ in it:
    σ/m and m/σ are at most √(upper/lower) <= 1 + tol. So a bracket closes at (1 + tol)²,
    not (1 + tol): less refinement (Lanczos products) for the same certified statement about
    the reported value. Floats or numpy arrays (elementwise)."""
    return upper <= lower * (1 + tol) ** 2


def pin_level(upper: Any, tol: float) -> Any:
    """The lower bound at which a bracket ending at ``upper`` pins σ_max to ``tol``."""
    return upper / (1 + tol) ** 2


def midpoint(lower: float, upper: float) -> float:
    """The geometric midpoint of a bracket, kept inside it against rounding."""
    return min(max(math.sqrt(lower) * math.sqrt(upper), lower), upper)


def guarantee_of(lower: float, upper: float, tol: float, *, converged: bool) -> Guarantee:
    """What a bracket [lower, upper] (and a Lanczos convergence flag) guarantees at ``tol``."""
    if upper <= lower * (1 + ROUNDING_WIDTH):
        return "exact"
    if pins(lower, upper, tol):
        return "certified"
    return "converged" if converged else "bound"


def bracket_result(
    lower: float,
    upper: float,
    *,
    tol: float,
    operator: str,
    grid: tuple[int, ...] | None,
    method: str,
    converged_value: float | None = None,
    iterations: int = 0,
) -> NormResult:
    """The NormResult of a certified bracket, with ``converged_value`` the Lanczos value when it
    converged to ``tol``: the value is the computed one for an exact or converged guarantee,
    the bracket's midpoint when certified, else the certified upper end."""
    lower = min(lower, upper)
    guarantee = guarantee_of(lower, upper, tol, converged=converged_value is not None)
    value = upper
    if guarantee == "certified":
        value = midpoint(lower, upper)
    elif guarantee == "exact":
        value = lower if converged_value is None else min(max(converged_value, lower), upper)
    elif guarantee == "converged" and converged_value is not None:
        value = min(max(converged_value, lower), upper)
    exact = guarantee != "bound"
    quantity: Quantity = "exact" if exact else "upper-bound"
    return NormResult(
        value, lower, upper, exact, quantity, operator, grid, method, iterations, tol, guarantee
    )


@dataclass(frozen=True)
class LayerSpectrum:
    """Everything the engine says about one layer.

    ``sigma_max`` is for the layer's REAL operator (its padding, its input size).
    ``singular_values`` (descending, with multiplicity) and the statistics derived from them
    (sigma_min, condition, stable_rank) are of ``spectrum_operator``: the circular-padding
    operator on ``spectrum_grid`` — exact for circular layers, the paper's characterisation
    for zero-padded ones. None where not computed (sigma_max-only mode, unknown input size).
    ``status``: "ok", "non-finite" (NaN/Inf weights), "zero" (all-zero kernel).
    """

    name: str
    kind: str
    sigma_max: NormResult | None
    singular_values: np.ndarray | None = None
    spectrum_operator: str | None = None
    spectrum_grid: tuple[int, ...] | None = None
    sigma_min: float | None = None
    condition: float | None = None
    stable_rank: float | None = None
    status: str = "ok"
    bn_folded: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
