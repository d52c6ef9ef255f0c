"""Explicit (before, after) pads of an ONNX Conv / ConvTranspose from its attributes.

ONNX writes ``pads`` as all begins then all ends; ``auto_pad`` SAME_UPPER / SAME_LOWER depend
on the input size (the extra pad goes after / before); a ConvTranspose may instead give
``output_shape``, from which the pads follow. Opset defaults: no padding, NOTSET.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convaudit.ir import same_padding
from convaudit.loaders.onnx.nodes import text

Pads = tuple[tuple[int, int], ...]


def conv_padding(
    a: Mapping[str, Any],
    ksize: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    input_size: tuple[int, ...] | None,
    transposed: bool,
) -> tuple[Pads, str, tuple[int, ...]]:
    """(pads, padding_spec, output_padding); ValueError when they cannot be resolved."""
    nd = len(ksize)
    auto_pad = text(a.get("auto_pad", b"NOTSET"))
    out_pad = tuple(int(p) for p in a.get("output_padding", [0] * nd)) if transposed else ()
    if transposed and ("output_shape" in a or auto_pad in ("SAME_UPPER", "SAME_LOWER")):
        target = list(a["output_shape"])[-nd:] if "output_shape" in a else None
        pads = transposed_pads(auto_pad, ksize, stride, dilation, input_size, out_pad, target)
        return pads, "explicit", out_pad
    if auto_pad in ("NOTSET", ""):
        flat = [int(p) for p in a.get("pads", [0] * 2 * nd)]
        if len(flat) != 2 * nd:
            raise ValueError(f"pads {flat} must have {2 * nd} entries")
        return tuple((flat[i], flat[i + nd]) for i in range(nd)), "explicit", out_pad
    if auto_pad == "VALID":
        return ((0, 0),) * nd, "valid", out_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        lower = auto_pad == "SAME_LOWER"
        spec = "same_lower" if lower else "same"
        if input_size is None:
            # Unknown size: the stride-1 pads (size-independent); the spec lets the engine redo it.
            return same_padding((1,) * nd, ksize, (1,) * nd, dilation, lower=lower), spec, out_pad
        return same_padding(input_size, ksize, stride, dilation, lower=lower), spec, out_pad
    raise ValueError(f"unknown auto_pad {auto_pad!r}")


def transposed_pads(
    auto_pad: str,
    ksize: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    input_size: tuple[int, ...] | None,
    out_pad: tuple[int, ...],
    target: list[int] | None,
) -> Pads:
    """ConvTranspose pads that give ``target`` (default: input * stride, i.e. SAME)."""
    if input_size is None:
        raise ValueError("ConvTranspose with output_shape/SAME padding needs a known input size")
    if target is None:
        target = [n * s for n, s in zip(input_size, stride, strict=True)]
    pads = []
    for ax, n in enumerate(input_size):
        full = stride[ax] * (n - 1) + out_pad[ax] + (ksize[ax] - 1) * dilation[ax] + 1
        total = full - int(target[ax])
        if total < 0:
            raise ValueError("ConvTranspose output_shape is larger than its full output")
        small, big = total // 2, total - total // 2
        pads.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    return tuple(pads)
