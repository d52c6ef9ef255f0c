"""A real Dask cluster on this machine's loopback: ``dask scheduler`` and two ``dask worker``
processes, started as subprocesses on 127.0.0.1 with ephemeral ports and one thread each.

Bounded in time: every wait has a deadline, the scheduler stops itself after a few idle
minutes and the workers shortly after losing it, and the fixture kills all of them (their whole
process groups) on the way out, whatever happened. Skipped when Dask is not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_models"
START_TIMEOUT_S = 120


def require_dask() -> None:
    pytest.importorskip(
        "distributed", reason="Dask is not installed (pip install 'convaudit[distributed]')"
    )


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("CONVAUDIT_DEBUG", "CONVAUDIT_SCHEDULER"):
        env.pop(name, None)
    env["KERAS_BACKEND"] = "torch"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(),
            start_new_session=True,  # its own process group: a worker's nanny and child die together
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """End ``proc`` and everything in its process group; SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):  # what is left of the group, if anything
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)


@dataclass
class LoopbackCluster:
    address: str
    folder: Path
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self):  # a client of the test's own, to watch the cluster
        import cloudpickle
        from distributed import Client

        # The scheduler cannot import this module: send its functions by value.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        return Client(self.address, timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in self.folder.glob("*.log"))


def convaudit_tasks(dask_scheduler) -> dict[str, tuple[str, str | None]]:
    """On the scheduler: each convaudit task's state and the worker it is processing on."""
    return {
        str(ts.key): (ts.state, None if ts.processing_on is None else ts.processing_on.name)
        for ts in dask_scheduler.tasks.values()
        if str(ts.key).startswith("convaudit-")
    }


def start_cluster(folder: Path, names: tuple[str, ...] = ("w1", "w2")) -> LoopbackCluster:
    require_dask()
    folder.mkdir(parents=True, exist_ok=True)
    address_file = folder / "scheduler.json"
    scheduler = _start(
        [
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", str(address_file), "--idle-timeout", "600s",
        ],
        folder / "scheduler.log",
    )  # fmt: skip
    cluster = LoopbackCluster("", folder, scheduler)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not address_file.exists() or not address_file.read_text().strip():
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start:\n{cluster.logs()}")
            time.sleep(0.1)
        cluster.address = json.loads(address_file.read_text())["address"]
        for name in names:
            cluster.workers[name] = _start(
                [
                    "worker", cluster.address, "--name", name, "--nthreads", "1",
                    "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard",
                    "--death-timeout", "60s",
                ],
                folder / f"{name}.log",
            )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cluster.client() as client:
                client.wait_for_workers(len(names), timeout=START_TIMEOUT_S)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: LoopbackCluster) -> None:
    for proc in cluster.workers.values():
        stop(proc)
    stop(cluster.scheduler)


def run_convaudit(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m convaudit ARGS`` in a fresh process, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "convaudit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
        cwd=REPO,
    )


def medium_model(dest: Path, widths: tuple[int, ...] = (24, 24, 32, 32, 32, 32)) -> Path:
    """A plain CNN of several medium zero-padded convs at 40x40, exported by torch.onnx.export:
    each layer's exact σ_max (Lanczos) takes a noticeable fraction of a second."""
    import torch

    if dest.exists():
        return dest
    torch.manual_seed(7)
    layers: list[torch.nn.Module] = []
    c_in = 3
    for width in widths:
        layers += [torch.nn.Conv2d(c_in, width, 3, padding=1), torch.nn.ReLU()]
        c_in = width
    net = torch.nn.Sequential(*layers).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(1, 3, 40, 40),), str(dest), dynamo=False, input_names=["x"]
        )
    return dest
