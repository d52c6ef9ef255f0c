"""The paper's figure: per layer the sorted singular values (log axis), and sigma_max by depth.

Needs matplotlib (the ``plot`` extra). Uses the object-oriented API only (no pyplot), so it
never touches a user's global backend or figure state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convaudit.analysis import ModelReport
from convaudit.atomic import atomic_path
from convaudit.errors import ConfigError, ConvauditError

PLOT_FORMATS = ("png", "svg", "pdf")
#: at most this many points per layer curve: enough for the shape, small files for 50 layers
MAX_POINTS = 2000


def plot_format(dest: str | Path) -> str:
    suffix = Path(dest).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise ConfigError(
            f"cannot plot to {dest}: unknown image type {suffix or '(no suffix)'!r}",
            hint="use a .png, .svg or .pdf file name",
        )
    return suffix


def require_matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConvauditError(
            "--plot needs matplotlib, which is not installed",
            hint="pip install 'convaudit[plot]'",
        ) from None
    return Figure


def _thin(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(relative rank in [0, 1], values) with at most MAX_POINTS points, extremes kept."""
    n = len(values)
    index = np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).round().astype(int))
    rank = index / max(n - 1, 1)
    return rank, np.asarray(values, dtype=np.float64)[index]


def _draw_model(fig: Any, axes: Sequence[Any], report: ModelReport) -> None:
    from matplotlib import cm, colormaps, colors

    spectra_ax, depth_ax = axes
    layers = report.layers
    cmap = colormaps["viridis"]
    norm = colors.Normalize(vmin=0, vmax=max(len(layers) - 1, 1))
    drawn = 0
    for depth, result in enumerate(layers):
        values = result.spectrum.singular_values
        if values is None or len(values) == 0:
            continue
        rank, thinned = _thin(values)
        spectra_ax.plot(
            rank, np.where(thinned > 0, thinned, np.nan), color=cmap(norm(depth)), lw=1.0
        )
        drawn += 1
    spectra_ax.set_yscale("log")
    spectra_ax.set_xlabel("relative rank (0 = largest)")
    spectra_ax.set_ylabel("singular value")
    spectra_ax.set_title(
        f"sorted singular values, {drawn} layers (circular operator on each grid)", fontsize=10
    )
    spectra_ax.grid(True, which="major", alpha=0.3)
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=spectra_ax, pad=0.01)
    bar.set_label("layer depth (index)")

    positions = np.arange(len(layers))
    sigma = [r.spectrum.sigma_max for r in layers]
    values = np.array([np.nan if s is None else s.value for s in sigma], dtype=np.float64)
    exact = np.array([s is not None and s.exact for s in sigma])
    depth_ax.plot(positions, values, color="0.6", lw=0.8, zorder=1)
    depth_ax.scatter(
        positions[exact], values[exact], color="C0", s=18, zorder=2, label="σ_max exact"
    )
    depth_ax.scatter(
        positions[~exact],
        values[~exact],
        facecolors="none",
        edgecolors="C3",
        s=22,
        zorder=2,
        label="σ_max upper bound",
    )
    mins = np.array(
        [np.nan if r.spectrum.sigma_min is None else r.spectrum.sigma_min for r in layers]
    )
    if np.isfinite(mins).any():
        depth_ax.plot(
            positions,
            np.where(mins > 0, mins, np.nan),
            "v",
            color="C2",
            ms=4,
            label="σ_min (circular)",
        )
    if (np.nan_to_num(values) > 0).any():
        depth_ax.set_yscale("log")
    depth_ax.set_xlabel("layer (depth order)")
    depth_ax.set_ylabel("σ_max (and circular σ_min)")
    depth_ax.set_title(f"{report.path}: σ_max per layer", fontsize=10)
    # Readable for ~50 layers: every label when few, else every k-th with a small font.
    step = max(1, math.ceil(len(layers) / 40))
    ticks = positions[::step]
    depth_ax.set_xticks(ticks)
    depth_ax.set_xticklabels(
        [layers[i].name for i in ticks], rotation=90, fontsize=8 if len(layers) <= 25 else 6
    )
    depth_ax.grid(True, alpha=0.3)
    depth_ax.legend(fontsize=8, loc="best")


def render_plot(reports: Sequence[ModelReport]) -> Any:
    """The matplotlib Figure (one row of two panels per model)."""
    figure_class = require_matplotlib()
    rows = max(len(reports), 1)
    width = 14.0
    most = max((len(r.layers) for r in reports), default=1)
    height_per_row = 5.0 + (1.5 if most > 25 else 0.0)
    fig = figure_class(figsize=(width, height_per_row * rows), layout="constrained")
    grid = fig.subplots(rows, 2, squeeze=False)
    for row, report in zip(grid, reports, strict=False):
        _draw_model(fig, row, report)
    return fig


def write_plot(reports: Sequence[ModelReport], dest: str | Path) -> None:
    """Draw the figure and write it atomically to ``dest`` (.png, .svg or .pdf)."""
    fmt = plot_format(dest)
    fig = render_plot(reports)
    metadata = {"Software": "convaudit"} if fmt == "png" else {"Creator": "convaudit", "Date": None}
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120, metadata=metadata)
