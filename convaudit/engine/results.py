"""Result types of the engine. Every number says what it is and for which operator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

#: exact (a converged computation of the real quantity), upper-bound (certified >= truth),
#: lower-bound (certified <= truth), estimate (no certificate)
Quantity = Literal["exact", "upper-bound", "lower-bound", "estimate"]

#: progress(done, total, what): called by engine loops; never prints
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EngineOptions:
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    #: peak working-memory budget for frequency chunks, in bytes (None: a quarter of RAM)
    max_memory: int | None = None
    #: relative tolerance for iterative sigma_max (Lanczos / power / Gram)
    tol: float = 1e-6
    progress: ProgressCallback | None = None
    #: CPU worker threads for batched decompositions (None: one per core)
    threads: int | None = None


@dataclass(frozen=True)
class NormResult:
    """sigma_max of one operator with its certified bracket.

    ``value`` is the reported number: equal to ``upper`` for an upper bound, to the converged
    value when ``exact``. ``operator`` names the padding the statement is about ("circular",
    "zeros", "reflect", "replicate", or "any-size" for the size-independent bound) and
    ``grid`` the input spatial size (None for "any-size").
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

    def describe(self) -> str:
        """Short human label, e.g. 'exact, zeros padding, 32x32' or 'exact, dense'."""
        if self.operator == "dense":  # a matrix: no padding, and no input size to speak of
            return f"{self.quantity}, dense"
        where = "any input size" if self.grid is None else "x".join(str(n) for n in self.grid)
        pad = "size-independent" if self.operator == "any-size" else f"{self.operator} padding"
        return f"{self.quantity}, {pad}, {where}"


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
