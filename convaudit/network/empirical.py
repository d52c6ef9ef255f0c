"""Empirical LOWER bound on a network's Lipschitz constant: the largest ||f(x) - f(y)|| / ||x - y||
found by a short search from random inputs.

Every ratio reported was measured on a real pair (x, y) by running the model, so it is a valid
lower bound on the Lipschitz constant of the function as that runtime computes it (in its own
floating point); the pairs are kept far enough apart (``step``) that rounding is negligible.
Together with the certified upper bound of :mod:`convaudit.network.graph` it brackets the truth.

Two searches:
- ``search_autograd`` (a torch callable): power iteration on J(x)ᵀJ(x) with forward / reverse
  mode products at random points, then a few gradient-ascent steps on the finite-difference
  ratio over (x, direction). Close to the local sup of ||J||.
- ``search_blackbox`` (any numpy callable, e.g. onnxruntime): zeroth order. Finite-difference
  Jacobian-vector products on a block of random directions plus the best so far, and the top
  right singular vector of that block as the next best direction. Weaker in high dimensions:
  the bound it finds can be far below the truth, never above it.

The network is taken as one map from all inputs (flattened, concatenated) to all float outputs
(flattened, concatenated), the same convention as the graph bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: numpy inputs -> numpy outputs, for one sample (batch dimension included in the shapes)
BlackBox = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class SearchOptions:
    trials: int = 4  # random starting points
    iterations: int = 12  # power / block iterations per start
    ascent_steps: int = 10  # gradient steps on the measured ratio (autograd search only)
    block: int = 8  # directions per block (black-box search)
    step: float = 1e-2  # ||x - y|| per sqrt(input size): large enough to dwarf rounding
    scale: float = 1.0  # standard deviation of the random inputs
    seed: int = 0


@dataclass(frozen=True)
class EmpiricalBound:
    """A lower bound: ``value`` = max ratio over the ``evaluations`` model runs made."""

    value: float
    method: str
    evaluations: int
    options: SearchOptions

    def describe(self) -> str:
        return f"{self.value:.6g} (lower bound: largest ||f(x)-f(y)||/||x-y|| found, {self.method})"


def _split(z: Any, shapes: Sequence[tuple[int, ...]], *, flat: bool = False) -> list[Any]:
    """Cut a flat vector (numpy or torch) into the input tensors (``flat``: just the slices
    along axis 0, e.g. of a (n, samples) array)."""
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        part = z[start : start + n]
        out.append(part.T if flat else part.reshape(shape))
        start += n
    return out


def search_blackbox(
    fn: BlackBox,
    input_shapes: Sequence[tuple[int, ...]],
    options: SearchOptions | None = None,
    *,
    dtype: Any = np.float32,
    batch: bool = False,
) -> EmpiricalBound:
    """Zeroth-order search on a black-box model (numpy in, numpy out).

    ``batch``: the model takes several samples stacked along axis 0 of every input (whose
    given shapes then start with 1) and returns them along axis 0 of every output: a block
    of directions is evaluated in one call.
    """
    opt = options or SearchOptions()
    rng = np.random.default_rng(opt.seed)
    n = sum(math.prod(s) for s in input_shapes)
    h = opt.step * math.sqrt(n)
    evals = 0

    def f_many(zs: np.ndarray) -> np.ndarray:
        """Outputs (flattened, concatenated) for each row of zs."""
        nonlocal evals
        evals += len(zs)
        if not batch:
            return np.stack([f_one(z) for z in zs])
        arrays = [
            part.reshape(len(zs), *shape[1:]).astype(dtype)
            for part, shape in zip(_split(zs.T, input_shapes, flat=True), input_shapes, strict=True)
        ]
        outs = fn(arrays)
        return np.concatenate(
            [np.asarray(o, np.float64).reshape(len(zs), -1) for o in outs], axis=1
        )

    def f_one(z: np.ndarray) -> np.ndarray:
        outs = fn([part.astype(dtype) for part in _split(z, input_shapes)])
        return np.concatenate([np.asarray(o, np.float64).ravel() for o in outs])

    def realised(x: np.ndarray, y: np.ndarray) -> float:
        # the step after casting to the model's dtype, not the intended one
        return float(
            np.linalg.norm(y.astype(dtype).astype(np.float64) - x.astype(dtype).astype(np.float64))
        )

    best = 0.0
    for _ in range(opt.trials):
        x = rng.normal(0.0, opt.scale, n)
        v_best = rng.normal(size=n)
        v_best /= np.linalg.norm(v_best)
        for _ in range(opt.iterations):
            dirs = rng.normal(size=(opt.block, n))
            dirs[0] = v_best
            q, _ = np.linalg.qr(dirs.T)  # orthonormal columns spanning the block
            points = np.concatenate([x[None, :], x[None, :] + h * q.T])
            outs = f_many(points)
            jv = (outs[1:] - outs[0]).T / h
            for i in range(q.shape[1]):  # every evaluated pair is a measured ratio
                dx = realised(x, points[i + 1])
                if dx > 0:
                    best = max(best, float(np.linalg.norm(outs[i + 1] - outs[0]) / dx))
            _, _, wt = np.linalg.svd(jv, full_matrices=False)
            v_best = q @ wt[0]
            v_best /= np.linalg.norm(v_best)
        y = x + h * v_best
        pair = f_many(np.stack([x, y]))
        dx = realised(x, y)
        if dx > 0:
            best = max(best, float(np.linalg.norm(pair[1] - pair[0]) / dx))
    return EmpiricalBound(best, "zeroth-order block search on finite differences", evals, opt)


def search_autograd(
    fn: Callable[..., Any],
    input_shapes: Sequence[tuple[int, ...]],
    options: SearchOptions | None = None,
    *,
    dtype: Any = None,
) -> EmpiricalBound:
    """Power iteration on JᵀJ plus ratio ascent, on a torch callable ``fn(*inputs)``."""
    import torch

    opt = options or SearchOptions()
    dtype = dtype or torch.float64
    gen = torch.Generator().manual_seed(opt.seed)
    n = sum(math.prod(s) for s in input_shapes)
    h = opt.step * math.sqrt(n)
    evals = 0

    def f(z: torch.Tensor) -> torch.Tensor:
        nonlocal evals
        evals += 1
        parts = [p.to(dtype) for p in _split(z, input_shapes)]
        outs = fn(*parts)
        outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)
        return torch.cat([o.reshape(-1).to(torch.float64) for o in outs if o.is_floating_point()])

    def measured(x: torch.Tensor, v: torch.Tensor) -> float:
        with torch.no_grad():
            y = x + h * v / v.norm()
            dx = (y.to(dtype).double() - x.to(dtype).double()).norm()
            return float((f(y) - f(x)).norm() / dx) if dx > 0 else 0.0

    best = 0.0
    for _ in range(opt.trials):
        x = torch.randn(n, generator=gen, dtype=torch.float64) * opt.scale
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        v /= v.norm()
        v = _power_iteration(f, x, v, opt.iterations)
        best = max(best, measured(x, v))
        # normalised gradient ascent on the measured ratio over (x, direction); plain steps,
        # not torch.optim (whose import pulls in torch._dynamo: seconds)
        for _ in range(opt.ascent_steps):
            x_var = x.detach().clone().requires_grad_(True)
            v_var = v.detach().clone().requires_grad_(True)
            ratio = (f(x_var + h * v_var / v_var.norm()) - f(x_var)).norm() / h
            gx, gv = torch.autograd.grad(ratio, (x_var, v_var))
            with torch.no_grad():
                x = x + 0.05 * opt.scale * math.sqrt(n) * gx / max(float(gx.norm()), 1e-30)
                v = v + 0.05 * gv / max(float(gv.norm()), 1e-30)
                v = v / v.norm()
            best = max(best, measured(x, v))
    return EmpiricalBound(best, "autograd power iteration + ratio ascent", evals, opt)


def _power_iteration(f: Callable[[Any], Any], x: Any, v: Any, iterations: int) -> Any:
    """Top right singular vector of J(x) by power iteration on JᵀJ with plain autograd:
    Jᵀu is one backward pass; Jv the double-backward trick (Jᵀu is linear in u)."""
    import torch

    x = x.detach().clone().requires_grad_(True)
    y = f(x)
    u = torch.zeros_like(y, requires_grad=True)
    (jt_u,) = torch.autograd.grad(y, x, u, create_graph=True)
    for _ in range(iterations):
        (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)
        (w,) = torch.autograd.grad(y, x, jv, retain_graph=True)
        norm = w.norm()
        if not norm > 0:
            break
        v = (w / norm).detach()
    return v


__all__ = [
    "BlackBox",
    "EmpiricalBound",
    "SearchOptions",
    "search_autograd",
    "search_blackbox",
]
