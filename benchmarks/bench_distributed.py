"""Single process vs a local Dask cluster (``--workers N``): a model zoo, and one large layer.

1. **zoo**: the bundled sample models plus generated ONNX CNNs (``zoo.py``, >= 20 files), all
   read once here, then ``convaudit spectrum``'s analysis (default options: exact σ_max of the
   real operator, circular spectrum where cheap) of every layer of every model, in one process
   and on the cluster, interleaved round by round so that both see the same machine load. The
   single process runs on one thread, as each cluster task does (the reports must match byte
   for byte); ``--default-threads`` also times it with torch's default (one thread per core).
2. **large layer**: the full circular spectrum of one conv (``--large C,N``: C->C channels, 3x3,
   circular padding, N x N input), whose frequency chunks the cluster runs as tasks of their own.

Each round checks that the cluster's JSON report is byte-identical to the single process's (the
spectrum's arrays bit-identical for the large layer). The per-task costs (compute time on the
worker, from Dask's task stream) and the cluster's start-up time feed the fleet plan in
benchmarks/README.md.

    python benchmarks/bench_distributed.py [--workers 2] [--rounds 2] [--generated 15]
                                           [--large 128,128] [--no-large] [--default-threads]
                                           [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo import build_zoo

from convaudit import __version__
from convaudit.analysis import AnalysisOptions, ModelReport, analyse_models
from convaudit.cli.options import parse_input_shapes
from convaudit.distributed import ClusterSpec, open_cluster
from convaudit.ir import ConvLayer, ModelIR
from convaudit.loaders import LoadOptions, load_model
from convaudit.report.formats import Format, renderer
from convaudit.report.interface import RenderOptions


def load() -> float:
    return os.getloadavg()[0]


def report_json(reports: list[ModelReport]) -> str:
    return renderer(Format.JSON)(reports, RenderOptions(full=False))


def task_costs(stream: list[dict[str, Any]]) -> dict[str, Any]:
    """Compute seconds of the finished convaudit tasks in a Dask task stream."""
    seconds = sorted(
        sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
        for t in stream
        if str(t.get("key", "")).startswith("convaudit-") and t.get("status") == "OK"
    )
    if not seconds:
        return {"tasks": 0}
    return {
        "tasks": len(seconds),
        "total_s": round(sum(seconds), 3),
        "median_s": round(statistics.median(seconds), 4),
        "p95_s": round(seconds[int(0.95 * (len(seconds) - 1))], 4),
        "max_s": round(seconds[-1], 4),
    }


def run_single(irs: list[ModelIR], options: AnalysisOptions, threads: int | None) -> tuple:
    """One process; ``threads`` torch threads (None: torch's default, one per core)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        t = time.perf_counter()
        reports = analyse_models(irs, options)
        return reports, time.perf_counter() - t
    finally:
        torch.set_num_threads(previous)


def run_cluster(workers: int, irs: list[ModelIR], options: AnalysisOptions) -> dict[str, Any]:
    from distributed import get_task_stream

    started = time.perf_counter()
    with open_cluster(ClusterSpec(workers=workers)) as executor:
        up = time.perf_counter() - started
        begin = time.perf_counter()
        with get_task_stream(executor.client) as stream:
            reports = analyse_models(irs, options, executor=executor)
        compute = time.perf_counter() - begin
        costs = task_costs(stream.data)
    return {"start_s": up, "compute_s": compute, "reports": reports, "costs": costs}


def zoo_rounds(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    models = build_zoo(folder, args.generated)
    began = time.perf_counter()
    irs = [
        load_model(path, LoadOptions(input_shapes=parse_input_shapes([shape] if shape else None)))
        for path, shape in models
    ]
    load_s = time.perf_counter() - began
    layers = sum(len(ir.layers) for ir in irs)
    options = AnalysisOptions()
    rounds = []
    for r in range(args.rounds):
        before = load()
        single, single_s = run_single(irs, options, 1)
        cluster = run_cluster(args.workers, irs, options)
        identical = report_json(single) == report_json(cluster["reports"])
        row = {
            "round": r + 1,
            "load_before": round(before, 2),
            "single_1_thread_s": round(single_s, 2),
            "cluster_start_s": round(cluster["start_s"], 2),
            "cluster_compute_s": round(cluster["compute_s"], 2),
            "speedup_compute": round(single_s / cluster["compute_s"], 2),
            "speedup_with_start": round(single_s / (cluster["compute_s"] + cluster["start_s"]), 2),
            "identical_json": identical,
            "task_costs": cluster["costs"],
        }
        if args.default_threads:
            default, default_s = run_single(irs, options, None)
            row["single_default_threads_s"] = round(default_s, 2)
            row["default_threads_identical_json"] = report_json(default) == report_json(single)
        row["load_after"] = round(load(), 2)
        print(json.dumps(row), flush=True)
        rounds.append(row)
    return {
        "files": len(models),
        "layers": layers,
        "client_load_s": round(load_s, 2),
        "rounds": rounds,
    }


def large_rounds(args: argparse.Namespace) -> dict[str, Any]:
    channels, size = (int(v) for v in args.large.split(","))
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)
    layer = ConvLayer(
        "large", kernel, (1, 1), (1, 1), ((1, 1), (1, 1)), padding_mode="circular",
        input_size=(size, size),
    )  # fmt: skip
    ir = ModelIR(path=f"large_{channels}x{size}", format="generated", layers=(layer,))
    options = AnalysisOptions(full=True)
    rounds = []
    for r in range(args.rounds):
        before = load()
        (single,), single_s = run_single([ir], options, 1)
        cluster = run_cluster(args.workers, [ir], options)
        (dist,) = cluster["reports"]
        a, b = single.layers[0].spectrum, dist.layers[0].spectrum
        row = {
            "round": r + 1,
            "load_before": round(before, 2),
            "load_after": round(load(), 2),
            "single_1_thread_s": round(single_s, 2),
            "cluster_start_s": round(cluster["start_s"], 2),
            "cluster_compute_s": round(cluster["compute_s"], 2),
            "speedup_compute": round(single_s / cluster["compute_s"], 2),
            "identical_spectrum": bool(np.array_equal(a.singular_values, b.singular_values)),
            "identical_json": report_json([single]) == report_json([dist]),
            "singular_values": int(a.singular_values.size),
            "task_costs": cluster["costs"],
        }
        print(json.dumps(row), flush=True)
        rounds.append(row)
    return {"layer": f"{channels}->{channels} 3x3 circular at {size}x{size}", "rounds": rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--generated", type=int, default=15)
    parser.add_argument("--large", default="128,128", metavar="C,N")
    parser.add_argument("--no-large", action="store_true")
    parser.add_argument(
        "--default-threads", action="store_true",
        help="also time the zoo in one process with torch's default threads (one per core)",
    )  # fmt: skip
    parser.add_argument("--zoo-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "convaudit": __version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "workers": args.workers,
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["zoo"] = zoo_rounds(args, args.zoo_dir or Path(tmp))
    if not args.no_large:
        result["large"] = large_rounds(args)
    print(json.dumps({k: v for k, v in result.items() if k != "zoo"} | {"zoo": {
        k: v for k, v in result["zoo"].items() if k != "rounds"}}, indent=2))  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
