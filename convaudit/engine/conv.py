"""The two values every engine method takes, instead of loose keyword lists.

- :class:`Conv`: a conv's weights and the structure that does not depend on the input grid
  (stride, dilation, groups). The circular operator on any grid is ``(conv, grid)``.
- :class:`LayerOperator`: the layer's REAL operator: a Conv, its geometry on its own grid
  (:class:`~convaudit.engine.geometry.ConvGeometry`: pads, output size) and its padding mode.

Where and how to compute (device, dtype, memory, threads, tolerance) travels separately, as
:class:`~convaudit.engine.runtime.Runtime`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from convaudit.engine.geometry import ConvGeometry, circular_same_geometry


@dataclass(frozen=True)
class Conv:
    """Weights ``(c_out, c_in/groups, *k)`` (a torch tensor) and the grid-independent geometry."""

    kernel: torch.Tensor
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.kernel.shape)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def nd(self) -> int:
        return len(self.kernel_size)

    @property
    def c_out(self) -> int:
        return self.shape[0]

    @property
    def c_in(self) -> int:
        return self.shape[1] * self.groups

    @property
    def rows(self) -> int:
        """Rows of one group's frequency block B(m): its output channels."""
        return self.c_out // self.groups

    @property
    def cols(self) -> int:
        """Columns of one group's frequency block B(m): input channels times the stride's aliases."""
        return self.shape[1] * math.prod(self.stride)

    @property
    def pointwise(self) -> bool:
        """A 1×…×1 kernel: the same block at every frequency (MATH.md §1)."""
        return all(k == 1 for k in self.kernel_size)

    @functools.cached_property
    def taps(self) -> torch.Tensor:
        """The kernel as complex ``(prod(k), c_out·c_in/g)`` rows, ready for the phase GEMM."""
        taps = self.kernel.permute(*range(2, 2 + self.nd), 0, 1).reshape(
            -1, self.shape[0] * self.shape[1]
        )
        return taps.to(torch.complex128 if self.kernel.dtype == torch.float64 else torch.complex64)

    def to(self, dtype: torch.dtype) -> Conv:
        """The same conv with its weights in ``dtype`` (itself when already so)."""
        if self.kernel.dtype == dtype:
            return self
        return dataclasses.replace(self, kernel=self.kernel.detach().to(dtype))

    def unit_stride(self) -> Conv:
        """Stride and dilation 1: for a 1×…×1 kernel σ(B(m)) = σ(W) whatever the stride."""
        ones = (1,) * self.nd
        return dataclasses.replace(self, stride=ones, dilation=ones)

    def unit_axes(self) -> tuple[int, ...]:
        """Axes with a 1-tap kernel and stride 1: they couple nothing, so the circular operator
        is I ⊗ (the conv without them) along them (MATH.md §1). Empty for a 1×…×1 kernel."""
        axes = tuple(
            ax for ax in range(self.nd) if self.kernel_size[ax] == 1 and self.stride[ax] == 1
        )
        return () if len(axes) == self.nd else axes

    def without_axes(self, axes: tuple[int, ...]) -> Conv:
        """The conv of fewer dimensions with the 1-tap ``axes`` dropped."""
        keep = [ax for ax in range(self.nd) if ax not in axes]
        kernel = self.kernel.reshape(*self.shape[:2], *[self.kernel_size[ax] for ax in keep])
        return Conv(
            kernel.contiguous(),
            tuple(self.stride[ax] for ax in keep),
            tuple(self.dilation[ax] for ax in keep),
            self.groups,
        )

    def circular_geometry(self, grid: tuple[int, ...]) -> ConvGeometry:
        """The circular operator of MATH.md §1 on ``grid`` ("same" pad, out = ceil(N/s))."""
        return circular_same_geometry(grid, self.kernel_size, self.stride, self.dilation)


@dataclass(frozen=True)
class LayerOperator:
    """The operator a layer really computes: ``conv`` on ``geometry.grid`` with ``mode`` padding
    ("zeros", "circular", "reflect", "replicate")."""

    conv: Conv
    geometry: ConvGeometry
    mode: str

    @property
    def grid(self) -> tuple[int, ...]:
        return self.geometry.grid

    @property
    def sides(self) -> tuple[int, int]:
        """Entries of the operator's input and output."""
        return self.geometry.sides(self.conv.shape, self.conv.groups)

    def to(self, dtype: torch.dtype) -> LayerOperator:
        conv = self.conv.to(dtype)
        return self if conv is self.conv else dataclasses.replace(self, conv=conv)

    def on(self, geometry: ConvGeometry) -> LayerOperator:
        """The same conv and padding on another grid."""
        return dataclasses.replace(self, geometry=geometry)
