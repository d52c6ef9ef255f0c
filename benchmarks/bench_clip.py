"""Time `convaudit clip` on a ResNet-50-sized model: the 53 convs of ResNet-50, random weights.

The layer list is built here (no torchvision): conv1 7x7/2, then bottleneck stages of
(1x1, 3x3, 1x1) convs with 3, 4, 6, 3 blocks, widths 64..512, expansion 4, a 1x1 projection
shortcut opening each stage, the stride on the 3x3 (torchvision's ResNet v1.5). Weights are
Kaiming-normal (fan_out), as torchvision initialises them; every conv is zero-padded, so the
projection runs on the enlarged grid of MATH.md §2 and the result is certified for the real
zero-padded operator at the given input size.

    python benchmarks/bench_clip.py [--input-size 224] [--bound 1.0] [--method alternating]
                                    [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from convaudit.clipping import ClipOptions, clip_ir
from convaudit.ir import ConvLayer, ModelIR


def resnet50_convs(input_size: int, seed: int = 0) -> list[ConvLayer]:
    rng = np.random.default_rng(seed)
    layers: list[ConvLayer] = []

    def conv(name: str, c_in: int, c_out: int, k: int, stride: int, size: int) -> int:
        pad = k // 2
        kernel = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
        kernel *= np.float32(np.sqrt(2.0 / (c_out * k * k)))
        layers.append(
            ConvLayer(
                name,
                kernel,
                (stride, stride),
                (1, 1),
                ((pad, pad), (pad, pad)),
                input_size=(size, size),
            )
        )
        return (size + 2 * pad - k) // stride + 1

    size = conv("conv1", 3, 64, 7, 2, input_size)
    size = (size + 2 - 3) // 2 + 1  # 3x3/2 max pool
    c_in = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            prefix = f"layer{stage + 1}.{block}"
            conv(f"{prefix}.conv1", c_in, width, 1, 1, size)
            out = conv(f"{prefix}.conv2", width, width, 3, stride, size)
            conv(f"{prefix}.conv3", width, 4 * width, 1, 1, out)
            if block == 0:
                conv(f"{prefix}.downsample", c_in, 4 * width, 1, stride, size)
            c_in, size = 4 * width, out
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--bound", type=float, default=1.0)
    parser.add_argument(
        "--method", default="alternating", choices=["alternating", "dykstra", "rescale"]
    )
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    layers = resnet50_convs(args.input_size)
    assert len(layers) == 53
    ir = ModelIR("resnet50-random", "benchmark", tuple(layers))
    options = ClipOptions(bound=args.bound, method=args.method, tol=args.tol, device=args.device)
    per_layer: list[tuple[str, float]] = []
    last = [time.perf_counter()]

    def progress(done: int, total: int, what: str) -> None:
        now = time.perf_counter()
        if done:
            per_layer.append((layers[done - 1].name, now - last[0]))
        last[0] = now

    wall0, cpu0 = time.perf_counter(), time.process_time()
    _, rows = clip_ir(ir, options, progress)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    assert all(r.sigma_after <= r.bound for r in rows)
    slowest = sorted(per_layer, key=lambda item: -item[1])[:5]
    iters = {r.name: r.iterations for r in rows}
    result = {
        "model": "ResNet-50 convs (53), random Kaiming weights",
        "input_size": args.input_size,
        "bound": args.bound,
        "method": args.method,
        "tol": args.tol,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg()[0],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "layers_changed": sum(not r.unchanged for r in rows),
        "iterations_total": sum(iters.values()),
        "iterations_max": max(iters.values()),
        "mean_relative_change": float(np.mean([r.relative_change for r in rows])),
        "slowest_layers_s": {name: round(t, 2) for name, t in slowest},
        "slowest_layers_iterations": {name: iters[name] for name, _ in slowest},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
