"""Cells covering the reduced frequency torus, for the branch and bound of :mod:`torus`.

A cell's test needs only its spread Δ = max over the cell of Σ_ax D_ax·|x_ax - c_ax| (the
exponential type of λ between its centre c and any of its points; :mod:`torus`). That is an ℓ1
distance in the scaled coordinates X = D∘x, whose balls are diamonds. So the cells are:

- one varying axis: intervals (Δ = D·h), bisected;
- two varying axes: diamonds |dX| + |dY| <= a, i.e. squares of half-width a in the rotated
  coordinates u = X + Y, v = X - Y (then |dX| + |dY| = max(|du|, |dv|)). Diamonds tile the
  plane with twice the area of the largest axis-aligned box of the same spread. A diamond is
  split into its four quarters (spread a/2); quarters outside the domain are dropped;
- three or more: boxes in x (Δ = Σ D_ax·h_ax), bisected along the axis with the largest D_ax·h_ax.

The domain is [0, 2π) on every varying axis except the last, which is [0, π] (a real kernel has
λ(-x) = λ(x)). Every cell carries the certified bound on S² that holds if a maximiser lies in it;
a child inherits its parent's (a maximiser in the child is in the parent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Cells:
    """Cells × groups: centres and half-widths ``(K, A)`` in the cover's coordinates, the
    group, and the bound on S² if a maximiser lies in the cell."""

    centre: np.ndarray
    half: np.ndarray
    group: np.ndarray
    bound: np.ndarray

    def take(self, index: np.ndarray) -> Cells:
        return Cells(self.centre[index], self.half[index], self.group[index], self.bound[index])

    def __len__(self) -> int:
        return len(self.group)

    @staticmethod
    def concat(parts: list[Cells]) -> Cells:
        return Cells(
            np.concatenate([p.centre for p in parts]),
            np.concatenate([p.half for p in parts]),
            np.concatenate([p.group for p in parts]),
            np.concatenate([p.bound for p in parts]),
        )


class Cover:
    """How cells sit on the torus whose varying axes have degrees ``degree`` (all > 0)."""

    def __init__(self, degree: tuple[int, ...]) -> None:
        self.degree = np.asarray(degree, dtype=np.float64)
        self.width = len(degree)
        self.diamond = self.width == 2
        extent = np.full(self.width, 2 * math.pi)
        if self.width:
            extent[-1] = math.pi
        #: the domain in x (per axis [0, extent])
        self.extent = extent

    def start(self, spread: float, groups: int, bound: float) -> Cells:
        """Cells of spread <= ``spread`` covering the domain, for every group."""
        if self.diamond:
            centre, half = self._start_diamonds(spread)
        else:
            axes, halves = [], []
            for deg, extent in zip(self.degree, self.extent, strict=True):
                count = max(1, math.ceil(extent * self.width * deg / (2 * spread)))
                axes.append((np.arange(count) + 0.5) * extent / count)
                halves.append(extent / (2 * count))
            mesh = np.meshgrid(*axes, indexing="ij")
            centre = np.stack([m.reshape(-1) for m in mesh], 1)
            half = np.tile(np.asarray(halves), (len(centre), 1))
        return Cells(
            np.repeat(centre, groups, axis=0),
            np.repeat(half, groups, axis=0),
            np.tile(np.arange(groups), len(centre)),
            np.full(len(centre) * groups, bound),
        )

    def _start_diamonds(self, spread: float) -> tuple[np.ndarray, np.ndarray]:
        big_x, big_y = self.extent * self.degree
        # the domain's corners in (u, v) bound the squares needed
        u_axis = np.arange(0.0, big_x + big_y + 2 * spread, 2 * spread) + spread
        v_axis = np.arange(-big_y, big_x + 2 * spread, 2 * spread) + spread
        mesh = np.meshgrid(u_axis, v_axis, indexing="ij")
        centre = np.stack([m.reshape(-1) for m in mesh], 1)
        half = np.full_like(centre, spread)
        keep = self._meets_domain(centre, half)
        return centre[keep], half[keep]

    def _meets_domain(self, centre: np.ndarray, half: np.ndarray) -> np.ndarray:
        """Diamonds whose ℓ1 distance (in X, Y) from the centre to the domain is <= spread."""
        scaled = self._scaled(centre)
        limit = self.extent * self.degree
        gap = np.maximum(0.0, np.maximum(-scaled, scaled - limit)).sum(1)
        return gap <= half.max(1) * (1 + 1e-9)

    def _scaled(self, centre: np.ndarray) -> np.ndarray:
        """X = D∘x of cell centres."""
        if not self.diamond:
            return centre * self.degree
        u, v = centre[:, 0], centre[:, 1]
        return np.stack([(u + v) / 2, (u - v) / 2], 1)

    def points(self, cells: Cells) -> np.ndarray:
        """The centres in reduced coordinates x ``(K, A)``."""
        return self._scaled(cells.centre) / self.degree

    def spread(self, cells: Cells) -> np.ndarray:
        """Δ per cell, widened to cover the rounding of centres and edges."""
        raw = cells.half.max(1) if self.diamond else cells.half @ self.degree
        return raw * (1 + 1e-10) + 1e-12 * float(self.degree.sum() + 1)

    def split(self, cells: Cells) -> Cells:
        """Children covering the cells (and the domain part of them)."""
        if not len(cells):
            return cells
        if self.diamond:
            half = cells.half / 2
            kids = []
            for su, sv in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
                centre = cells.centre + half * np.array([su, sv])
                kids.append(Cells(centre, half, cells.group, cells.bound))
            out = Cells.concat(kids)
            return out.take(np.flatnonzero(self._meets_domain(out.centre, out.half)))
        rows = np.arange(len(cells))
        axis = np.argmax(cells.half * self.degree, axis=1)
        half = cells.half.copy()
        half[rows, axis] /= 2
        lo, hi = cells.centre.copy(), cells.centre.copy()
        lo[rows, axis] -= half[rows, axis]
        hi[rows, axis] += half[rows, axis]
        return Cells(
            np.concatenate([lo, hi]),
            np.concatenate([half, half]),
            np.concatenate([cells.group, cells.group]),
            np.concatenate([cells.bound, cells.bound]),
        )
