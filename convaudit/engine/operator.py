"""The layer's REAL linear operator (its padding mode, its grid) as torch functions.

``apply`` pads by index gathering (zeros, circular of any width, reflect, replicate), crops to
the positions the taps read, and runs the framework's own conv. ``adjoint`` is the exact
transpose: the transposed conv followed by the padding's transpose (a scatter-add). Used by
the Lanczos iteration (MATH.md §2) and to build dense matrices of small layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from convaudit.engine.conv import LayerOperator
from convaudit.errors import UnsupportedLayerError

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}


def pad_index(
    n: int, before: int, length: int, mode: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source index for padded positions ``-before .. length-before-1`` and (zeros) a validity mask."""
    pos = torch.arange(length, device=device) - before
    if mode == "zeros":
        valid = (pos >= 0) & (pos < n)
        return pos.clamp(0, n - 1), valid
    if mode == "circular":
        return pos % n, None
    if mode == "replicate":
        return pos.clamp(0, n - 1), None
    if mode == "reflect":
        if n == 1 or pos.min() < -(n - 1) or pos.max() > 2 * (n - 1):
            raise UnsupportedLayerError(
                f"reflect padding wider than the input ({n} positions) is undefined"
            )
        pos = pos.abs()
        return torch.where(pos > n - 1, 2 * (n - 1) - pos, pos), None
    raise UnsupportedLayerError(f"unknown padding mode {mode!r}")


def most_reads(n: int, before: int, length: int, mode: str, *, step: int = 1) -> int:
    """How many times the most-read of ``n`` input entries is read by the padded positions
    ``-before .. length-before-1``, taken every ``step``-th (0 when none reads data)."""
    idx, valid = pad_index(n, before, length, mode, torch.device("cpu"))
    cells = torch.arange(0, length, step)
    hit = idx[cells] if valid is None else idx[cells][valid[cells]]
    return int(torch.bincount(hit, minlength=n).max()) if hit.numel() else 0


def blocked_kernel(kernel: torch.Tensor, s: int) -> torch.Tensor:
    """A 2-D stride-``s`` kernel ``(c_out, c_in, kh, kw)`` as the stride-1 kernel
    ``(c_out, c_in·s², ⌈kh/s⌉, ⌈kw/s⌉)`` acting on ``pixel_unshuffle(x, s)``: tap (u'·s + a,
    v'·s + b) of channel c becomes tap (u', v') of channel c·s² + a·s + b (pixel_shuffle's
    order); taps past the kernel are zero."""
    c_out, c_in, kh, kw = kernel.shape
    rows, cols = -(-kh // s), -(-kw // s)
    padded = F.pad(kernel, [0, cols * s - kw, 0, rows * s - kh])
    blocks = padded.reshape(c_out, c_in, rows, s, cols, s).permute(0, 1, 3, 5, 2, 4)
    return blocks.reshape(c_out, c_in * s * s, rows, cols).contiguous()


class PaddedConv:
    """x ``(B, c_in, *grid)`` -> y ``(B, c_out, *out_size)`` exactly as the layer computes it."""

    def __init__(self, op: LayerOperator) -> None:
        kernel, geometry, groups, mode = op.conv.kernel, op.geometry, op.conv.groups, op.mode
        # Few input channels (an RGB stem): oneDNN's float32 conv is ~3x faster channels-last.
        self.channels_last = (
            kernel.ndim == 4 and kernel.dtype == torch.float32 and (kernel.shape[1] * groups <= 4)
        )
        if self.channels_last:
            kernel = kernel.contiguous(memory_format=torch.channels_last)
        self.kernel = kernel
        self.geometry = geometry
        self.groups = groups
        self.mode = mode
        self.nd = kernel.ndim - 2
        self.c_in = kernel.shape[1] * groups
        self.c_out = kernel.shape[0]
        self._index = []
        for n, t, e in zip(geometry.grid, geometry.before, geometry.last_read, strict=True):
            self._index.append(pad_index(n, t, t + e + 1, mode, kernel.device))
        # The same stem's adjoint (a transposed conv with few output channels) is slow in oneDNN:
        # ResNet-50's conv1 6 ms. As a stride-1 transposed conv on s×s pixel blocks followed by
        # pixel_shuffle it measured 2.8x faster (the forward conv is fast as it is).
        self._blocked: torch.Tensor | None = None
        stride = geometry.stride
        if (
            self.channels_last
            and mode == "zeros"
            and groups == 1
            and self.nd == 2
            and stride[0] == stride[1] > 1
            and all(d == 1 for d in geometry.dilation)
        ):
            self._blocked = blocked_kernel(kernel.contiguous(), stride[0])

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.c_in, *self.geometry.grid)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.c_out, *self.geometry.out_size)

    def _zero_pads(self) -> list[int]:
        """F.pad's flat (last axis first) pads for zeros mode; negative 'after' crops."""
        flat: list[int] = []
        for t, after in zip(
            reversed(self.geometry.before), reversed(self.geometry.after), strict=True
        ):
            flat += [t, after]
        return flat

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.mode == "zeros":
            # A plain constant pad (negative = crop) is much cheaper than gathering.
            x = F.pad(x, self._zero_pads())
            g = self.geometry
            return _CONV[self.nd](
                x, self.kernel, stride=g.stride, dilation=g.dilation, groups=self.groups
            )
        for ax, (idx, valid) in enumerate(self._index):
            dim = 2 + ax
            x = x.index_select(dim, idx)
            if valid is not None and not bool(valid.all()):
                shape = [1] * x.ndim
                shape[dim] = -1
                x = x * valid.reshape(shape).to(x.dtype)
        g = self.geometry
        return _CONV[self.nd](
            x, self.kernel, stride=g.stride, dilation=g.dilation, groups=self.groups
        )

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Aᵀy for a batch y: the transposed conv (its output is exactly the cropped padded
        length, so no output_padding), then the padding's transpose, a scatter-add per axis."""
        g = self.geometry
        if self._blocked is not None:
            s = g.stride[0]
            z = F.pixel_shuffle(F.conv_transpose2d(y.contiguous(), self._blocked), s)
            # (out - 1)·s + k: the transposed conv's own output length, then the same crop
            span = [(o - 1) * s + k for o, k in zip(g.out_size, self.kernel.shape[2:], strict=True)]
            return F.pad(z[..., : span[0], : span[1]], [-p for p in self._zero_pads()])
        z = _CONV_T[self.nd](
            y, self.kernel, stride=g.stride, dilation=g.dilation, groups=self.groups
        )
        if self.mode == "zeros":
            return F.pad(z, [-p for p in self._zero_pads()])
        for ax, (idx, valid) in enumerate(self._index):
            dim = 2 + ax
            if valid is not None:
                keep = torch.nonzero(valid).reshape(-1)
                z, idx = z.index_select(dim, keep), idx[keep]
            shape = list(z.shape)
            shape[dim] = g.grid[ax]
            z = z.new_zeros(shape).index_add_(dim, idx, z)
        return z

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.apply(x))

    def cogram(self, y: torch.Tensor) -> torch.Tensor:
        """AAᵀy: the output side's Gram operator (same nonzero eigenvalues as AᵀA)."""
        return self.apply(self.adjoint(y))
