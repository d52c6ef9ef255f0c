"""One IR layer -> LayerSpectrum: σ_max of its REAL operator plus the circular spectrum.

``analyse_layer`` is what the model analysis calls for every layer; ``layer_upper_bound`` is
the certified bound the network-level Lipschitz bound multiplies.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from convaudit.engine.api import as_kernel
from convaudit.engine.conv import Conv, LayerOperator
from convaudit.engine.geometry import ConvGeometry, forward_geometry, transposed_geometry
from convaudit.engine.results import (
    SPECTRUM_SKIPPED,
    EngineOptions,
    LayerSpectrum,
    NormResult,
    ProgressCallback,
)
from convaudit.engine.runtime import Runtime, engine_threads, runtime
from convaudit.engine.sigma.dense import dense_sigma_max
from convaudit.engine.sigma.methods import any_size_norm, check_weight, conv_norm
from convaudit.engine.spectrum.circular import circular_spectrum
from convaudit.engine.spectrum.dense import dense_fits, dense_singular_values
from convaudit.errors import UnsupportedLayerError
from convaudit.ir import ConvLayer, DenseLayer

#: the full spectrum is computed by default when its SVD work (Σ_freq r²·c, also m·n·min for a
#: dense layer) stays under this: about 2 s on 2 cores (ResNet-50's 53 convs, 4.2e10, take 19 s),
#: so that it never dominates a default run whose σ_max is refined only to the tolerance
CHEAP_SPECTRUM_WORK = 4e9


def layer_conv(layer: ConvLayer, fold_bn: bool, rt: Runtime) -> Conv:
    """The layer's weights (folded with its BatchNorm when asked) on the runtime's device."""
    raw = layer.folded_kernel() if (fold_bn and layer.bn is not None) else layer.kernel
    t = torch.as_tensor(np.asarray(raw, dtype=np.float64))
    kernel = t if check_weight(t) == "non-finite" else as_kernel(t, rt)
    return Conv(kernel, layer.stride, layer.dilation, layer.groups)


def layer_geometry(layer: ConvLayer) -> ConvGeometry | None:
    """The analysed forward conv's geometry, None when the input size is unknown."""
    if layer.input_size is None:
        return None
    if layer.transposed:
        return transposed_geometry(
            layer.input_size,
            layer.kernel_size,
            layer.stride,
            layer.dilation,
            layer.padding,
            layer.output_padding,
        )
    return forward_geometry(
        layer.input_size, layer.kernel_size, layer.stride, layer.dilation, layer.padding
    )


def _conv_sigma(layer: ConvLayer, conv: Conv, method: str, rt: Runtime) -> NormResult:
    if layer.transposed and layer.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"{layer.name}: transposed conv with {layer.padding_mode} padding"
        )
    geometry = layer_geometry(layer)
    if geometry is None:
        return any_size_norm(conv, layer.padding, layer.padding_mode, rt)
    return conv_norm(LayerOperator(conv, geometry, layer.padding_mode), method, rt)


def spectrum_work(conv: Conv, grid: tuple[int, ...]) -> float:
    """Rough SVD cost (multiply-adds) of the circular spectrum, to decide what is cheap."""
    if conv.pointwise:
        return 0.0
    rows, cols = conv.rows, conv.cols
    freqs = math.prod(grid) / math.prod(conv.stride) / 2
    return freqs * conv.groups * min(rows, cols) ** 2 * max(rows, cols)


def _spectrum(
    layer: ConvLayer,
    conv: Conv,
    full: bool,
    rt: Runtime,
    progress: ProgressCallback | None,
) -> tuple[np.ndarray | None, str | None]:
    """The circular spectrum on the layer's grid, or (None, why not)."""
    grid = layer.operator_grid()
    if grid is None:
        return None, "input size unknown: no spectrum"
    work = spectrum_work(conv, grid)
    if not full and work > CHEAP_SPECTRUM_WORK:
        return None, skipped_spectrum(work)
    if all(n % s == 0 for n, s in zip(grid, layer.stride, strict=True)):
        return circular_spectrum(conv, grid, rt, progress), None
    op = LayerOperator(conv, conv.circular_geometry(grid), "circular")
    if dense_fits(op):
        return dense_singular_values(op, why=""), None
    return (
        None,
        f"stride {layer.stride} does not divide the grid {grid}: no exact circular spectrum",
    )


def skipped_spectrum(work: float) -> str:
    """The note of a spectrum left out for its cost, with the flag that forces it."""
    return (
        f"{SPECTRUM_SKIPPED}: about {work:.1e} multiply-adds of SVDs, over the default budget "
        f"of {CHEAP_SPECTRUM_WORK:.0e}; --full (full=True) computes it"
    )


def analyse_layer(
    layer: ConvLayer | DenseLayer,
    *,
    full: bool = False,
    fold_bn: bool = False,
    sigma: str = "exact",
    options: EngineOptions = EngineOptions(),
) -> LayerSpectrum:
    """σ_max of the layer's real operator and (when cheap or ``full``) its circular spectrum.

    ``sigma``: "exact" (FFT for circular layers, Lanczos with a certified bracket for padded
    ones), "upper-bound" (the cheap certified bound) or "none". Unknown input size: the
    size-independent bound S. NaN/Inf weights give status "non-finite" and no numbers.
    """
    rt = runtime(options)
    if options.threads is None and rt.threads > 1 and product_work(layer) < ONE_THREAD_BELOW:
        rt = dataclasses.replace(rt, threads=1)
    with engine_threads(rt):
        return _analyse_layer(layer, full, fold_bn, sigma, options, rt)


#: multiply-adds of one operator product under which a layer runs on one thread: measured on
#: YOLO11n-seg at 320 (2-core VM), its layers under 5e7 ran 1.2-15x faster on one thread than on
#: two but for two exceptions (each product's fork/join costs more than it shares), those over
#: 1e8 1.1-1.6x slower (benchmarks/README.md)
ONE_THREAD_BELOW = 5e7


def product_work(layer: ConvLayer | DenseLayer) -> float:
    """Multiply-adds of one product with the layer's operator; inf where it is no guide to
    the threads' worth (no input size, grouped)."""
    if isinstance(layer, DenseLayer):
        return 2.0 * layer.weight.size
    if layer.input_size is None or layer.groups > 1:
        # no size: S; grouped: every group's Lanczos batched in one product (measured on
        # Conv-TasNet's depthwise layers: faster on two threads)
        return math.inf
    pixels = float(math.prod(layer.input_size))
    if not layer.transposed:
        pixels /= math.prod(layer.stride)
    return 2.0 * layer.kernel.size * pixels


def _analyse_layer(
    layer: ConvLayer | DenseLayer,
    full: bool,
    fold_bn: bool,
    sigma: str,
    options: EngineOptions,
    rt: Runtime,
) -> LayerSpectrum:
    if isinstance(layer, DenseLayer):
        return _dense_layer(layer, full, rt)
    conv = layer_conv(layer, fold_bn, rt)
    kernel = conv.kernel
    folded = fold_bn and layer.bn is not None
    status = check_weight(kernel)
    base: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "bn_folded": folded}
    if status == "non-finite":
        return LayerSpectrum(
            sigma_max=None, status="non-finite", notes=("weights contain NaN or Inf",), **base
        )
    grid = layer.operator_grid()
    if status == "zero":
        zero = NormResult(
            0.0, 0.0, 0.0, True, "exact", layer.padding_mode, grid, "all-zero kernel", tol=rt.tol
        )
        return LayerSpectrum(sigma_max=zero, status="zero", notes=("all-zero kernel",), **base)
    sv, why = _spectrum(layer, conv, full, rt, options.progress)
    if sigma == "none":
        norm = None
    elif (
        sv is not None
        and layer.padding_mode == "circular"
        and grid is not None
        and all(n % s == 0 for n, s in zip(grid, layer.stride, strict=True))
        and (geo := layer_geometry(layer)) is not None
        and geo.is_circular_exact()
    ):
        top = float(sv[0])
        margin = 16 * max(kernel.shape[0], kernel.shape[1]) * float(torch.finfo(rt.real).eps)
        norm = NormResult(
            top,
            top * (1 - margin),
            top * (1 + margin),
            True,
            "exact",
            "circular",
            grid,
            "fft + svd",
            tol=rt.tol,
            guarantee="exact",
        )
    else:
        norm = _conv_sigma(layer, conv, sigma, rt)
    notes = () if why is None else (why,)
    if sv is None:
        return LayerSpectrum(sigma_max=norm, notes=notes, **base)
    return LayerSpectrum(
        sigma_max=norm,
        notes=notes,
        **base,
        **spectrum_stats(sv),
        spectrum_operator="circular",
        spectrum_grid=grid,
    )


def spectrum_stats(sv: np.ndarray) -> dict[str, Any]:
    top = float(sv[0]) if sv.size else 0.0
    low = float(sv[-1]) if sv.size else 0.0
    return {
        "singular_values": sv,
        "sigma_min": low,
        "condition": (top / low) if low > 0 else math.inf,
        "stable_rank": float(np.sum(sv**2) / top**2) if top > 0 else 0.0,
    }


def _dense_layer(layer: DenseLayer, full: bool, rt: Runtime) -> LayerSpectrum:
    w = np.asarray(layer.weight, dtype=np.float64)
    if not np.isfinite(w).all():
        return LayerSpectrum(
            layer.name, layer.kind, None, status="non-finite", notes=("weights contain NaN or Inf",)
        )
    work = float(w.size * min(w.shape)) if w.size else 0.0
    if not full and work > CHEAP_SPECTRUM_WORK:
        # σ_max alone, to the tolerance: Lanczos on the smaller Gram matrix, not every value
        norm = dense_sigma_max(w, rt)
        status = "zero" if norm.upper == 0 else "ok"
        return LayerSpectrum(
            layer.name, layer.kind, norm, status=status, notes=(skipped_spectrum(work),)
        )
    sv = np.linalg.svd(w, compute_uv=False) if w.size else np.zeros(0)
    top = float(sv[0]) if sv.size else 0.0
    margin = 16 * max(w.shape) * float(np.finfo(np.float64).eps)
    norm = NormResult(
        top, top * (1 - margin), top * (1 + margin), True, "exact", "dense", None, "svd",
        tol=rt.tol, guarantee="exact",
    )  # fmt: skip
    status = "zero" if top == 0 else "ok"
    return LayerSpectrum(
        layer.name, layer.kind, norm, status=status, spectrum_operator="dense", **spectrum_stats(sv)
    )


def layer_upper_bound(
    layer: ConvLayer | DenseLayer,
    *,
    fold_bn: bool = False,
    options: EngineOptions = EngineOptions(),
) -> NormResult:
    """A CERTIFIED upper bound on σ_max of the layer's real operator (``.upper``).

    NaN/Inf weights raise UnsupportedLayerError: no finite bound exists.
    """
    rt = runtime(options)
    with engine_threads(rt):
        return _layer_upper_bound(layer, fold_bn, rt)


def _layer_upper_bound(layer: ConvLayer | DenseLayer, fold_bn: bool, rt: Runtime) -> NormResult:
    if isinstance(layer, DenseLayer):
        w = np.asarray(layer.weight, dtype=np.float64)
        if not np.isfinite(w).all():
            raise UnsupportedLayerError(f"{layer.name}: weights contain NaN or Inf")
        if w.size * min(w.shape) > CHEAP_SPECTRUM_WORK:  # no full SVD: Lanczos, certified
            return dense_sigma_max(w, rt, certify=True)
        spec = _dense_layer(layer, False, rt)
        assert spec.sigma_max is not None
        return spec.sigma_max
    conv = layer_conv(layer, fold_bn, rt)
    status = check_weight(conv.kernel)
    if status == "non-finite":
        raise UnsupportedLayerError(
            f"{layer.name}: weights contain NaN or Inf", hint="no finite bound exists"
        )
    if status == "zero":
        return NormResult(
            0.0,
            0.0,
            0.0,
            True,
            "exact",
            layer.padding_mode,
            layer.operator_grid(),
            "all-zero kernel",
            tol=rt.tol,
        )
    return _conv_sigma(layer, conv, "upper-bound", rt)
