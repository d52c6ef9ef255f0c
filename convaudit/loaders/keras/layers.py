"""Turn one Keras layer (class, config, weights) into IR layers, and convert kernel layouts.

Keras stores kernels channels-last whatever the layer's ``data_format``:
- conv ``(*k, c_in/g, c_out)`` -> canonical ``(c_out, c_in/g, *k)``;
- transposed conv ``(*k, c_out, c_in)`` -> PyTorch ConvTranspose ``(c_in, c_out, *k)``, the
  forward conv whose adjoint the layer is (no spatial flip: both are cross-correlations);
- depthwise ``(*k, c_in, m)`` -> ``(c_in*m, 1, *k)`` with groups = c_in (output ``c*m + j``);
- dense ``(in, out)`` -> ``(out, in)``.
The layout name goes into the Provenance so the writer can invert it.

Padding: "valid" = 0; "same" = TF same (extra pad after; ir.same_padding); "causal" = left pad
d(k-1). A transposed conv is the adjoint of the forward conv on its output grid (TF/JAX window).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from convaudit.ir import BatchNormParams, ConvLayer, DenseLayer, Provenance, same_padding
from convaudit.loaders.keras.h5 import LayerWeights
from convaudit.loaders.keras.shapes import deconv_length, nd_of, tup

FORMAT = "keras"
#: a stand-in size for resolving "same" pads of a layer whose input size is unknown
_UNKNOWN = 1 << 20


def to_canonical(kernel: np.ndarray, layout: str) -> np.ndarray:
    nd = kernel.ndim - 2
    if layout in ("keras-conv", "keras-conv-transpose"):
        return np.ascontiguousarray(kernel.transpose(nd + 1, nd, *range(nd)))
    if layout == "keras-depthwise":
        c, m = kernel.shape[nd], kernel.shape[nd + 1]
        return np.ascontiguousarray(
            kernel.transpose(nd, nd + 1, *range(nd)).reshape(c * m, 1, *kernel.shape[:nd])
        )
    if layout == "keras-dense":
        return np.ascontiguousarray(kernel.T)
    raise ValueError(f"unknown Keras layout {layout!r}")


def from_canonical(kernel: np.ndarray, layout: str, stored_shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_canonical`, shaped like the stored dataset."""
    nd = kernel.ndim - 2
    if layout in ("keras-conv", "keras-conv-transpose"):
        out = kernel.transpose(*range(2, nd + 2), 1, 0)
    elif layout == "keras-depthwise":
        c, m = stored_shape[-2], stored_shape[-1]
        out = kernel.reshape(c, m, *kernel.shape[2:]).transpose(*range(2, nd + 2), 0, 1)
    elif layout == "keras-dense":
        out = kernel.T
    else:
        raise ValueError(f"unknown Keras layout {layout!r}")
    if tuple(out.shape) != tuple(stored_shape):
        raise ValueError(f"kernel of shape {kernel.shape} does not fit the stored {stored_shape}")
    return np.ascontiguousarray(out)


def forward_padding(
    spec: str,
    size: tuple[int, ...] | None,
    k: tuple[int, ...],
    s: tuple[int, ...],
    d: tuple[int, ...],
) -> tuple[tuple[tuple[int, int], ...], str]:
    """Explicit pads and the padding_spec for a Keras conv."""
    nd = len(k)
    if spec == "same":
        return same_padding(size or (_UNKNOWN * max(s),) * nd, k, s, d), "same"
    if spec == "causal":
        return tuple((dd * (kk - 1), 0) for kk, dd in zip(k, d, strict=True)), "explicit"
    return ((0, 0),) * nd, "valid"


def transpose_padding(
    spec: str,
    size: tuple[int, ...] | None,
    k: tuple[int, ...],
    s: tuple[int, ...],
    d: tuple[int, ...],
    output_padding: tuple[int, ...] | None,
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """(crop pads, output_padding) of a Keras transposed conv, as in ConvLayer.output_size.

    The layer is the adjoint of a forward conv on its output grid (keras deconv_output_length)
    with that grid's TF "same" pads: the window TF, JAX and (since Keras 3.1x) torch compute.
    """
    pads, extra = [], []
    for ax in range(len(k)):
        op = None if output_padding is None else output_padding[ax]
        n = size[ax] if size is not None else _UNKNOWN
        out = deconv_length(n, k[ax], s[ax], d[ax], spec, op)
        if out is None:
            raise ValueError("transposed conv output size")
        full = (n - 1) * s[ax] + d[ax] * (k[ax] - 1) + 1
        p = same_padding((out,), (k[ax],), (s[ax],), (d[ax],))[0] if spec == "same" else (0, 0)
        pads.append(p)
        extra.append(out - (full - p[0] - p[1]))
    return tuple(pads), tuple(extra)


@dataclass(frozen=True)
class Context:
    """What building a layer needs besides its own config: datasets and provenance.

    ``read`` returns a dataset's values (after the size checks); ``meta`` returns
    (shape, dtype name) without reading anything.
    """

    read: Callable[[str], np.ndarray]
    meta: Callable[[str], tuple[tuple[int, ...], str]]
    provenance_extra: tuple[tuple[str, str], ...]

    def ndim(self, path: str) -> int:
        return len(self.meta(path)[0])

    def is_float(self, path: str) -> bool:
        return self.meta(path)[1].startswith(("float", "bfloat"))


def _prov(ctx: Context, path: str, layout: str, array: np.ndarray, role: str) -> Provenance:
    extra = dict(ctx.provenance_extra)
    extra["role"] = role
    return Provenance(FORMAT, path, layout, str(array.dtype), tuple(sorted(extra.items())))


def _float(array: np.ndarray) -> np.ndarray:
    """Half-precision kernels are widened; integer (quantised) kernels never get here."""
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)


def build_conv(
    name: str,
    class_name: str,
    cfg: Mapping[str, Any],
    weights: LayerWeights,
    input_size: tuple[int, ...] | None,
    ctx: Context,
    notes: tuple[str, ...] = (),
) -> list[ConvLayer]:
    """The operators of one Keras conv layer (two for SeparableConv: depthwise, pointwise)."""
    nd = nd_of(class_name)
    first = weights.path("kernel") or weights.need("depthwise_kernel")
    k = ctx.meta(first)[0][:nd]  # the stored kernel, whatever the config says
    s, d = tup(cfg.get("strides", 1), nd), tup(cfg.get("dilation_rate", 1), nd)
    spec = str(cfg.get("padding", "valid")).lower()
    bias_path = weights.path("bias")
    bias = _float(ctx.read(bias_path)) if bias_path else None
    common: dict[str, Any] = {"stride": s, "dilation": d, "input_size": input_size, "notes": notes}

    if class_name.startswith(("DepthwiseConv", "SeparableConv")):
        path = weights.need("depthwise_kernel")
        raw = ctx.read(path)
        pads, pspec = forward_padding(spec, input_size, k, s, d)
        depthwise = ConvLayer(
            name=name if class_name.startswith("Depthwise") else f"{name}/depthwise",
            kernel=_float(to_canonical(raw, "keras-depthwise")),
            padding=pads,
            padding_spec=pspec,
            groups=int(raw.shape[-2]),
            bias=bias if class_name.startswith("Depthwise") else None,
            provenance=_prov(ctx, path, "keras-depthwise", raw, "depthwise_kernel"),
            kind="depthwise" if class_name.startswith("Depthwise") else "separable-depthwise",
            **common,
        )
        if class_name.startswith("Depthwise"):
            return [depthwise]
        point_path = weights.need("pointwise_kernel")
        praw = ctx.read(point_path)
        pointwise = ConvLayer(
            name=f"{name}/pointwise",
            kernel=_float(to_canonical(praw, "keras-conv")),
            stride=(1,) * nd,
            dilation=(1,) * nd,
            padding=((0, 0),) * nd,
            padding_spec="valid",
            input_size=depthwise.output_size(),
            bias=bias,
            provenance=_prov(ctx, point_path, "keras-conv", praw, "pointwise_kernel"),
            kind="separable-pointwise",
            notes=notes,
        )
        return [depthwise, pointwise]

    path = weights.need("kernel")
    raw = ctx.read(path)
    if "Transpose" in class_name:
        ops = cfg.get("output_padding")
        opt = tup(ops, nd) if ops is not None else None
        pads, extra = transpose_padding(spec, input_size, k, s, d, opt)
        return [
            ConvLayer(
                name=name,
                kernel=_float(to_canonical(raw, "keras-conv-transpose")),
                padding=pads,
                padding_spec="same" if spec == "same" else "explicit",
                transposed=True,
                output_padding=extra,
                bias=bias,
                provenance=_prov(ctx, path, "keras-conv-transpose", raw, "kernel"),
                **common,
            )
        ]
    pads, pspec = forward_padding(spec, input_size, k, s, d)
    return [
        ConvLayer(
            name=name,
            kernel=_float(to_canonical(raw, "keras-conv")),
            padding=pads,
            padding_spec=pspec,
            groups=int(cfg.get("groups", 1) or 1),
            bias=bias,
            provenance=_prov(ctx, path, "keras-conv", raw, "kernel"),
            **common,
        )
    ]


def build_dense(
    name: str, weights: LayerWeights, ctx: Context, notes: tuple[str, ...] = ()
) -> DenseLayer:
    path = weights.need("kernel")
    raw = ctx.read(path)
    bias_path = weights.path("bias")
    return DenseLayer(
        name=name,
        weight=_float(to_canonical(raw, "keras-dense")),
        bias=_float(ctx.read(bias_path)) if bias_path else None,
        provenance=_prov(ctx, path, "keras-dense", raw, "kernel"),
        notes=notes,
    )


def build_bn(
    name: str, cfg: Mapping[str, Any], weights: LayerWeights, ctx: Context
) -> BatchNormParams:
    """Eval-mode BN; a layer built with scale=False / center=False has no gamma / beta."""
    mean_path, var_path = weights.need("moving_mean"), weights.need("moving_variance")
    mean = _float(ctx.read(mean_path)).astype(np.float64)
    var = _float(ctx.read(var_path)).astype(np.float64)
    gamma_path, beta_path = weights.path("gamma"), weights.path("beta")
    gamma = _float(ctx.read(gamma_path)).astype(np.float64) if gamma_path else np.ones_like(mean)
    beta = _float(ctx.read(beta_path)).astype(np.float64) if beta_path else np.zeros_like(mean)
    return BatchNormParams(gamma, beta, mean, var, float(cfg.get("epsilon", 1e-3)), name)
