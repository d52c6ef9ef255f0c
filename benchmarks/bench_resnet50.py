"""Benchmark: the 53 convolutions of ResNet-50 at 224x224 (torchvision layout, random weights).

Side by side, in one process:
  1. the paper's published method (Sedghi et al. 2019), numpy:
       np.linalg.svd(np.fft.fft2(kernel, (n, n), axes=[0, 1]), compute_uv=False)
     on the 46 stride-1 layers. It takes many minutes, so it is TIMED on a sample of frequency
     matrices of every stride-1 layer and extrapolated linearly in the number of frequencies
     (the SVDs are independent and equally sized), and RUN IN FULL on a representative subset
     (each distinct 3x3 shape, plus 1x1 layers) to check both the extrapolation and accuracy;
  2. convaudit's full spectra on all 53 layers (strided ones exact, MATH.md §1);
  3. convaudit's sigma_max-only path (certified bracket) on all 53;
  4. the exact sigma_max of the real zero-padded operator (Lanczos, MATH.md §2) on all 53.

numpy's BLAS is pinned to one thread for the reference: on this machine that is its fastest
setting (OpenBLAS threads on 2 busy cores slow small SVDs down by up to 100x).

Usage: python benchmarks/bench_resnet50.py [--device cpu|cuda] [--dtype float64|float32]
       [--no-reference] [--no-padded] [--sample N] [--json FILE]
       [--eigensolver NAME] [--svd-route doubled|gram]
--eigensolver forces one backend of convaudit.engine.spectrum.eigensolvers (default: the first
available); --svd-route picks how singular values become eigenvalues off the CPU. The report
names the backends that ran (``eigensolvers_ran``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from convaudit.engine.api import operator_norm
from convaudit.engine.conv import Conv as EngineConv
from convaudit.engine.results import EngineOptions
from convaudit.engine.runtime import runtime
from convaudit.engine.sigma.circular import circular_sigma_max
from convaudit.engine.spectrum import eigensolvers
from convaudit.engine.spectrum.circular import circular_spectrum


@dataclass(frozen=True)
class Conv:
    name: str
    c_in: int
    c_out: int
    k: int
    stride: int
    grid: int  # input spatial size

    @property
    def pad(self) -> int:
        return (self.k - 1) // 2


def resnet50_convs() -> list[Conv]:
    """torchvision resnet50 (v1.5: stride on the bottleneck's 3x3) at 224x224."""
    convs = [Conv("conv1", 3, 64, 7, 2, 224)]
    grid, c_in = 56, 64  # after the 3x3/2 max-pool
    for stage, (width, blocks, stride) in enumerate(
        [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1
    ):
        out = width * 4
        for b in range(blocks):
            s = stride if b == 0 else 1
            p = f"layer{stage}.{b}"
            convs.append(Conv(f"{p}.conv1", c_in, width, 1, 1, grid))
            convs.append(Conv(f"{p}.conv2", width, width, 3, s, grid))
            convs.append(Conv(f"{p}.conv3", width, out, 1, 1, grid // s))
            if b == 0:
                convs.append(Conv(f"{p}.downsample.0", c_in, out, 1, s, grid))
            grid, c_in = grid // s, out
    assert len(convs) == 53 and sum(c.stride == 1 for c in convs) == 46
    return convs


def weights(conv: Conv, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((conv.c_out, conv.c_in, conv.k, conv.k)) * math.sqrt(
        2 / (conv.c_in * conv.k**2)
    )


def paper_reference(
    kernel: np.ndarray, n: int, sample: int | None, rng: np.random.Generator
) -> tuple[float, np.ndarray | None]:
    """(seconds for the whole layer, values or None when sampled) for the paper's code."""
    k_paper = kernel.transpose(2, 3, 1, 0)  # the paper's (k, k, c_in, c_out) layout
    t0 = time.perf_counter()
    transforms = np.fft.fft2(k_paper, (n, n), axes=[0, 1])
    t_fft = time.perf_counter() - t0
    if sample is None or sample >= n * n:
        t0 = time.perf_counter()
        values = np.linalg.svd(transforms, compute_uv=False)
        return t_fft + time.perf_counter() - t0, values.reshape(-1)
    flat = transforms.reshape(n * n, *transforms.shape[2:])
    pick = rng.choice(n * n, size=sample, replace=False)
    t0 = time.perf_counter()
    np.linalg.svd(flat[pick], compute_uv=False)
    return t_fft + (time.perf_counter() - t0) * (n * n) / sample, None


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-padded", action="store_true")
    ap.add_argument(
        "--sample", type=int, default=48, help="frequency matrices timed per sampled layer"
    )
    ap.add_argument(
        "--full-reference",
        default="layer1.0.conv1,layer1.0.conv2,layer2.1.conv2,layer4.1.conv2,layer1.1.conv1",
        help="comma-separated stride-1 layers on which the paper's code runs in full",
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--eigensolver", default=None, choices=eigensolvers.BACKENDS)
    ap.add_argument("--svd-route", default=None, choices=eigensolvers.ROUTES)
    ap.add_argument("--limit", type=int, default=None, help="only the first N layers (smoke test)")
    args = ap.parse_args(argv)
    with eigensolvers.prefer(args.eigensolver, args.svd_route), eigensolvers.recording() as ran:
        return run(args, ran)


def run(args: argparse.Namespace, ran: set[str]) -> dict:

    convs = resnet50_convs()[: args.limit]
    kernels = {c.name: weights(c, i) for i, c in enumerate(convs)}
    opts = EngineOptions(dtype=args.dtype, device=args.device)
    rt = runtime(opts)
    full_ref = set(filter(None, args.full_reference.split(",")))
    report: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
        f", numpy {np.__version__}",
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "dtype": args.dtype,
        "eigensolver": eigensolvers.select(rt.device, torch.complex128).solver.name,
        "svd_route": eigensolvers.preference().route,
    }
    if rt.device.type == "cuda":
        try:
            report["cusolver"] = eigensolvers.torch_cusolver().describe()
        except eigensolvers.CusolverUnavailable as exc:
            report["cusolver"] = f"unavailable: {exc}"

    def save() -> None:  # after every section, so a timeout still leaves figures
        report["eigensolvers_ran"] = sorted(ran)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=2, default=float)

    # 1+2. the paper's method and convaudit's full spectra, interleaved layer by layer so that
    # both see the same machine load.
    try:
        from threadpoolctl import threadpool_limits

        def limit():
            return threadpool_limits(limits=1, user_api="blas")
    except ImportError:  # then OPENBLAS_NUM_THREADS=1 in the environment does it
        import contextlib

        limit = contextlib.nullcontext
    rng = np.random.default_rng(0)

    def spectrum(c: Conv) -> np.ndarray:
        k = torch.as_tensor(kernels[c.name], dtype=rt.real, device=rt.device)
        return circular_spectrum(EngineConv(k, (c.stride,) * 2, (1, 1)), (c.grid, c.grid), rt)

    spectrum(convs[1])  # warm-up (thread pool, LAPACK init, cuSOLVER handle)
    ref_time, ref_values, ref_measured = 0.0, {}, {}
    times_full, tops, err = {}, {}, 0.0
    for c in convs:
        if c.stride == 1 and not args.no_reference:
            whole = c.name in full_ref
            with limit():
                t_ref, vals = paper_reference(
                    kernels[c.name], c.grid, None if whole else args.sample, rng
                )
                if whole:
                    ref_values[c.name] = np.sort(vals)[::-1]
                    est, _ = paper_reference(kernels[c.name], c.grid, args.sample, rng)
                    ref_measured[c.name] = (t_ref, est)
            ref_time += t_ref
        t, sv = timed(lambda c=c: spectrum(c))
        times_full[c.name] = t
        tops[c.name] = float(sv[0])
        if c.name in ref_values:
            ref = ref_values[c.name]
            err = max(err, float(np.max(np.abs(sv - ref)) / ref[0]))
        ref_note = (
            f"reference {t_ref:8.2f} s ({'full' if c.name in ref_values else 'extrapolated'})"
            if (c.stride == 1 and not args.no_reference)
            else ""
        )
        print(f"{c.name:22s} convaudit {t:7.2f} s  {ref_note}", file=sys.stderr)
        report["reference_stride1_s"] = ref_time
        report["reference_check"] = {
            n: {"full_s": a, "extrapolated_s": b} for n, (a, b) in ref_measured.items()
        }
        report["convaudit_full_s"] = dict(times_full)
        save()
    full1 = sum(
        t for n, t in times_full.items() if next(c for c in convs if c.name == n).stride == 1
    )
    report["convaudit_full_stride1_s"] = full1
    report["convaudit_full_all53_s"] = sum(times_full.values())
    report["max_error_vs_reference"] = err if ref_values else None
    print(
        f"full spectra: stride-1 {full1:.2f} s, all 53 {report['convaudit_full_all53_s']:.2f} s",
        file=sys.stderr,
    )

    save()

    # 3. sigma_max only
    def top(c: Conv):
        k = torch.as_tensor(kernels[c.name], dtype=rt.real, device=rt.device)
        return circular_sigma_max(EngineConv(k, (c.stride,) * 2, (1, 1)), (c.grid, c.grid), rt)

    t_sig, sig_err, sig_exact = 0.0, 0.0, 0
    # the full spectra carry the working precision's FFT rounding; the bracket is float64
    slack = 1e-9 if args.dtype == "float64" else 1e-5
    for c in convs:
        t, res = timed(lambda c=c: top(c))
        t_sig += t
        sig_err = max(sig_err, abs(res.value - tops[c.name]) / tops[c.name])
        sig_exact += res.upper <= res.lower * (1 + opts.tol) * (1 + 1e-12)
        assert res.lower <= tops[c.name] * (1 + slack) and res.upper >= tops[c.name] * (
            1 - slack
        ), c.name
    report["sigma_max_all53_s"] = t_sig
    report["sigma_max_max_rel_error_vs_full"] = sig_err
    report["sigma_max_exact_count"] = int(sig_exact)
    print(
        f"sigma_max only: {t_sig:.2f} s, {sig_exact}/{len(convs)} closed within tol",
        file=sys.stderr,
    )

    save()

    # 4. exact zero-padding sigma_max
    if not args.no_padded:
        t_pad, n_exact, products, ratios = 0.0, 0, 0, []
        for c in convs:
            t, res = timed(
                lambda c=c: operator_norm(
                    kernels[c.name],
                    (c.grid, c.grid),
                    stride=c.stride,
                    padding=c.pad,
                    dtype=args.dtype,
                    device=args.device,
                )
            )
            t_pad += t
            n_exact += res.exact
            products += res.iterations
            ratios.append(res.upper / res.value)
        report["zero_padding_exact_all53_s"] = t_pad
        report["zero_padding_exact_count"] = n_exact
        report["zero_padding_lanczos_products"] = products
        report["zero_padding_max_bracket_ratio"] = max(ratios)
        print(
            f"zero-padding exact: {t_pad:.2f} s, {n_exact}/53 exact, {products} products",
            file=sys.stderr,
        )

    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if ref_time:
        report["speedup_full_stride1"] = ref_time / full1
        report["sigma_max_fraction_of_reference"] = t_sig / ref_time
    print(json.dumps(report, indent=2, default=float))
    save()
    return report


if __name__ == "__main__":
    main()
