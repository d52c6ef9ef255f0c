"""Independent truth for the tests: the dense matrix of the real operator.

Built by applying torch's own conv functions to every basis image, never through convaudit's
FFT code. Small layers only (the matrix has prod(input) * prod(output) entries).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def apply_conv(
    x: torch.Tensor,
    weight: np.ndarray,
    *,
    stride,
    padding,
    dilation,
    groups: int = 1,
    padding_mode: str = "zeros",
    transposed: bool = False,
    output_padding=0,
) -> torch.Tensor:
    """Run the layer with torch on a batch x of shape (B, C, *spatial). ``padding`` is a tuple
    of (before, after) pairs per axis (or, for transposed, symmetric ints)."""
    w = torch.as_tensor(np.asarray(weight, np.float64))
    nd = w.ndim - 2
    if transposed:
        pad = tuple(int(p) for p in padding)
        return _CONV_T[nd](
            x,
            w,
            stride=stride,
            padding=pad,
            output_padding=output_padding,
            groups=groups,
            dilation=dilation,
        )
    flat: list[int] = []
    for before, after in reversed(list(padding)):
        flat += [int(before), int(after)]
    if any(flat):
        mode = {"zeros": "constant"}.get(padding_mode, padding_mode)
        x = F.pad(x, flat, mode=mode)
    return _CONV[nd](x, w, stride=stride, dilation=dilation, groups=groups)


def dense_matrix(weight: np.ndarray, input_size: tuple[int, ...], **geometry) -> np.ndarray:
    """The operator as a dense float64 matrix (rows: flattened output, cols: flattened input)."""
    w = np.asarray(weight, np.float64)
    transposed = geometry.get("transposed", False)
    groups = geometry.get("groups", 1)
    c_in = w.shape[0] if transposed else w.shape[1] * groups
    n_in = c_in * int(np.prod(input_size))
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, c_in, *input_size)
    with torch.no_grad():
        out = apply_conv(basis, w, **geometry)
    return out.reshape(n_in, -1).T.numpy()


def dense_singular_values(
    weight: np.ndarray, input_size: tuple[int, ...], **geometry
) -> np.ndarray:
    return np.linalg.svd(dense_matrix(weight, input_size, **geometry), compute_uv=False)


def circular_pads(kernel_size, dilation) -> tuple[tuple[int, int], ...]:
    """'same' circular padding: total d(k-1) per axis (offset is a shift; any split works)."""
    return tuple(
        (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
        for k, d in zip(kernel_size, dilation, strict=True)
    )


def circular_singular_values(weight, grid, *, stride, dilation, groups=1) -> np.ndarray:
    """Dense truth for the circular-padding conv on ``grid`` (stride must divide grid)."""
    nd = len(grid)
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    ks = np.asarray(weight).shape[2:]
    # Circular padding wider than the grid needs the wrap applied more than once: tile instead.
    pads = circular_pads(ks, dilation)
    w = np.asarray(weight, np.float64)
    c_in = w.shape[1] * groups
    n_in = c_in * int(np.prod(grid))
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, c_in, *grid)
    reps = [1, 1] + [1 + 2 * (-(-max(p) // n)) for p, n in zip(pads, grid, strict=True)]
    tiled = basis.repeat(*reps)
    index = [slice(None), slice(None)]
    for (before, after), n, r in zip(pads, grid, reps[2:], strict=True):
        start = (r // 2) * n - before
        index.append(slice(start, start + n + before + after))
    x = tiled[tuple(index)]
    with torch.no_grad():
        out = _CONV[nd](x, torch.as_tensor(w), stride=stride, dilation=dilation, groups=groups)
    return np.linalg.svd(out.reshape(n_in, -1).T.numpy(), compute_uv=False)
