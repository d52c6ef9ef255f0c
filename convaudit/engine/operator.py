"""The layer's REAL linear operator (its padding mode, its grid) as torch functions.

``apply`` pads by index gathering (zeros, circular of any width, reflect, replicate), crops to
the positions the taps read, and runs the framework's own conv. ``adjoint`` is the exact
transpose, obtained from autograd on the same graph (linear, so any point will do). Used by
the Lanczos iteration (MATH.md §2) and to build dense matrices of small layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from convaudit.engine.geometry import ConvGeometry
from convaudit.errors import UnsupportedLayerError

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def pad_index(n: int, before: int, length: int, mode: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
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
            raise UnsupportedLayerError(f"reflect padding wider than the input ({n} positions) is undefined")
        pos = pos.abs()
        return torch.where(pos > n - 1, 2 * (n - 1) - pos, pos), None
    raise UnsupportedLayerError(f"unknown padding mode {mode!r}")


class PaddedConv:
    """x ``(B, c_in, *grid)`` -> y ``(B, c_out, *out_size)`` exactly as the layer computes it."""

    def __init__(self, kernel: torch.Tensor, geometry: ConvGeometry, *, groups: int, mode: str) -> None:
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
        self._adjoint_graph: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.c_in, *self.geometry.grid)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.c_out, *self.geometry.out_size)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        for ax, (idx, valid) in enumerate(self._index):
            dim = 2 + ax
            x = x.index_select(dim, idx)
            if valid is not None and not bool(valid.all()):
                shape = [1] * x.ndim
                shape[dim] = -1
                x = x * valid.reshape(shape).to(x.dtype)
        g = self.geometry
        return _CONV[self.nd](x, self.kernel, stride=g.stride, dilation=g.dilation, groups=self.groups)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Aᵀy for a batch y, through autograd on a graph built once (A is linear)."""
        batch = y.shape[0]
        if self._adjoint_graph is None or self._adjoint_graph[0].shape[0] != batch:
            x0 = torch.zeros((batch, *self.in_shape), dtype=self.kernel.dtype, device=self.kernel.device, requires_grad=True)
            with torch.enable_grad():
                self._adjoint_graph = (x0, self.apply(x0))
        x0, out = self._adjoint_graph
        (grad,) = torch.autograd.grad(out, x0, grad_outputs=y, retain_graph=True)
        return grad

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.apply(x))
