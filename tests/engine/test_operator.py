"""PaddedConv: its adjoint is the transpose of its own matrix, and its forward is the layer's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convaudit.engine.conv import Conv, LayerOperator
from convaudit.engine.geometry import forward_geometry
from convaudit.engine.operator import PaddedConv


def _matrix(op: PaddedConv, shape: tuple[int, ...], apply) -> np.ndarray:
    n = int(np.prod(shape))
    basis = torch.eye(n, dtype=op.kernel.dtype).reshape(n, *shape)
    with torch.no_grad():
        return apply(basis).reshape(n, -1).double().numpy()


CASES = [
    # (c_out, c_in, k, stride, grid, pads): the first ones take the blocked (pixel-shuffle)
    # adjoint of few-channel strided stems in float32.
    (8, 3, 7, 2, (20, 18), ((3, 3), (3, 3))),
    (4, 3, 3, 2, (9, 11), ((1, 1), (1, 1))),
    (5, 1, 4, 3, (13, 10), ((0, 2), (1, 0))),
    (6, 4, 5, 2, (12, 12), ((2, 1), (2, 2))),
    (4, 2, 2, 2, (8, 7), ((0, 0), (0, 0))),
    # not blocked: more input channels, or stride 1
    (4, 6, 3, 2, (9, 9), ((1, 1), (1, 1))),
    (4, 3, 3, 1, (7, 9), ((1, 1), (1, 1))),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("c_out", "c_in", "k", "stride", "grid", "pads"), CASES)
def test_adjoint_is_the_transpose(dtype, c_out, c_in, k, stride, grid, pads):
    rng = np.random.default_rng(c_out * 100 + k)
    kernel = torch.from_numpy(rng.standard_normal((c_out, c_in, k, k))).to(dtype)
    geometry = forward_geometry(grid, (k, k), (stride, stride), (1, 1), pads)
    op = PaddedConv(LayerOperator(Conv(kernel, (stride, stride), (1, 1)), geometry, "zeros"))
    blocked = op._blocked is not None
    assert blocked == (dtype == torch.float32 and c_in <= 4 and stride > 1)
    forward = _matrix(op, op.in_shape, op.apply)
    adjoint = _matrix(op, op.out_shape, op.adjoint)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    scale = np.abs(forward).max()
    assert np.abs(adjoint - forward.T).max() <= tol * scale
    # and the forward is torch's own conv on the padded input
    x = torch.from_numpy(rng.standard_normal((1, *op.in_shape))).to(dtype)
    (bh, ah), (bw, aw) = pads
    want = F.conv2d(F.pad(x, [bw, aw, bh, ah]), kernel, stride=stride)
    with torch.no_grad():
        assert torch.allclose(op.apply(x), want, rtol=tol, atol=tol * float(want.abs().max()))
