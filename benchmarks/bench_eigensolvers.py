"""Benchmark: the eigensolver backends and routes on ResNet-50's own frequency blocks.

For every distinct spatial conv of ResNet-50 at 224x224 (the 1x1 layers take one SVD of W and
are left out), the frequency blocks of the Hermitian half are built on the device in
complex128, and their singular values computed by every available backend of
convaudit.engine.spectrum.eigensolvers with both routes (doubled: [[0, B], [Bᴴ, 0]]; gram: BᴴB
or BBᴴ). Each run is timed after a warm-up (synchronised), and its error against numpy's LAPACK
SVD is measured on a sample of blocks (normwise, /σ_max of the sample). The "ResNet-50 total" is
each backend's time per layer shape times the number of such layers.

Usage: python benchmarks/bench_eigensolvers.py [--device cuda] [--json FILE] [--budget SECONDS]
       [--max-freqs N] (a smoke test on a CPU: --device cpu --max-freqs 8)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_resnet50 import resnet50_convs, weights

from convaudit.engine.conv import Conv as EngineConv
from convaudit.engine.spectrum import eigensolvers
from convaudit.engine.spectrum.frequencies import alias_frequencies, frequency_block
from convaudit.engine.spectrum.routes import route_svdvals
from convaudit.errors import ConfigError


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def blocks_of(conv, seed: int, device: torch.device, max_freqs: int | None) -> torch.Tensor:
    kernel = torch.as_tensor(weights(conv, seed), dtype=torch.float64, device=device)
    grid, stride = (conv.grid,) * 2, (conv.stride,) * 2
    freqs, _ = alias_frequencies(grid, stride, half=True)
    if max_freqs is not None:
        freqs = freqs[:max_freqs]
    b = frequency_block(EngineConv(kernel, stride, (1, 1)), freqs, grid)
    return b[:, 0]  # (F, c_out, c_in·s²)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    ap.add_argument("--budget", type=float, default=240.0, help="seconds; later cases are skipped")
    ap.add_argument("--max-freqs", type=int, default=None, help="frequencies per layer (smoke)")
    ap.add_argument("--sample", type=int, default=12, help="blocks checked against LAPACK")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()

    shapes: Counter = Counter()
    first = {}
    for i, conv in enumerate(resnet50_convs()):
        if conv.k == 1:
            continue
        key = (conv.c_in, conv.c_out, conv.k, conv.stride, conv.grid)
        shapes[key] += 1
        first.setdefault(key, (conv, i))

    backends = []
    for name in eigensolvers.BACKENDS:
        with eigensolvers.prefer(backend=name):
            try:
                eigensolvers.select(device, torch.complex128)
            except ConfigError as exc:
                print(f"{name}: not available ({exc.message})", file=sys.stderr)
                continue
        backends.append(name)
    report: dict = {
        "device": str(device)
        if device.type != "cuda"
        else f"{device} ({torch.cuda.get_device_name(device)})",
        "torch": torch.__version__,
        "backends": backends,
        "cases": [],
    }

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))

    totals: dict[str, float] = {}
    for key, count in shapes.items():
        conv, seed = first[key]
        b = blocks_of(conv, seed, device, args.max_freqs)
        sample = b[: args.sample].cpu().numpy()
        want = np.linalg.svd(sample, compute_uv=False)
        for name in backends:
            for route in eigensolvers.ROUTES:
                label = f"{name}/{route}"
                if time.perf_counter() - start > args.budget:
                    report["cases"].append({"layer": conv.name, "run": label, "skipped": "budget"})
                    continue
                with eigensolvers.prefer(backend=name, route=route):
                    route_svdvals(b[:4])  # warm-up: handle, workspace, kernels
                    sync(device)
                    t0 = time.perf_counter()
                    sv = route_svdvals(b)
                    sync(device)
                    seconds = time.perf_counter() - t0
                got = sv[: args.sample].cpu().numpy()
                err = float(np.max(np.abs(got - want)) / want.max())
                totals[label] = totals.get(label, 0.0) + seconds * count
                case = {
                    "layer": conv.name,
                    "layers_like_it": count,
                    "blocks": int(b.shape[0]),
                    "block": list(b.shape[1:]),
                    "run": label,
                    "seconds": seconds,
                    "max_error_over_sigma_max": err,
                }
                report["cases"].append(case)
                print(
                    f"{conv.name:18s} {b.shape[0]:5d} x {b.shape[1]}x{b.shape[2]:<4d} {label:32s}"
                    f" {seconds:8.3f} s  err {err:.1e}",
                    file=sys.stderr,
                    flush=True,
                )
                save()
    skipped = {c["run"] for c in report["cases"] if "skipped" in c}
    report["resnet50_spatial_convs_s"] = {k: v for k, v in totals.items() if k not in skipped}
    report["incomplete_runs"] = sorted(skipped)  # budget ran out: no total for these
    print(json.dumps(report["resnet50_spatial_convs_s"], indent=2))
    save()
    return report


if __name__ == "__main__":
    main()
