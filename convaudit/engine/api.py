"""Public engine API on bare kernels: ``singular_values`` and ``operator_norm``.

Weights are in PyTorch layout ``(c_out, c_in/groups, *spatial)`` (a transposed conv's weight as
PyTorch/ONNX store it, ``(c_in, c_out/groups, *spatial)``), as a numpy array or torch tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from convaudit.engine.conv import Conv, LayerOperator
from convaudit.engine.geometry import (
    PaddingSpec,
    as_tuple,
    forward_geometry,
    resolve_padding,
    transposed_geometry,
)
from convaudit.engine.results import EngineOptions, NormResult
from convaudit.engine.runtime import Runtime, engine_threads, runtime
from convaudit.engine.sigma.methods import any_size_norm, check_weight, conv_norm
from convaudit.engine.spectrum.circular import circular_spectrum
from convaudit.engine.spectrum.dense import dense_singular_values
from convaudit.errors import UnsupportedLayerError
from convaudit.ir import PADDING_MODES


def as_kernel(weight: Any, rt: Runtime) -> torch.Tensor:
    """numpy / torch / nested sequence -> tensor on the runtime's device and dtype, checked."""
    t = weight.detach() if isinstance(weight, torch.Tensor) else torch.as_tensor(np.asarray(weight))
    if t.ndim not in (3, 4, 5):
        raise UnsupportedLayerError(
            f"weight must have 3 to 5 dims (c_out, c_in/groups, *spatial), got shape {tuple(t.shape)}"
        )
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise UnsupportedLayerError(f"weight must be real, got dtype {t.dtype}")
    t = t.to(device=rt.device, dtype=rt.real)
    status = check_weight(t)
    if status == "non-finite":
        raise UnsupportedLayerError(
            "weight contains NaN or Inf", hint="the layer's weights are corrupt"
        )
    return t


def _grid(input_size: int | Sequence[int], nd: int) -> tuple[int, ...]:
    return as_tuple(input_size, nd, "input_size")


def _check_groups(kernel: torch.Tensor, groups: int) -> None:
    if groups < 1 or kernel.shape[0] % groups:
        raise UnsupportedLayerError(
            f"groups={groups} does not divide the weight's first dim {kernel.shape[0]}"
        )


def singular_values(
    weight: Any,
    input_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    transposed: bool = False,
    dtype: str = "float64",
    device: str = "cpu",
    max_memory: int | None = None,
    progress: Any = None,
) -> np.ndarray:
    """Every singular value of the circular-padding conv on the grid ``input_size``, with
    multiplicity, sorted descending.

    The operator is the conv with circular "same" padding (total d(k-1); its split is a shift and
    does not matter) and the given stride. For ``transposed=True`` it is the transposed conv
    applied to an ``input_size`` grid, whose output grid is ``input_size·stride`` (the adjoint of
    the forward conv there: same singular values). Exact (FFT, MATH.md §1) when the stride divides
    the grid; otherwise the dense operator for small layers, else UnsupportedLayerError.
    float32 gives every value to ~2e-7·σ_max absolute; float64 to ~1e-15·σ_max (MATH.md §5).
    """
    rt = runtime(EngineOptions(dtype=dtype, device=device, max_memory=max_memory))  # type: ignore[arg-type]
    kernel = as_kernel(weight, rt)
    _check_groups(kernel, groups)
    nd = kernel.ndim - 2
    s = as_tuple(stride, nd, "stride")
    d = as_tuple(dilation, nd, "dilation")
    grid = _grid(input_size, nd)
    if transposed:
        grid = tuple(n * si for n, si in zip(grid, s, strict=True))
    conv = Conv(kernel, s, d, groups)
    with engine_threads(rt):
        if all(n % si == 0 for n, si in zip(grid, s, strict=True)):
            return circular_spectrum(conv, grid, rt, progress)
        op = LayerOperator(conv, conv.circular_geometry(grid), "circular")
        return dense_singular_values(op, why=f"stride {s} does not divide the grid {grid}")


def operator_norm(
    weight: Any,
    input_size: int | Sequence[int] | None,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingSpec = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    transposed: bool = False,
    method: str = "exact",
    output_padding: int | Sequence[int] = 0,
    dtype: str = "float64",
    device: str = "cpu",
    tol: float = 1e-6,
    max_memory: int | None = None,
) -> NormResult:
    """σ_max of the conv's real operator with a certified bracket ``[lower, upper]``.

    ``method="exact"``: circular layers by FFT; padded layers by Lanczos on AᵀA (``exact`` is
    True only when it converged within ``tol``; ``upper`` is always a certified bound).
    ``method="upper-bound"``: only the cheap certified bound. ``input_size=None``: the
    size-independent bound S, valid for every input size (``operator == "any-size"``).
    """
    if padding_mode not in PADDING_MODES:
        raise UnsupportedLayerError(
            f"unknown padding_mode {padding_mode!r}", hint=f"use one of {', '.join(PADDING_MODES)}"
        )
    if transposed and padding_mode != "zeros":
        raise UnsupportedLayerError(
            "transposed convolutions support only zero padding (as in PyTorch/ONNX)"
        )
    rt = runtime(EngineOptions(dtype=dtype, device=device, max_memory=max_memory, tol=tol))  # type: ignore[arg-type]
    kernel = as_kernel(weight, rt)
    _check_groups(kernel, groups)
    nd = kernel.ndim - 2
    ksize = tuple(kernel.shape[2:])
    s = as_tuple(stride, nd, "stride")
    d = as_tuple(dilation, nd, "dilation")
    conv = Conv(kernel, s, d, groups)
    if input_size is None:
        # Pads only matter here through the padding gain of reflect/replicate/circular; "same"
        # without a size is taken as its stride-1 split (the total is what the gain uses).
        pads = resolve_padding(
            padding, None, ksize, (1,) * nd if isinstance(padding, str) else s, d
        )
        with engine_threads(rt):
            return any_size_norm(conv, pads, padding_mode, rt)
    grid = _grid(input_size, nd)
    pads = resolve_padding(padding, grid, ksize, s, d)
    if transposed:
        op = (
            (int(output_padding),) * nd
            if isinstance(output_padding, int)
            else tuple(int(v) for v in output_padding)
        )
        geometry = transposed_geometry(grid, ksize, s, d, pads, op)
    else:
        geometry = forward_geometry(grid, ksize, s, d, pads)
    with engine_threads(rt):
        return conv_norm(LayerOperator(conv, geometry, padding_mode), method, rt)
