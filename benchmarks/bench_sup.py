"""Time the size-independent bound S = sup_ν σ_max(B(ν)): the torus-cell search against the
alias-grid bound it replaced, side by side in one run, layer by layer.

- **before**: the previous engine's path for a layer without an input size (the default
  `operator_norm(w, None)`, tol 1e-6): σ_circ on an alias grid fine enough that the
  trigonometric-polynomial factor √C = Π 1/√(1 - (πD/G)²/2) is 1 + 1e-3, within a work budget
  of 1e12 multiply-adds (coarser grid, wider bracket beyond it). Reproduced below from that
  engine's code, unchanged.
- **after**: `size_independent_bound` (engine/sigma/torus.py), certified to `--tol`
  (default 1e-4, the CLI's default), and optionally also to 1e-6.

Layers (He-normal random weights, the hardest case: a flat landscape; and a smooth low-pass
kernel as trained early layers look): 3×3 convs of 64-512 channels, VGG16's 13 convs,
Conv1d (k=3, k=21 dilated), a Conv3d (1, 11, 11), a depthwise 3×3 and a strided 3×3.

    python benchmarks/bench_sup.py [--only NAME ...] [--no-before] [--tol 1e-4] [--also-1e-6]
                                   [--json out.json]

Importable: `bench_cases()` and `time_after(conv, tol)` for other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Iterator

import numpy as np
import torch

from convaudit.engine.conv import Conv
from convaudit.engine.results import EngineOptions
from convaudit.engine.runtime import Runtime, runtime
from convaudit.engine.sigma.circular import certificate_work, circular_sigma_max
from convaudit.engine.sigma.torus import size_independent_bound


# -- the previous engine's alias-grid bound (engine/sigma/continuous.py before the cell search) --
def _before_bracket(conv: Conv, rt: Runtime, rel_width: float = 1e-3, work: float = 1e12):
    degree = tuple(
        d * (k - 1) // s
        for k, s, d in zip(conv.kernel_size, conv.stride, conv.dilation, strict=True)
    )
    active = max(1, sum(1 for dd in degree if dd))
    x = 1 - (1 + rel_width) ** (-2 / active)
    alias = tuple(
        1 if dd == 0 else min(2048, math.ceil(math.pi * dd / math.sqrt(2 * x))) for dd in degree
    )
    floor = tuple(max(1, math.floor(math.pi * dd / math.sqrt(2)) + 1) for dd in degree)

    def cost(a):
        return certificate_work(conv, tuple(g * s for g, s in zip(a, conv.stride, strict=True)))

    while cost(alias) > work and any(a > f for a, f in zip(alias, floor, strict=True)):
        widest = max(range(len(alias)), key=lambda ax: alias[ax] - floor[ax])
        alias = tuple(
            max(floor[ax], int(a * 0.8)) if ax == widest else a for ax, a in enumerate(alias)
        )
    norm = circular_sigma_max(
        conv, tuple(g * s for g, s in zip(alias, conv.stride, strict=True)), rt
    )
    factor = 1.0
    for dd, g in zip(degree, alias, strict=True):
        factor /= 1 - (math.pi * dd / g) ** 2 / 2
    return norm.lower, norm.upper * math.sqrt(factor)


def _he(rng, shape):
    fan_out = shape[0] * math.prod(shape[2:])
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_out)


def _smooth(rng, shape):
    ks = shape[2:]
    blur = np.ones(ks)
    for ax, k in enumerate(ks):
        profile = np.array([math.comb(k - 1, i) for i in range(k)], float)
        blur = blur * profile.reshape([-1 if a == ax else 1 for a in range(len(ks))])
    mix = np.abs(rng.standard_normal(shape[:2])).reshape(*shape[:2], *(1,) * len(ks))
    return (mix * blur + 0.1 * rng.standard_normal(shape)) * math.sqrt(2.0 / math.prod(shape[1:]))


VGG16 = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
         (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]  # fmt: skip


def bench_cases(seed: int = 0) -> Iterator[tuple[str, str, list[Conv]]]:
    """(name, group, convs): a case is one layer, or a stack timed as a whole."""
    rng = np.random.default_rng(seed)

    def conv(w, stride=None, dilation=None, groups=1):
        nd = w.ndim - 2
        return Conv(torch.as_tensor(w), stride or (1,) * nd, dilation or (1,) * nd, groups)

    for c in (64, 128, 256, 512):
        yield f"3x3 c={c} random", "2d", [conv(_he(rng, (c, c, 3, 3)))]
        yield f"3x3 c={c} smooth", "2d", [conv(_smooth(rng, (c, c, 3, 3)))]
    yield "3x3/2 c=256 random", "2d", [conv(_he(rng, (256, 128, 3, 3)), (2, 2))]
    yield "3x3 depthwise c=512", "2d", [conv(_he(rng, (512, 1, 3, 3)), groups=512)]
    yield "3x3 c=64 dilation 2", "2d", [conv(_he(rng, (64, 64, 3, 3)), dilation=(2, 2))]
    yield "conv1d k=3 c=256", "1d", [conv(_he(rng, (256, 256, 3)))]
    yield "conv1d k=21 c=64 d=2", "1d", [conv(_he(rng, (64, 64, 21)), dilation=(2,))]
    yield "conv3d (1,11,11) c=64", "3d", [conv(_he(rng, (64, 64, 1, 11, 11)))]
    yield "VGG16 13 convs random", "stack", [conv(_he(rng, (o, i, 3, 3))) for i, o in VGG16]


def time_after(convs: list[Conv], tol: float) -> dict:
    rt = runtime(EngineOptions(tol=tol))
    start = time.perf_counter()
    results = [size_independent_bound(c, rt) for c in convs]
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tests": sum(r.tests for r in results),
        "closed": sum(r.closed for r in results),
        "width": max(r.upper / r.lower - 1 for r in results),
        "upper": [r.upper for r in results],
        "lower": [r.lower for r in results],
    }


def time_before(convs: list[Conv]) -> dict:
    rt = runtime(EngineOptions(tol=1e-6))
    start = time.perf_counter()
    results = [_before_bracket(c, rt) for c in convs]
    return {
        "seconds": time.perf_counter() - start,
        "width": max(up / lo - 1 for lo, up in results),
        "upper": [up for _, up in results],
        "lower": [lo for lo, _ in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="case names containing any of these")
    parser.add_argument("--no-before", action="store_true")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--also-1e-6", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    print(f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = []
    for name, group, convs in bench_cases():
        if args.only and not any(o in name for o in args.only):
            continue
        row: dict = {"name": name, "group": group, "load": os.getloadavg()[0]}
        row["after"] = time_after(convs, args.tol)
        if args.also_1e_6:
            row["after_1e-6"] = time_after(convs, 1e-6)
        if not args.no_before:
            row["before"] = time_before(convs)
            # both brackets hold S: they must overlap
            for lo, up, lo2, up2 in zip(row["after"]["lower"], row["after"]["upper"],
                                        row["before"]["lower"], row["before"]["upper"], strict=True):  # fmt: skip
                assert lo <= up2 * (1 + 1e-12) and lo2 <= up * (1 + 1e-12), name
        a = row["after"]
        line = (f"{name:26s} after {a['seconds']:7.2f} s ({a['tests']:5d} tests, width "
                f"{a['width']:.1e}, closed {a['closed']}/{len(convs)})")  # fmt: skip
        if "after_1e-6" in row:
            line += f" | 1e-6: {row['after_1e-6']['seconds']:7.2f} s"
        if "before" in row:
            b = row["before"]
            line += (f" | before {b['seconds']:7.2f} s (width {b['width']:.1e}) "
                     f"= {b['seconds'] / a['seconds']:5.1f}x")  # fmt: skip
        print(line + f"  [load {row['load']:.1f}]", flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
