"""One-shot device check: CUDA vs CPU correctness, then the ResNet-50 benchmark on both.

Needs only torch + numpy (no pytest there). Run from the repo root:
    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR [--budget SECONDS]
Writes DIR/gpu_check.json and prints a short table at the end. The CPU benchmark runs pinned to
two cores (taskset) so its figures compare with the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convaudit.engine.api import operator_norm, singular_values

CASES = [
    ((16, 8, 3, 3), (12, 12), 1, 1),
    ((32, 16, 3, 3), (16, 16), 2, 1),
    ((24, 1, 3, 3), (10, 10), 1, 24),
    ((8, 8, 3), (32,), 1, 1),
    ((4, 4, 3, 3, 3), (6, 6, 6), 1, 1),
    ((64, 32, 1, 1), (8, 8), 2, 1),
    ((128, 128, 3, 3), (14, 14), 1, 1),
]


def correctness() -> list[str]:
    failures = []
    for shape, grid, stride, groups in CASES:
        kernel = np.random.default_rng(0).standard_normal(shape)
        cpu = singular_values(kernel, grid, stride=stride, groups=groups)
        for dtype, tol in (("float64", 1e-12), ("float32", 2e-6)):
            gpu = singular_values(
                kernel, grid, stride=stride, groups=groups, dtype=dtype, device="cuda"
            )
            err = (
                float(np.max(np.abs(gpu - cpu)) / cpu[0])
                if gpu.shape == cpu.shape
                else float("inf")
            )
            status = "ok" if err <= tol else "FAIL"
            print(
                f"spectrum {shape} {grid} s={stride} g={groups} {dtype}: {err:.2e} {status}",
                flush=True,
            )
            if status != "ok":
                failures.append(f"spectrum {shape} {dtype} err {err:.2e}")
    for mode in ("zeros", "circular", "reflect"):
        kernel = np.random.default_rng(1).standard_normal((16, 8, 3, 3))
        cpu = operator_norm(kernel, (12, 12), padding=1, padding_mode=mode)
        gpu = operator_norm(kernel, (12, 12), padding=1, padding_mode=mode, device="cuda")
        err = abs(gpu.value - cpu.value) / cpu.value
        ok = (
            err <= 1e-6
            and gpu.exact == cpu.exact
            and gpu.lower <= cpu.upper
            and gpu.upper >= cpu.lower
        )
        print(f"operator_norm {mode}: {err:.2e} {'ok' if ok else 'FAIL'}", flush=True)
        if not ok:
            failures.append(f"operator_norm {mode} err {err:.2e}")
    return failures


def bench(
    args: list[str],
    out: Path,
    name: str,
    timeout: float,
    prefix: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    target = out / f"{name}.json"
    cmd = [
        *(prefix or []),
        sys.executable,
        str(Path(__file__).parent / "bench_resnet50.py"),
        *args,
        "--json",
        str(target),
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, timeout=timeout, capture_output=True, text=True, env={**os.environ, **(env or {})}
        )
        (out / f"{name}.log").write_text(proc.stdout[-4000:] + proc.stderr[-6000:])
    except subprocess.TimeoutExpired:
        partial = json.loads(target.read_text()) if target.exists() else {}
        return {**partial, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    result = json.loads(target.read_text())
    result["wall_s"] = time.perf_counter() - t0
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--budget", type=float, default=380.0, help="seconds for the whole script")
    ap.add_argument("--sample", default="24")
    ap.add_argument("--skip-f32", action="store_true")
    ap.add_argument("--cuda-timeout", type=float, default=100.0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report: dict = {
        "card": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cores": os.cpu_count(),
    }
    if not torch.cuda.is_available():
        print("no CUDA device", flush=True)
    else:
        report["failures"] = correctness()
        report["cuda_f64"] = bench(
            ["--device", "cuda", "--no-reference"], out, "cuda_f64", args.cuda_timeout
        )
        print("cuda f64:", report["cuda_f64"], flush=True)
        if not args.skip_f32:
            report["cuda_f32"] = bench(
                ["--device", "cuda", "--dtype", "float32", "--no-reference", "--no-padded"],
                out,
                "cuda_f32",
                60,
            )
            print("cuda f32:", report["cuda_f32"], flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    left = args.budget - (time.perf_counter() - start) - 10
    pin = ["taskset", "-c", "0,1"] if os.cpu_count() and os.cpu_count() > 2 else []
    env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"}
    report["cpu_2core"] = bench(
        ["--device", "cpu", "--sample", args.sample],
        out,
        "cpu_2core",
        max(30.0, left),
        prefix=pin,
        env=env,
    )
    print("cpu 2-core:", report["cpu_2core"], flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))

    def row(label: str, key: str) -> str:
        cells = [
            f"{report.get(k, {}).get(key, float('nan')):.3g}"
            if isinstance(report.get(k, {}).get(key), (int, float))
            else "-"
            for k in ("cpu_2core", "cuda_f64", "cuda_f32")
        ]
        return f"{label:40s} " + " ".join(f"{c:>10s}" for c in cells)

    print(f"\ncard: {report['card']}   correctness failures: {report.get('failures')}")
    print(f"{'':40s} {'cpu 2-core':>10s} {'cuda f64':>10s} {'cuda f32':>10s}")
    for label, key in [
        ("reference stride-1 (s, extrapolated)", "reference_stride1_s"),
        ("full spectra stride-1 (s)", "convaudit_full_stride1_s"),
        ("full spectra all 53 (s)", "convaudit_full_all53_s"),
        ("max error vs reference", "max_error_vs_reference"),
        ("sigma_max all 53 (s)", "sigma_max_all53_s"),
        ("zero-pad exact all 53 (s)", "zero_padding_exact_all53_s"),
        ("zero-pad exact count", "zero_padding_exact_count"),
        ("peak RSS (MB)", "peak_rss_mb"),
        ("peak CUDA (MB)", "peak_cuda_mb"),
    ]:
        print(row(label, key))


if __name__ == "__main__":
    main()
