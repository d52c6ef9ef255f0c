"""Start-up time of the CLI, before and after a change, side by side in one run.

    .venv/bin/python benchmarks/bench_startup.py [--before REF] [--runs 9]

``REF`` (default ``main``) is exported with ``git archive`` into a temporary folder; both trees
run on the same interpreter and packages, each from its own folder (first on ``sys.path``). Runs are
interleaved (before, after, before, after, ...) so that the machine's load hits both alike;
the table gives the median wall time and CPU time (user + system) of each command, and the
ratio. The load average is printed with it: on a shared machine, compare ratios, and read the
CPU time as what the wall time is on an idle machine (these commands are single-threaded).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = (
    ("--version", ["--version"]),
    ("--help", ["--help"]),
    ("layers resnet_tiny.onnx", ["layers", "sample_models/resnet_tiny.onnx"]),
    ("error: missing file", ["spectrum", "sample_models/no_such_model.onnx"]),
)
PROGRAM = "import sys; from convaudit.cli import run; sys.argv[0] = 'convaudit'; run()"


def export(ref: str, dest: Path) -> Path:
    archive = dest / "tree.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", ref], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "tree", filter="data")
    return dest / "tree"


def once(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "100"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", PROGRAM, *args],
        cwd=tree,  # `python -c` puts the working folder first on sys.path: the tree's own
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="main", help="git ref to compare with")
    parser.add_argument("--runs", type=int, default=9)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="convaudit-startup-") as tmp:
        before = export(opts.before, Path(tmp))
        trees = {"before": before, "after": REPO}
        for tree in trees.values():  # warm the file cache and the bytecode of both trees
            for _, args in CASES:
                once(tree, args)
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        load = os.getloadavg()
        for _ in range(opts.runs):
            for label, args in CASES:
                for name, tree in trees.items():
                    times.setdefault((label, name), []).append(once(tree, args))
        load_after = os.getloadavg()
    print(f"before = {opts.before}, after = working tree; {opts.runs} interleaved runs each")
    print(f"load average (1 min) {load[0]:.1f} at the start, {load_after[0]:.1f} at the end;")
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print()
    print("| command | before: wall / CPU (s) | after: wall / CPU (s) | after / before (wall) |")
    print("|---|---|---|---|")
    for label, _ in CASES:
        b = [statistics.median(x) for x in zip(*times[(label, "before")], strict=True)]
        a = [statistics.median(x) for x in zip(*times[(label, "after")], strict=True)]
        print(
            f"| `convaudit {label}` | {b[0]:.3f} / {b[1]:.3f} | {a[0]:.3f} / {a[1]:.3f} "
            f"| {a[0] / b[0]:.2f} |"
        )
    print()
    print("medians; CPU = user + system time of the process, which a busy machine inflates less")


if __name__ == "__main__":
    main()
