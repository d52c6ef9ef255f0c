"""Certified Lipschitz constants (2-norm) of the non-conv ops network.py propagates through.

Every constant is the exact supremum of |f'| over the real line (or a proven upper bound),
rounded UP, so it holds for every input. Elementwise ops act on each coordinate separately,
so their 2-norm Lipschitz constant is the scalar one.

Activations (``fn`` attr, lower case):

- relu, relu6, clip, hardtanh, abs, neg, tanh, softsign, sin, cos, celu (alpha > 0), softplus
  (any beta: f' = sigmoid(beta·x) <= 1): **1**.
- leaky_relu: max(1, |alpha|); prelu: max(1, max|slope|); elu: max(1, |alpha|) (f' = alpha·e^x
  on x < 0); selu: gamma·max(1, alpha) = 1.0507·1.6733 = 1.75810 with the standard constants.
- sigmoid: sigma' = sigma(1 - sigma) <= **1/4** (at 0). hard_sigmoid: |alpha| (ONNX default 0.2;
  torch / Keras 3 use 1/6; 0.2 is assumed when the loader gave no alpha).
- gelu (erf form): f'(x) = Phi(x) + x·phi(x); f'' = phi(x)(2 - x^2) = 0 at x = ±sqrt(2), so
  sup f' = Phi(sqrt 2) + sqrt(2)·phi(sqrt 2) = 1.1289041452 (and inf f' = -0.1289 > -1). The
  tanh approximation peaks at x = 1.41850 with 1.1289930687. We use **1.129** for both.
- silu / swish (x·sigmoid(beta·x), any beta > 0: f'(x) = g'(beta·x) for g = silu): f'' = 0 at
  x = 2.399357, sup f' = 1.0998393201 -> **1.09984**. mish: sup f' = 1.0884981613 at x = 1.49057
  -> **1.0885**.
- hardswish x·relu6(x + 3)/6: f' = (2x + 3)/6 on (-3, 3), so sup |f'| = **1.5** (at x -> 3).
- softmax (along any axis): the Jacobian J = diag(p) - p·pᵀ is symmetric, so
  ||J||_2 <= ||J||_inf = max_i 2·p_i(1 - p_i) <= **1/2**, attained at p = (1/2, 1/2, 0, ...).
  Softmax over many independent vectors is block diagonal: still 1/2.
- thresholded_relu / hard step functions are discontinuous: no finite constant (no rule).

Pooling (per spatial axis ``a``: kernel k, stride s, dilation d):

- max pool: |max_w a - max_w b| <= ||a - b||_w for each window w, so the squared output
  difference is at most c·||a - b||^2 with c the most windows covering one pixel:
  c = prod_a ceil(k_a·gcd(d_a, s_a) / s_a) (the taps j·d mod s of one window hit at most
  ceil(k / (s / gcd(d, s))) times any residue). Bound sqrt(c): 1 for non-overlapping windows.
  global max pool: 1.
- average pool is linear and separable: the operator is the Kronecker product of one small
  (n_out x n_in) averaging matrix per axis, so its 2-norm is the product of their 2-norms:
  computed exactly by SVD when the loader gives ``input_size``. Without it, the Schur test
  ||A||^2 <= ||A||_1·||A||_inf per axis: rows sum to <= 1, columns to <= c_a / (smallest
  divisor). global average pool over N pixels: 1/sqrt(N) (1 when N is unknown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GELU = 1.129
SILU = 1.09984
MISH = 1.0885
SELU_ALPHA = 1.6732632423543772
SELU_GAMMA = 1.0507009873554805

_ONE = frozenset(
    {
        "relu",
        "relu6",
        "clip",
        "hardtanh",
        "abs",
        "neg",
        "tanh",
        "softsign",
        "sin",
        "cos",
        "celu",
        "softplus",
        "identity",
        "linear",
    }
)


class RuleError(ValueError):
    """The op (with these attributes) has no certified Lipschitz rule."""


def activation_constant(attrs: Mapping[str, Any]) -> float:
    """The Lipschitz constant of the elementwise (or softmax) activation described by attrs."""
    fn = str(attrs.get("fn", "")).lower().replace("-", "_")
    if fn in _ONE:
        return 1.0
    if fn == "leaky_relu":
        return max(1.0, abs(float(attrs.get("alpha", 0.01))))
    if fn == "prelu":
        slope = attrs.get("slope", attrs.get("alpha"))
        if slope is None or np.size(slope) == 0:
            raise RuleError("PReLU without its slope")
        return max(1.0, float(np.max(np.abs(np.asarray(slope, np.float64)))))
    if fn == "elu":
        return max(1.0, abs(float(attrs.get("alpha", 1.0))))
    if fn == "selu":
        alpha = abs(float(attrs.get("alpha", SELU_ALPHA)))
        return abs(float(attrs.get("gamma", SELU_GAMMA))) * max(1.0, alpha)
    if fn == "sigmoid":
        return 0.25
    if fn in ("hard_sigmoid", "hardsigmoid"):
        return abs(float(attrs.get("alpha", 0.2)))
    if fn in ("gelu", "gelu_tanh"):
        return GELU
    if fn in ("silu", "swish"):
        return SILU
    if fn == "mish":
        return MISH
    if fn in ("hardswish", "hard_swish", "hard_silu"):
        return 1.5
    if fn == "softmax":
        return 0.5
    raise RuleError(f"no Lipschitz rule for activation {fn or '(unnamed)'}")


def _axes(attrs: Mapping[str, Any], key: str, nd: int, default: int) -> tuple[int, ...]:
    value = attrs.get(key)
    if value is None or (isinstance(value, Sequence) and len(value) == 0):
        return (default,) * nd
    if isinstance(value, (int, np.integer)):
        return (int(value),) * nd
    out = tuple(int(v) for v in value)
    if len(out) != nd:
        raise RuleError(f"{key} {value!r} does not match the kernel's {nd} axes")
    return out


def _geometry(attrs: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    kernel = attrs.get("kernel")
    if kernel is None:
        raise RuleError("the loader gave no pool kernel size")
    k = (int(kernel),) if isinstance(kernel, (int, np.integer)) else tuple(int(v) for v in kernel)
    s = _axes(attrs, "stride", len(k), 1)  # stride 1 when not given: the most overlap, safe
    d = _axes(attrs, "dilation", len(k), 1)
    if min(k + s + d) < 1:
        raise RuleError(f"bad pool geometry kernel={k} stride={s} dilation={d}")
    return k, s, d


def windows_per_pixel(k: int, s: int, d: int) -> int:
    """Most windows of one axis that contain the same input position."""
    return math.ceil(k * math.gcd(d, s) / s)


def maxpool_bound(attrs: Mapping[str, Any]) -> float:
    k, s, d = _geometry(attrs)
    return math.sqrt(math.prod(windows_per_pixel(*g) for g in zip(k, s, d, strict=True)))


def _pads(attrs: Mapping[str, Any], nd: int) -> tuple[tuple[int, int], ...]:
    pads = attrs.get("padding")
    if pads is None or (isinstance(pads, Sequence) and len(pads) == 0):
        return ((0, 0),) * nd
    if isinstance(pads, (int, np.integer)):
        return ((int(pads), int(pads)),) * nd
    out = tuple(
        (int(p), int(p)) if isinstance(p, (int, np.integer)) else (int(p[0]), int(p[1]))
        for p in pads
    )
    if len(out) != nd:
        raise RuleError(f"padding {pads!r} does not match the kernel's {nd} axes")
    return out


def average_matrix(
    n: int,
    k: int,
    s: int,
    d: int,
    pad: tuple[int, int],
    *,
    count_include_pad: bool,
    ceil_mode: bool,
) -> np.ndarray:
    """The (n_out x n) matrix of a 1-D average pool, with torch/ONNX divisor conventions."""
    before, after = pad
    span = d * (k - 1) + 1
    extent = n + before + after - span
    if extent < 0:
        raise RuleError(f"pool window {span} larger than the padded input {n + before + after}")
    n_out = (-(-extent // s) if ceil_mode else extent // s) + 1
    if ceil_mode and (n_out - 1) * s >= n + before:
        n_out -= 1  # torch / ONNX drop a last window that would start in the right padding
    a = np.zeros((n_out, n))
    for i in range(n_out):
        taps = [i * s - before + j * d for j in range(k)]
        inside = [p for p in taps if 0 <= p < n]
        padded = [p for p in taps if -before <= p < n + after]
        divisor = len(padded) if count_include_pad else len(inside)
        for p in inside:
            a[i, p] += 1.0 / max(divisor, 1)
    return a


def avgpool_bound(attrs: Mapping[str, Any]) -> float:
    k, s, d = _geometry(attrs)
    pads = _pads(attrs, len(k))
    include = bool(attrs.get("count_include_pad", False))
    ceil_mode = bool(attrs.get("ceil_mode", False))
    size = attrs.get("input_size")
    if size is not None and len(size) == len(k):
        norms = [
            float(
                np.linalg.norm(
                    average_matrix(
                        int(n), ka, sa, da, pa, count_include_pad=include, ceil_mode=ceil_mode
                    ),
                    2,
                )
            )
            for n, ka, sa, da, pa in zip(size, k, s, d, pads, strict=True)
        ]
        return math.prod(norms) * (1 + 1e-12)  # SVD rounding, kept on the safe side
    out = 1.0
    for ka, sa, da, pa in zip(k, s, d, pads, strict=True):
        full_windows = not ceil_mode and (include or pa == (0, 0))
        smallest_divisor = ka if full_windows else 1
        out *= math.sqrt(windows_per_pixel(ka, sa, da) / smallest_divisor)
    return out


def global_avgpool_bound(attrs: Mapping[str, Any]) -> float:
    size = attrs.get("input_size")
    if size:
        return 1.0 / math.sqrt(math.prod(int(n) for n in size))
    return 1.0
