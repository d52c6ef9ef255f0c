"""Conv geometry for the engine: normalising arguments, resolving padding, MATH.md §1-§2 grids.

Everything here is integer arithmetic on tuples; no arrays.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from convaudit.errors import UnsupportedLayerError
from convaudit.ir import same_padding

Pads = tuple[tuple[int, int], ...]
PaddingSpec = int | str | Sequence[int] | Sequence[Sequence[int]]


def as_tuple(value: int | Sequence[int], nd: int, label: str) -> tuple[int, ...]:
    """An int -> nd copies; a sequence must have nd positive entries."""
    if isinstance(value, Sequence):
        out = tuple(int(v) for v in value)
    else:
        out = (operator.index(value),) * nd
    if len(out) != nd:
        raise UnsupportedLayerError(
            f"{label} {value!r} must have {nd} entries (one per spatial axis)"
        )
    if any(v < 1 for v in out):
        raise UnsupportedLayerError(f"{label} {value!r} must be positive")
    return out


def resolve_padding(
    padding: PaddingSpec,
    grid: tuple[int, ...] | None,
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> Pads:
    """int, per-axis tuple, explicit (before, after) pairs, "same" or "valid" -> pairs.

    "same" follows ONNX SAME_UPPER / Keras (extra pad after); it needs the grid when the stride
    is not 1. Without a grid and stride 1 it is the symmetric d(k-1) total.
    """
    nd = len(kernel_size)
    if isinstance(padding, str):
        spec = padding.lower()
        if spec == "valid":
            return ((0, 0),) * nd
        if spec != "same":
            raise UnsupportedLayerError(
                f"unknown padding {padding!r}", hint='use an int, pairs, "same" or "valid"'
            )
        if grid is not None:
            return same_padding(grid, kernel_size, stride, dilation)
        if any(s != 1 for s in stride):
            raise UnsupportedLayerError('padding "same" with a stride needs the input size')
        return tuple(
            (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
            for k, d in zip(kernel_size, dilation, strict=True)
        )
    if not isinstance(padding, Sequence):
        p = operator.index(padding)
        pads: Pads = ((p, p),) * nd
    else:
        items: list = list(padding)
        if len(items) != nd:
            raise UnsupportedLayerError(f"padding {padding!r} must have {nd} entries")
        if all(not isinstance(v, Sequence) for v in items):
            pads = tuple((operator.index(v), operator.index(v)) for v in items)
        else:
            pads = tuple((int(v[0]), int(v[1])) for v in items)
    if any(b < 0 or a < 0 for b, a in pads):
        raise UnsupportedLayerError(f"negative padding {padding!r} is not supported")
    return pads


@dataclass(frozen=True)
class ConvGeometry:
    """The forward conv the engine analyses: taps read ``j·s + a·d - before`` for output j.

    ``out_size`` is the number of output positions per axis (for a transposed layer: its input
    size). Positions outside ``[0, grid)`` come from the padding mode.
    """

    grid: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    before: tuple[int, ...]
    out_size: tuple[int, ...]

    @property
    def last_read(self) -> tuple[int, ...]:
        """E per axis: the largest input position any tap reads (MATH.md §2)."""
        return tuple(
            (o - 1) * s + d * (k - 1) - t
            for o, s, d, k, t in zip(
                self.out_size,
                self.stride,
                self.dilation,
                self.kernel_size,
                self.before,
                strict=True,
            )
        )

    @property
    def after(self) -> tuple[int, ...]:
        """Pad after the data that the taps actually read (negative: trailing inputs unread)."""
        return tuple(e - n + 1 for e, n in zip(self.last_read, self.grid, strict=True))

    def sides(self, kernel_shape: tuple[int, ...], groups: int) -> tuple[int, int]:
        """Entries of the operator's input and output for a ``(c_out, c_in/g, *k)`` kernel."""
        inputs = kernel_shape[1] * groups * math.prod(self.grid)
        return inputs, kernel_shape[0] * math.prod(self.out_size)

    def is_circular_exact(self) -> bool:
        """Output covers exactly one period: out·s == N per axis (MATH.md §1)."""
        return all(
            o * s == n for o, s, n in zip(self.out_size, self.stride, self.grid, strict=True)
        )

    def zero_pad_bound_grid(self) -> tuple[int, ...]:
        """Smallest N >= H + max(t, E - H + 1) with s | N: σ_zero <= σ_circ(N) (MATH.md §2)."""
        out = []
        for n, t, e, s in zip(self.grid, self.before, self.last_read, self.stride, strict=True):
            need = n + max(t, e - n + 1, 0)
            out.append(math.ceil(need / s) * s)
        return tuple(out)


def forward_geometry(
    grid: tuple[int, ...],
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    pads: Pads,
) -> ConvGeometry:
    """Geometry of a plain (non-transposed) conv with explicit pads on ``grid``."""
    out = tuple(
        (n + b + a - d * (k - 1) - 1) // s + 1
        for n, (b, a), k, s, d in zip(grid, pads, kernel_size, stride, dilation, strict=True)
    )
    if any(o < 1 for o in out):
        raise UnsupportedLayerError(
            f"the kernel {kernel_size} (dilation {dilation}) does not fit the padded input {grid}"
        )
    return ConvGeometry(grid, kernel_size, stride, dilation, tuple(b for b, _ in pads), out)


def transposed_geometry(
    in_size: tuple[int, ...],
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    pads: Pads,
    output_padding: tuple[int, ...] = (),
) -> ConvGeometry:
    """A transposed conv is the adjoint of the forward conv on its output grid (MATH.md §1)."""
    op = output_padding or (0,) * len(in_size)
    grid = tuple(
        (n - 1) * s - b - a + d * (k - 1) + p + 1
        for n, (b, a), k, s, d, p in zip(
            in_size, pads, kernel_size, stride, dilation, op, strict=True
        )
    )
    if any(g < 1 for g in grid):
        raise UnsupportedLayerError(f"transposed conv output size {grid} is empty")
    return ConvGeometry(
        grid, kernel_size, stride, dilation, tuple(b for b, _ in pads), tuple(in_size)
    )


def circular_same_geometry(
    grid: tuple[int, ...],
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> ConvGeometry:
    """The circular operator of MATH.md §1 ("same" pad, any split) on ``grid``; out = ceil(N/s)."""
    pads = tuple(
        (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
        for k, d in zip(kernel_size, dilation, strict=True)
    )
    out = tuple(-(-n // s) for n, s in zip(grid, stride, strict=True))
    return ConvGeometry(grid, kernel_size, stride, dilation, tuple(b for b, _ in pads), out)
