"""How many times a nearest-neighbour Resize / Upsample copies one input element, per axis.

The operator copies input elements into the output, so its norm is sqrt(the largest number of
copies of one element); that count factors over the axes. We recompute the index map exactly as
the ONNX spec defines it (coordinate transformation, rounding mode, clamping at the border).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx

from convaudit.loaders.onnx.nodes import text


def resize_factor(
    node: onnx.NodeProto,
    a: Mapping[str, Any],
    opset: int,
    shapes: Mapping[str, tuple[int | None, ...]],
    const: Callable[[onnx.NodeProto, int], np.ndarray | None],
) -> tuple[int, ...] | None:
    """Per spatial axis, the most copies of one input element; None if not a nearest resize
    with known sizes (or if it mixes batch/channel elements)."""
    mode = text(a.get("mode", b"nearest"))
    shape = shapes.get(node.input[0])
    if mode != "nearest" or shape is None or any(d is None for d in shape) or len(shape) < 3:
        return None
    n_in = [int(d) for d in shape if d is not None]
    legacy = node.op_type == "Upsample" or opset < 11
    if legacy:
        ctm, rounding = "asymmetric", "floor"
        scales = a.get("scales")
        scales = np.asarray(scales if scales is not None else const(node, 1))
        sizes = None
    else:
        if "axes" in a:
            return None
        ctm = text(a.get("coordinate_transformation_mode", b"half_pixel"))
        rounding = text(a.get("nearest_mode", b"round_prefer_floor"))
        scales = const(node, 2)
        sizes = const(node, 3)
        if (sizes is None or sizes.size == 0) and (scales is None or scales.size == 0):
            return None
        if (
            sizes is not None
            and sizes.size
            and text(a.get("keep_aspect_ratio_policy", b"stretch")) != "stretch"
        ):
            return None
    if scales is not None and scales.size == 0:
        scales = None
    if scales is None and sizes is None:
        return None
    if scales is not None:
        scale = [float(s) for s in np.asarray(scales).ravel()]
        n_out = [int(np.floor(n * s)) for n, s in zip(n_in, scale, strict=True)]
    else:
        n_out = [int(s) for s in np.asarray(sizes).ravel()]
        scale = [o / n for o, n in zip(n_out, n_in, strict=True)]
    if len(scale) != len(n_in) or n_out[:2] != n_in[:2]:
        return None
    counts = []
    for n, o, s in zip(n_in[2:], n_out[2:], scale[2:], strict=True):
        count = max_copies(n, o, s, ctm, rounding)
        if count is None:
            return None
        counts.append(count)
    return tuple(counts)


def max_copies(n_in: int, n_out: int, scale: float, ctm: str, rounding: str) -> int | None:
    """Largest number of outputs that read one input element along one axis."""
    if n_in <= 0 or n_out <= 0:
        return None
    x = np.arange(n_out, dtype=np.float64)
    if ctm == "half_pixel":
        orig = (x + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        orig = (x + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(x)
    elif ctm == "align_corners":
        orig = x * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(x)
    elif ctm == "asymmetric":
        orig = x / scale
    elif ctm == "tf_half_pixel_for_nn":
        orig = (x + 0.5) / scale
    else:
        return None
    if rounding == "round_prefer_floor":
        rounded = np.ceil(orig - 0.5)
    elif rounding == "round_prefer_ceil":
        rounded = np.floor(orig + 0.5)
    elif rounding in ("floor", "ceil"):
        rounded = np.floor(orig) if rounding == "floor" else np.ceil(orig)
    else:
        return None
    index = np.clip(rounded, 0, n_in - 1).astype(np.int64)
    return int(np.bincount(index, minlength=n_in).max())
