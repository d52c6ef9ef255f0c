"""One-shot device check: CUDA vs CPU correctness for every eigensolver backend, then ResNet-50.

Needs only torch + numpy (no pytest there). Run from the repo root (benchmarks/gpu_run.sh wraps
it with the GPU tests):
    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR [--budget SECONDS]
Steps, most important first, each skipped when the budget is spent:
  1. the machine: card, driver, CUDA, torch, cuSOLVER, which eigensolver is selected and why;
  2. correctness: CUDA spectra against the CPU's LAPACK for every available backend (forced in
     turn) and both routes, float64 (target <= 1e-12·sigma_max; the gram route is reported,
     its accuracy is that of the squared problem) and float32 (<= 2e-6), operator norms;
  3. bench_resnet50.py on CUDA with the default backend (the target: full spectra of the 53
     convs >= 10x faster than 2 CPU cores and < 2 s), then on 2 host cores pinned (taskset),
     then CUDA with torch.linalg.eigvalsh (the previous engine), the gram route, float32;
  4. bench_eigensolvers.py: every backend x route on ResNet-50's blocks.
Writes DIR/gpu_check.json (after every step) and prints a table at the end.
"""

from __future__ import annotations

import argparse
import ctypes
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
from convaudit.engine.spectrum import eigensolvers
from convaudit.errors import ConfigError

HERE = Path(__file__).resolve().parent
CASES = [
    ((16, 8, 3, 3), (12, 12), 1, 1),
    ((32, 16, 3, 3), (16, 16), 2, 1),
    ((24, 1, 3, 3), (10, 10), 1, 24),
    ((8, 8, 3), (32,), 1, 1),
    ((4, 4, 3, 3, 3), (6, 6, 6), 1, 1),
    ((64, 32, 1, 1), (8, 8), 2, 1),
    ((128, 128, 3, 3), (14, 14), 1, 1),
]


def machine(device: str) -> dict:
    info: dict = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    info["host_cores"] = os.cpu_count()
    if device.startswith("cuda"):
        info["card"] = torch.cuda.get_device_name(0)
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"unavailable: {exc}"
        try:
            version = ctypes.c_int()
            ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
            info["cuda_driver_api"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
        except OSError as exc:
            info["cuda_driver_api"] = f"unavailable: {exc}"
        try:
            info["cusolver"] = eigensolvers.torch_cusolver().describe()
        except eigensolvers.CusolverUnavailable as exc:
            info["cusolver"] = f"unavailable: {exc}"
    info["selected"] = {}
    for dtype in (torch.complex128, torch.float64, torch.complex64):
        selection = eigensolvers.select(device, dtype)
        info["selected"][str(dtype)] = {
            "backend": selection.solver.name,
            "skipped": list(selection.skipped),
        }
    return info


def available_backends(device: str) -> list[str]:
    names = []
    for name in eigensolvers.BACKENDS:
        with eigensolvers.prefer(backend=name):
            try:
                eigensolvers.select(device, torch.complex128)
            except ConfigError:
                continue
        names.append(name)
    return names


def correctness(device: str) -> tuple[list[dict], list[str]]:
    rows, failures = [], []
    for shape, grid, stride, groups in CASES:
        kernel = np.random.default_rng(0).standard_normal(shape)
        cpu = singular_values(kernel, grid, stride=stride, groups=groups)
        for backend in available_backends(device):
            for route in eigensolvers.ROUTES:
                for dtype, tol in (("float64", 1e-12), ("float32", 2e-6)):
                    if dtype == "float32" and route == "gram":
                        continue
                    with eigensolvers.prefer(backend, route), eigensolvers.recording() as ran:
                        got = singular_values(
                            kernel, grid, stride=stride, groups=groups, dtype=dtype, device=device
                        )
                    err = (
                        float(np.max(np.abs(got - cpu)) / cpu[0])
                        if got.shape == cpu.shape
                        else float("inf")
                    )
                    gate = route == "doubled"  # the gram route's error is reported only
                    ok = err <= tol
                    status = "ok" if ok else ("FAIL" if gate else "over")
                    rows.append(
                        {
                            "case": f"{shape} {grid} s={stride} g={groups}",
                            "backend": backend,
                            "ran": sorted(ran),
                            "route": route,
                            "dtype": dtype,
                            "error_over_sigma_max": err,
                            "status": status,
                        }
                    )
                    print(
                        f"{rows[-1]['case']:36s} {backend:22s} {route:8s} {dtype}: "
                        f"{err:.2e} {status} (ran {','.join(sorted(ran))})",
                        flush=True,
                    )
                    if gate and not ok:
                        failures.append(f"{rows[-1]['case']} {backend} {dtype} err {err:.2e}")
    for mode in ("zeros", "circular", "reflect"):
        kernel = np.random.default_rng(1).standard_normal((16, 8, 3, 3))
        cpu = operator_norm(kernel, (12, 12), padding=1, padding_mode=mode)
        gpu = operator_norm(kernel, (12, 12), padding=1, padding_mode=mode, device=device)
        err = abs(gpu.value - cpu.value) / cpu.value
        ok = err <= 1e-6 and gpu.exact == cpu.exact and gpu.lower <= cpu.upper
        ok = ok and gpu.upper >= cpu.lower
        print(f"operator_norm {mode}: {err:.2e} {'ok' if ok else 'FAIL'}", flush=True)
        rows.append(
            {"case": f"operator_norm {mode}", "error": err, "status": "ok" if ok else "FAIL"}
        )
        if not ok:
            failures.append(f"operator_norm {mode} err {err:.2e}")
    return rows, failures


def script(name: str, args: list[str], out: Path, label: str, timeout: float, **kw) -> dict:
    """Run benchmarks/NAME with ``--json``; its partial JSON survives a timeout."""
    target = out / f"{label}.json"
    cmd = [*kw.get("prefix", []), sys.executable, str(HERE / name), *args, "--json", str(target)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), **kw.get("env", {})}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True, env=env)
        (out / f"{label}.log").write_text(proc.stdout[-6000:] + proc.stderr[-10000:])
    except subprocess.TimeoutExpired:
        partial = json.loads(target.read_text()) if target.exists() else {}
        return {**partial, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()
        return {"error": last[-1] if last else f"exit {proc.returncode}"}
    result = json.loads(target.read_text())
    result["wall_s"] = time.perf_counter() - t0
    return result


def smoke(backend: str, device: str) -> int:
    """Select ``backend`` (its self-test) and run one batch; a crash here spares the rest."""
    from convaudit.engine.spectrum.routes import route_svdvals

    b = torch.randn(10, 20, 36, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    want = np.linalg.svd(b.numpy(), compute_uv=False)
    try:
        with eigensolvers.prefer(backend=backend), eigensolvers.recording() as ran:
            got = route_svdvals(b.to(device)).cpu().numpy()
    except ConfigError as exc:
        print(f"smoke {backend}: unavailable: {exc.message}", flush=True)
        return 2
    err = float(np.max(np.abs(got - want)) / want.max())
    ok = err <= 1e-12 and ran == {backend}
    print(f"smoke {backend}: error {err:.1e}, ran {sorted(ran)}: {'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", metavar="BACKEND", help="only select BACKEND and run one batch")
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole script")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    args = ap.parse_args()
    if args.smoke:
        sys.exit(smoke(args.smoke, args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device", flush=True)
        return
    report: dict = {"machine": machine(args.device)}
    print(json.dumps(report["machine"], indent=2), flush=True)

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))

    def left() -> float:
        return args.budget - (time.perf_counter() - start) - 5

    report["correctness"], report["failures"] = correctness(args.device)
    save()
    dev = ["--device", args.device, "--no-reference"]
    pin = ["taskset", "-c", "0,1"] if (os.cpu_count() or 1) > 2 else []
    two_cores = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"}
    steps = [  # (label, script, args, timeout, extra)
        ("cuda_f64", "bench_resnet50.py", dev, 120, {}),
        (
            "cpu_2core",
            "bench_resnet50.py",
            ["--device", "cpu", "--no-reference", "--no-padded"],
            150,
            {"prefix": pin, "env": two_cores},
        ),
        (
            "cuda_f64_torch",
            "bench_resnet50.py",
            [*dev, "--no-padded", "--eigensolver", "torch-eigvalsh"],
            60,
            {},
        ),
        (
            "eigensolvers",
            "bench_eigensolvers.py",
            ["--device", args.device, "--budget", "80"],
            100,
            {},
        ),
        (
            "cuda_f64_gram",
            "bench_resnet50.py",
            [*dev, "--no-padded", "--svd-route", "gram"],
            60,
            {},
        ),
        ("cuda_f32", "bench_resnet50.py", [*dev, "--no-padded", "--dtype", "float32"], 60, {}),
    ]
    for label, name, step_args, timeout, extra in steps:
        if left() < 20:
            report[label] = {"error": "not run: the budget was spent"}
            continue
        report[label] = script(name, step_args, out, label, min(timeout, left()), **extra)
        print(f"{label}:", json.dumps(report[label], default=str)[:1500], flush=True)
        save()
    summary(report)
    save()


def summary(report: dict) -> None:
    cols = ("cpu_2core", "cuda_f64", "cuda_f64_torch", "cuda_f64_gram", "cuda_f32")

    def cell(label: str, key: str) -> str:
        value = report.get(label, {}).get(key)
        if isinstance(value, list):
            value = "+".join(value)
        if isinstance(value, (int, float)):
            return f"{value:.3g}"
        return str(value) if isinstance(value, str) else "-"

    m = report["machine"]
    print(
        f"\ncard: {m.get('card')}  driver: {m.get('nvidia_smi')}  CUDA driver API "
        f"{m.get('cuda_driver_api')}  torch {m['torch']} (CUDA {m['torch_cuda']})"
    )
    print(f"cuSOLVER: {m.get('cusolver')}  selected: {m['selected']}")
    print(f"correctness failures: {report.get('failures')}")
    print(f"{'':34s}" + "".join(f"{c:>15s}" for c in cols))
    for label, key in [
        ("eigensolver forced/selected", "eigensolver"),
        ("eigensolvers that ran", "eigensolvers_ran"),
        ("route", "svd_route"),
        ("full spectra stride-1 (s)", "convaudit_full_stride1_s"),
        ("full spectra all 53 (s)", "convaudit_full_all53_s"),
        ("sigma_max all 53 (s)", "sigma_max_all53_s"),
        ("sigma_max vs full, max rel diff", "sigma_max_max_rel_error_vs_full"),
        ("zero-pad exact all 53 (s)", "zero_padding_exact_all53_s"),
        ("zero-pad exact count", "zero_padding_exact_count"),
        ("peak RSS (MB)", "peak_rss_mb"),
        ("peak CUDA (MB)", "peak_cuda_mb"),
    ]:
        print(f"{label:34s}" + "".join(f"{cell(c, key)[:14]:>15s}" for c in cols))
    cpu = report.get("cpu_2core", {}).get("convaudit_full_all53_s")
    gpu = report.get("cuda_f64", {}).get("convaudit_full_all53_s")
    if isinstance(cpu, float) and isinstance(gpu, float) and gpu > 0:
        met = cpu / gpu >= 10 and gpu < 2
        print(
            f"target (full spectra of 53 >= 10x 2 cores, < 2 s): {cpu / gpu:.1f}x, {gpu:.2f} s: "
            f"{'met' if met else 'NOT met'}"
        )
    totals = report.get("eigensolvers", {}).get("resnet50_spatial_convs_s")
    if totals:
        print("backend/route on ResNet-50's spatial convs (s):", json.dumps(totals))


if __name__ == "__main__":
    main()
