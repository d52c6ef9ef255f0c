"""Which operator a projection certifies, for one ConvLayer (MATH.md §2, §3).

A kernel projected on a grid is guaranteed only for the circular operator on that grid. This
module picks, per padding mode, a grid whose circular σ_max certifies the layer's REAL operator:

- ``zeros``: the zero-padded operator is a submatrix of the circular one on the grid
  N ≥ H + max(t, E − H + 1), s | N (t: top pad, E = (H_out − 1)·s + d(k − 1) − t). The circular
  spectrum on the layer's own grid H is NOT an upper bound.
- ``circular``: the layer's own grid (rows are a subset of the circular operator when
  H_out·s ≤ H; exact when equal).
- ``reflect`` / ``replicate``: the layer is (valid conv on the padded grid)·P with P the padding's
  0/1 copy matrix, so σ ≤ ‖P‖·σ_circ(N_valid) with ‖P‖ = √(max copies of an input cell).
  The guarantee holds but is conservative (‖P‖ ≤ √2 per axis for reflect).

- unknown input size (zeros / circular): a fine circular grid, then the size-independent
  certificate S (``projection_any_size``), valid for every input size.

1×…×1 kernels are exact on any grid and need no input size: σ = max_g σ_max(W₀).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from convaudit.engine.geometry import ConvGeometry, forward_geometry, transposed_geometry
from convaudit.engine.projection.any_size import any_size_grid, any_size_sigma, certify_any_size
from convaudit.engine.projection.kernel import (
    Geometry,
    ProjectionOptions,
    ProjectionStats,
    circular_sigma_max,
    project_kernel,
)
from convaudit.engine.results import ProgressCallback
from convaudit.errors import InputShapeError, UnsupportedLayerError
from convaudit.ir import ConvLayer

ANY_SIZE = "any-size"


@dataclass(frozen=True)
class ProjectionTarget:
    """σ_max(real operator) ≤ ``gain``·σ_circ(``geometry``) (equality when ``exact``)."""

    geometry: Geometry
    operator: str  # the layer's padding mode
    gain: float
    exact: bool
    statement: str


def _fmt(size: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in size)


def forward_operator(layer: ConvLayer) -> ConvGeometry:
    """The forward conv whose operator is analysed (a transposed layer's adjoint)."""
    if layer.input_size is None:
        raise InputShapeError(
            f"layer {layer.name}: the input size is unknown, so its real operator is unknown",
            hint="pass --input-shape (e.g. 1,3,224,224): a projection is certified for one input size",
        )
    args = (layer.kernel_size, layer.stride, layer.dilation, layer.padding)
    if layer.transposed:
        return transposed_geometry(tuple(layer.input_size), *args, layer.output_padding)
    return forward_geometry(tuple(layer.input_size), *args)


def _copy_gain(size: int, before: int, after: int, mode: str) -> float:
    """‖P‖ of one axis of reflect/replicate padding: √(max copies of an input cell)."""
    j = np.arange(-before, size + after)
    if mode == "reflect":
        if max(before, after) >= size:
            raise UnsupportedLayerError(
                f"reflect padding {before, after} is wider than the axis {size}"
            )
        j = np.abs(j)
        j = np.where(j >= size, 2 * (size - 1) - j, j)
    else:
        j = np.clip(j, 0, size - 1)
    return math.sqrt(int(np.bincount(j, minlength=size).max()))


def _circular_grid(layer: ConvLayer, geo: ConvGeometry) -> tuple[int, ...]:
    for n, o, s in zip(geo.grid, geo.out_size, geo.stride, strict=True):
        if n % s or o * s > n:
            raise UnsupportedLayerError(
                f"layer {layer.name}: circular padding with stride {s} and {o} outputs on an input "
                f"of {n} repeats rows of the circular operator",
                hint="only 'same' circular padding with a stride dividing the input is supported",
            )
    return geo.grid


def projection_target(layer: ConvLayer) -> ProjectionTarget:
    nd = layer.spatial_dims
    mode = layer.padding_mode
    if all(k == 1 for k in layer.kernel_size):
        ones = (1,) * nd
        return ProjectionTarget(
            Geometry(ones, ones, ones, layer.groups),
            mode,
            1.0,
            True,
            "exact for every input size and padding (1x1 kernel)",
        )
    if layer.transposed and mode != "zeros":
        raise UnsupportedLayerError(f"layer {layer.name}: transposed conv with {mode} padding")
    if layer.input_size is None:
        return ProjectionTarget(
            Geometry(any_size_grid(layer), layer.stride, layer.dilation, layer.groups),
            ANY_SIZE,
            1.0,
            False,
            f"certified upper bound for every input size ({mode} padding; size-independent bound S)",
        )
    geo = forward_operator(layer)
    gain, exact = 1.0, False
    if mode == "circular":
        grid, exact = _circular_grid(layer, geo), geo.is_circular_exact()
    elif mode == "zeros":
        grid = geo.zero_pad_bound_grid()
    else:  # reflect / replicate: a valid conv on the padded grid, after the copy matrix P
        for n, (before, after) in zip(geo.grid, layer.padding, strict=True):
            gain *= _copy_gain(n, before, after, mode)
        padded = tuple(n + b + a for n, (b, a) in zip(geo.grid, layer.padding, strict=True))
        valid = forward_geometry(
            padded, layer.kernel_size, layer.stride, layer.dilation, ((0, 0),) * nd
        )
        grid = valid.zero_pad_bound_grid()
    geometry = Geometry(grid, layer.stride, layer.dilation, layer.groups)
    where = f"input {_fmt(geo.grid)}, circular grid {_fmt(grid)}"
    if mode == "circular":
        what = "exact" if exact else "upper bound"
        statement = f"{what} for the circular-padded operator on input {_fmt(geo.grid)}"
    elif mode == "zeros":
        statement = f"certified upper bound for the zero-padded operator ({where})"
    else:
        statement = (
            f"certified upper bound for the {mode}-padded operator "
            f"({where}, times padding gain {gain:.4g}; conservative)"
        )
    return ProjectionTarget(geometry, mode, gain, exact, statement)


def bn_multiplier(layer: ConvLayer) -> np.ndarray | None:
    """The folded BatchNorm as a per-entry multiplier of the stored kernel (MATH.md §4)."""
    if layer.bn is None:
        return None
    scale = layer.bn.scale
    k = layer.kernel
    tail = [1] * (k.ndim - 2)
    if layer.transposed:
        # A transposed conv's output channel o is (group, column j) of the stored dim 1.
        per = k.shape[1]
        group = np.arange(k.shape[0]) // (k.shape[0] // layer.groups)
        return scale[group[:, None] * per + np.arange(per)[None, :]].reshape(k.shape[0], per, *tail)
    return scale.reshape(-1, 1, *tail)


@dataclass(frozen=True)
class LayerProjection:
    """One layer's projection; σ values are certified for the real operator (``target``)."""

    name: str
    kernel: np.ndarray
    bound: float
    target: ProjectionTarget
    stats: ProjectionStats
    bn_folded: bool

    @property
    def sigma_before(self) -> float:
        return self.target.gain * self.stats.sigma_before

    @property
    def sigma_after(self) -> float:
        return self.target.gain * self.stats.sigma_after


def project_layer(
    layer: ConvLayer,
    bound: float,
    options: ProjectionOptions = ProjectionOptions(),
    *,
    fold_bn: bool = False,
    progress: ProgressCallback | None = None,
) -> LayerProjection:
    """Project one conv so that its real operator (with its BatchNorm when ``fold_bn``) has
    σ_max ≤ ``bound``, certified by :func:`projection_target`."""
    target = projection_target(layer)
    multiplier = bn_multiplier(layer) if fold_bn else None
    storage = layer.provenance.dtype if layer.provenance is not None else None
    fold = multiplier is not None
    if target.operator == ANY_SIZE:
        sigma0 = any_size_sigma(layer, layer.kernel, fold_bn=fold)
        if sigma0 <= bound:
            stats = ProjectionStats(
                options.method, bound, target.geometry.grid, sigma0, sigma0, 0, 0.0, True, True, 1.0
            )
            return LayerProjection(layer.name, layer.kernel, bound, target, stats, fold)
    projected = project_kernel(
        layer.kernel,
        target.geometry,
        bound / target.gain,
        options,
        multiplier=multiplier,
        storage_dtype=storage,
        progress=progress,
    )
    kernel, stats = projected.kernel, projected.stats
    if target.operator == ANY_SIZE:
        kernel, sigma, scale = certify_any_size(
            layer, kernel, bound, fold_bn=fold, storage_dtype=storage
        )
        change = np.linalg.norm(np.asarray(kernel, np.float64) - layer.kernel) / max(
            float(np.linalg.norm(layer.kernel)), 1e-300
        )
        stats = dataclasses.replace(
            stats,
            sigma_before=sigma0,
            sigma_after=sigma,
            final_scale=stats.final_scale * scale,
            relative_change=float(change),
            unchanged=False,
        )
    return LayerProjection(layer.name, kernel, bound, target, stats, fold)


def certified_sigma(
    layer: ConvLayer, *, fold_bn: bool = False, max_memory: int | None = None
) -> float:
    """Certified upper bound on σ_max of the layer's real operator (the projection's measure)."""
    target = projection_target(layer)
    if target.operator == ANY_SIZE:
        return any_size_sigma(layer, layer.kernel, fold_bn=fold_bn)
    multiplier = bn_multiplier(layer) if fold_bn else None
    sigma = circular_sigma_max(
        layer.kernel, target.geometry, multiplier=multiplier, max_memory=max_memory
    )
    return target.gain * sigma
