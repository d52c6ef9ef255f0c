"""Training-time projection: ``convaudit.torch.project_(module, bound, input_shape=...)``.

Projects every ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` of a live module in place,
under ``torch.no_grad`` and on the module's device, so that each layer's REAL operator (its
padding, the input size it sees for ``input_shape``) has σ_max ≤ bound (MATH.md §2-§3). Call it
every few hundred optimiser steps, as Sedghi et al. did.

The input size each conv sees is found by one forward pass of a zero batch of ``input_shape``
(batch size 1) with the module temporarily in eval mode, so BatchNorm statistics do not move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from convaudit.engine.projection.kernel import DEFAULT_TOL, ProjectionOptions, project_tensor
from convaudit.engine.projection.layer import projection_target
from convaudit.errors import ConfigError
from convaudit.ir import ConvLayer

_CONV_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@dataclass(frozen=True)
class ModuleProjection:
    """One conv module's projection. σ values are certified upper bounds of the real operator
    (exact for circular padding / 1×1 kernels); ``statement`` says for which operator."""

    name: str
    bound: float
    sigma_before: float
    sigma_after: float
    iterations: int
    relative_change: float
    unchanged: bool
    statement: str


def _input_sizes(
    module: nn.Module, convs: dict[str, _ConvNd], input_shape: tuple[int, ...] | None
) -> dict[str, tuple[int, ...]]:
    if input_shape is None:
        return {}
    seen: dict[str, set[tuple[int, ...]]] = {name: set() for name in convs}
    hooks = [
        conv.register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].add(tuple(args[0].shape[2:]))
        )
        for name, conv in convs.items()
    ]
    modes = {m: m.training for m in module.modules()}
    param = next(module.parameters(), None)
    x = torch.zeros(
        (1, *input_shape[1:]),
        device=param.device if param is not None else "cpu",
        dtype=param.dtype if param is not None else torch.float32,
    )
    try:
        module.eval()
        with torch.no_grad():
            module(x)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        raise ConfigError(
            f"a forward pass with input_shape {tuple(input_shape)} failed: {exc}",
            hint="input_shape is the full input shape, e.g. (1, 3, 32, 32)",
        ) from exc
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.training = training
    sizes = {}
    for name, found in seen.items():
        if len(found) != 1:
            what = "was not called" if not found else f"was called on {len(found)} input sizes"
            raise ConfigError(
                f"conv {name} {what} in a forward pass of input_shape {tuple(input_shape)}",
                hint="a projection is certified for one input size per layer; select layers with layers=REGEX",
            )
        sizes[name] = found.pop()
    return sizes


def _padding(conv: _ConvNd, nd: int) -> tuple[tuple[int, int], ...]:
    k, d = conv.kernel_size, conv.dilation
    pad = conv.padding
    if pad == "valid":
        return ((0, 0),) * nd
    if pad == "same":  # torch puts the odd extra pad after
        totals = [d[ax] * (k[ax] - 1) for ax in range(nd)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((int(p), int(p)) for p in pad)


def conv_layer_of(name: str, conv: _ConvNd, input_size: tuple[int, ...] | None) -> ConvLayer:
    """The IR description of a torch conv module (geometry only: the kernel is a placeholder)."""
    weight = conv.weight
    nd = weight.ndim - 2
    transposed = isinstance(conv, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d)
    return ConvLayer(
        name=name,
        kernel=np.broadcast_to(np.float32(0), tuple(weight.shape)),
        stride=tuple(conv.stride),
        dilation=tuple(conv.dilation),
        padding=_padding(conv, nd),
        groups=int(conv.groups),
        padding_mode=conv.padding_mode,
        transposed=transposed,
        output_padding=tuple(conv.output_padding) if transposed else (),
        input_size=input_size,
    )


def project_(
    module: nn.Module,
    bound: float,
    *,
    input_shape: tuple[int, ...] | None = None,
    method: str = "alternating",
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    layers: str | None = None,
    work_dtype: torch.dtype = torch.float64,
) -> list[ModuleProjection]:
    """Project every conv of ``module`` (whose name matches the regex ``layers``, if given) in
    place onto {σ_max(real operator) ≤ bound}.

    ``input_shape``: the full input shape, e.g. ``(1, 3, 32, 32)``; needed for every conv with a
    kernel larger than 1×1 (a projection is certified for one input size). Returns one
    :class:`ModuleProjection` per conv, in module order.
    """
    pattern = re.compile(layers) if layers else None
    convs: dict[str, _ConvNd] = {
        name: m
        for name, m in module.named_modules()
        if isinstance(m, _CONV_TYPES) and (pattern is None or pattern.search(name))
    }
    if input_shape is not None and len(input_shape) < 3:
        raise ConfigError(f"input_shape {input_shape} must be (batch, channels, *spatial)")
    sizes = _input_sizes(module, convs, input_shape)
    options = ProjectionOptions(method=method, tol=tol, max_iter=max_iter)
    report = []
    for name, conv in convs.items():
        target = projection_target(conv_layer_of(name, conv, sizes.get(name)))
        weight = conv.weight
        with torch.no_grad():
            new, stats = project_tensor(
                weight.detach(),
                target.geometry,
                bound / target.gain,
                options,
                work_dtype=work_dtype,
            )
            if not stats.unchanged:
                weight.copy_(new)
        report.append(
            ModuleProjection(
                name=name,
                bound=bound,
                sigma_before=target.gain * stats.sigma_before,
                sigma_after=target.gain * stats.sigma_after,
                iterations=stats.iterations,
                relative_change=stats.relative_change,
                unchanged=stats.unchanged,
                statement=target.statement,
            )
        )
    return report


__all__ = ["ModuleProjection", "conv_layer_of", "project_"]
