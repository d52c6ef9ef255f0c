"""Exact reductions of a layer's operator to a smaller one with the same σ_max.

- **Unit axes.** An axis with a 1-tap kernel and stride 1 couples nothing along it: the
  operator is I ⊗ A' (plus zero rows for zero padding), so σ_max = σ_max(A'), the conv
  without that axis. A Conv3d (1, 11, 11) on D slices is its 2-D conv, once.
- **Dilation classes** (zero padding, stride 1). A conv dilated by d only couples positions
  in the same residue class mod d: input class c (positions c, c + d, ...) feeds exactly the
  output class (c + t) mod d, through an undilated conv on ⌈(n - c)/d⌉ entries. The operator
  is the direct sum of these d blocks. Each block is a section (a contiguous set of rows and
  columns) of one bi-infinite Toeplitz operator, so a block whose section contains every
  other's (up to a common shift) has the largest σ_max, exactly. Dilation 4 at 256² is then
  an undilated conv at 64², a 16th of the work.
"""

from __future__ import annotations

import dataclasses

from convaudit.engine.conv import LayerOperator
from convaudit.engine.geometry import ConvGeometry


def equivalent_operator(op: LayerOperator) -> tuple[LayerOperator, str] | None:
    """A smaller operator with exactly the same σ_max and what was reduced, or None."""
    done: list[str] = []
    current = op
    unit = _drop_unit_axes(current)
    if unit is not None:
        current, what = unit
        done.append(what)
    dilated = _dilation_class(current)
    if dilated is not None:
        current, what = dilated
        done.append(what)
    return (current, "; ".join(done)) if done else None


def _drop_unit_axes(op: LayerOperator) -> tuple[LayerOperator, str] | None:
    conv, g = op.conv, op.geometry
    drop = [
        ax
        for ax in range(conv.nd)
        if conv.kernel_size[ax] == 1
        and g.stride[ax] == 1
        and (op.mode == "zeros" or (g.before[ax] == 0 and g.after[ax] == 0))
    ]
    if not drop or len(drop) == conv.nd:
        return None
    keep = [ax for ax in range(conv.nd) if ax not in drop]
    reduced = conv.without_axes(tuple(drop))
    geometry = ConvGeometry(
        tuple(g.grid[a] for a in keep),
        tuple(g.kernel_size[a] for a in keep),
        tuple(g.stride[a] for a in keep),
        tuple(g.dilation[a] for a in keep),
        tuple(g.before[a] for a in keep),
        tuple(g.out_size[a] for a in keep),
    )
    what = f"the {len(keep)}-D conv without the 1-tap axes {', '.join(map(str, drop))}"
    return LayerOperator(reduced, geometry, op.mode), what


def _section(n: int, k: int, t: int, out: int, d: int, c: int) -> tuple[int, int, int, int]:
    """Input class c of a dilated zero-padded axis as an undilated block:
    (inputs, before-pad, outputs, first row) with rows r = i' - before reading i = r + a."""
    inputs = -(-(n - c) // d)
    before = (c + t) // d
    rho = (c + t) % d
    outputs = max(0, -(-(out - rho) // d))
    return inputs, before, outputs, -before


def _touching(inputs: int, first: int, outputs: int, k: int) -> tuple[int, int]:
    """The rows [lo, hi) of a block that read at least one of its inputs (others are zero)."""
    return max(first, -(k - 1)), min(first + outputs, inputs)


#: a residue-class block: inputs, before-pad, outputs, and its rows [lo, hi) that read data
_Block = tuple[int, int, int, int, int]


def _contains(block: _Block, other: _Block) -> bool:
    """Whether ``other``'s nonzero section, shifted along the diagonal, lies inside ``block``'s."""
    inputs, before, outputs = block[:3]
    o_inputs, _, _, o_lo, o_hi = other
    if o_hi <= o_lo:
        return True  # a zero block
    first, last = -before, outputs - before
    return any(
        first <= o_lo + shift and o_hi + shift <= last for shift in range(0, inputs - o_inputs + 1)
    )


def _dominant_class(n: int, k: int, t: int, out: int, d: int) -> tuple[int, int, int] | None:
    """(inputs, before, outputs) of a class whose block contains every other class's block up
    to a common shift of rows and columns; None if no class does."""
    blocks = []
    for c in range(d):
        inputs, before, outputs, first = _section(n, k, t, out, d, c)
        if inputs > 0:
            blocks.append((inputs, before, outputs, *_touching(inputs, first, outputs, k)))
    for block in sorted(blocks, key=lambda b: -b[0]):
        if all(_contains(block, other) for other in blocks):
            return block[:3]
    return None


def _dilation_class(op: LayerOperator) -> tuple[LayerOperator, str] | None:
    conv, g = op.conv, op.geometry
    if op.mode != "zeros":
        return None
    grid, before, out = list(g.grid), list(g.before), list(g.out_size)
    dilation = list(conv.dilation)
    reduced: list[str] = []
    for ax in range(conv.nd):
        d = g.dilation[ax]
        if d == 1 or g.stride[ax] != 1:
            continue
        block = _dominant_class(g.grid[ax], g.kernel_size[ax], g.before[ax], g.out_size[ax], d)
        if block is None:
            continue
        grid[ax], before[ax], out[ax] = block
        dilation[ax] = 1
        reduced.append(f"{d}")
    if not reduced:
        return None
    geometry = ConvGeometry(
        tuple(grid), g.kernel_size, g.stride, tuple(dilation), tuple(before), tuple(out)
    )
    new_conv = dataclasses.replace(conv, dilation=tuple(dilation))
    where = "x".join(map(str, grid))
    return LayerOperator(new_conv, geometry, op.mode), (
        f"dilation {'x'.join(reduced)} as its largest residue-class block, undilated on {where}"
    )


__all__ = ["equivalent_operator"]
