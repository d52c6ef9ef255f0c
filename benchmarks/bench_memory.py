"""Peak memory of ``convaudit spectrum`` under ``--max-memory`` (issue 6, promise 4).

Each measurement runs the real CLI in a fresh child process and reads that child's own peak
resident set size from ``os.wait4`` (``ru_maxrss``), so nothing of this script's memory (or of
other runs) is counted. The model is a single 256-channel 3x3 conv exported by
``torch.onnx.export`` with dynamic height and width; ``--input-shape`` sets the grid.

    .venv/bin/python benchmarks/bench_memory.py                # the default table (CPU)
    .venv/bin/python benchmarks/bench_memory.py --grid 1024 --budgets 512M 2G --modes bound
    .venv/bin/python benchmarks/bench_memory.py --device cuda  # on a GPU machine

Prints a Markdown table (paste into benchmarks/README.md, "Peak memory").
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: what each mode passes to `convaudit spectrum`
MODES = {
    "bound": ["--sigma", "bound"],  # certified upper bound on sigma_max only
    "exact": ["--sigma", "exact"],  # sigma_max of the real zero-padded operator + circular stats
    "full": ["--sigma", "bound", "--full"],  # every singular value of the circular operator
}


@dataclass(frozen=True)
class Run:
    mode: str
    grid: int
    channels: int
    budget: str
    exit_code: int
    seconds: float
    peak_rss_mib: float
    note: str


def build_model(folder: Path, channels: int) -> Path:
    import torch

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
    path = folder / f"conv{channels}.onnx"
    torch.onnx.export(
        conv,
        (torch.zeros(1, channels, 8, 8),),
        path,
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {2: "h", 3: "w"}},
    )
    return path


def baseline_rss_mib() -> float:
    """Peak RSS of a child that only imports convaudit's CLI and torch (the fixed cost)."""
    code = "import torch, convaudit.cli, convaudit.loaders.onnx.reader, convaudit.analysis"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss / 1024


#: runs the real CLI entry point, then records the CUDA allocator's peak (when CUDA was used)
_CHILD = """
import sys
from convaudit.cli import main
code = main(sys.argv[2:])
if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
    import torch
    with open(sys.argv[1], "w") as f:
        f.write(str(torch.cuda.max_memory_reserved()))
sys.exit(code)
"""


def measure(
    model: Path, mode: str, grid: int, channels: int, budget: str, device: str, timeout: float
) -> Run:
    fd, cuda_path = tempfile.mkstemp(suffix=".cuda")
    os.close(fd)
    args = [
        sys.executable,
        "-c",
        _CHILD,
        cuda_path,
        "spectrum",
        str(model),
        "--format",
        "json",
        "--quiet",
        "--device",
        device,
        "--input-shape",
        f"x=1,{channels},{grid},{grid}",
        *MODES[mode],
    ]
    if budget != "default":
        args += ["--max-memory", budget]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=REPO)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = [ln for ln in err.read().splitlines() if ln.startswith(("error:", "hint:"))]
    cuda_text = Path(cuda_path).read_text().strip()
    os.unlink(cuda_path)
    note = " / ".join(lines) if code != 0 else ""
    if cuda_text:
        note = f"CUDA peak reserved {int(cuda_text) / 1024**2:.0f} MiB. {note}".strip()
    if code == -9 and seconds >= timeout:
        note = f"stopped after {timeout:.0f} s (did not finish)"
    return Run(mode, grid, channels, budget, code, seconds, usage.ru_maxrss / 1024, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--grid", type=int, nargs="+", default=[1024])
    parser.add_argument("--modes", nargs="+", default=["bound"], choices=sorted(MODES))
    parser.add_argument("--budgets", nargs="+", default=["256M", "1G", "default"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=900)
    a = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        model = build_model(Path(folder), a.channels)
        base = baseline_rss_mib()
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, device {a.device}"
        )
        print(f"baseline (python + torch + convaudit imported, nothing computed): {base:.0f} MiB\n")
        print(
            "| mode | conv | grid | --max-memory | exit | wall (s) | peak RSS (MiB) | above baseline | note |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for grid in a.grid:
            for mode in a.modes:
                for budget in a.budgets:  # one row as each run ends: partial results survive
                    r = measure(model, mode, grid, a.channels, budget, a.device, a.timeout)
                    print(
                        f"| {r.mode} | {r.channels}->{r.channels} 3x3 | {r.grid}x{r.grid} "
                        f"| {r.budget} | {r.exit_code} | {r.seconds:.1f} | {r.peak_rss_mib:.0f} "
                        f"| {r.peak_rss_mib - base:.0f} | {r.note} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
