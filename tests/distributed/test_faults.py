"""Faults on a real loopback cluster: a worker killed mid-run costs a retry of its task, not the
run (the report is still byte-identical); Ctrl-C cancels the futures and leaves no output file.

Each test starts its own scheduler and workers (it breaks them), watches the cluster through a
client of its own, and acts at the moment it describes: a worker is killed (SIGKILL to its whole
process group, nanny included) while it computes a layer and after a first result has reached
the convaudit client.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from dask_loopback import (
    REPO,
    cli_env,
    convaudit_tasks,
    medium_model,
    run_convaudit,
    start_cluster,
    stop,
    stop_cluster,
)

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WATCH_TIMEOUT_S = 240


def _watch(watcher, proc: subprocess.Popen[str], *, until) -> dict[str, tuple[str, str | None]]:
    """Poll the scheduler's convaudit tasks until ``until(tasks, finished)`` holds; ``finished``
    counts the tasks whose results the client has taken (they leave the scheduler)."""
    seen: set[str] = set()
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while time.monotonic() < deadline:
        tasks = watcher.run_on_scheduler(convaudit_tasks)
        seen |= tasks.keys()
        if until(tasks, len(seen - tasks.keys())):
            return tasks
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the moment came:\n{proc.communicate()[1]}")
        time.sleep(0.05)
    pytest.fail("the moment never came")


def _popen(*args: object) -> subprocess.Popen[str]:
    def default_sigint() -> None:  # a user's Ctrl-C reaches a process with the default handler
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [sys.executable, "-m", "convaudit", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**ONE_THREAD),
        cwd=REPO,
        preexec_fn=default_sigint,
    )


@pytest.fixture
def cluster(tmp_path):
    started = start_cluster(tmp_path / "dask")
    try:
        yield started
    finally:
        stop_cluster(started)


def test_a_worker_killed_mid_run_costs_a_retry_not_the_run(cluster, tmp_path):
    model = medium_model(tmp_path / "medium.onnx")
    args = ["spectrum", model, "--format", "json"]
    expected = run_convaudit(*args, env=cli_env(**ONE_THREAD))
    assert expected.returncode == 0, expected.stderr
    proc = _popen(*args, "--scheduler", cluster.address)
    try:
        with cluster.client() as watcher:
            tasks = _watch(
                watcher,
                proc,
                until=lambda tasks, finished: (
                    finished >= 1
                    and any(s == "processing" and w == "w2" for s, w in tasks.values())
                ),
            )
            stop(cluster.workers["w2"], signal.SIGKILL)
            lost = [key for key, (s, w) in tasks.items() if s == "processing" and w == "w2"]
            out, err = proc.communicate(timeout=WATCH_TIMEOUT_S)
            survivors = [w["name"] for w in watcher.scheduler_info()["workers"].values()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert lost, "w2 was computing a layer when it was killed"
    assert survivors == ["w1"]  # the killed worker did not come back: w1 redid its task
    assert out == expected.stdout
    assert "Traceback" not in err and "error" not in err, err


def test_ctrl_c_cancels_the_futures_and_leaves_no_output(cluster, tmp_path):
    model = medium_model(tmp_path / "medium.onnx")
    out = tmp_path / "out" / "report.json"
    out.parent.mkdir()
    proc = _popen("spectrum", model, "--format", "json", "-o", out, "--scheduler", cluster.address)
    try:
        with cluster.client() as watcher:
            _watch(
                watcher,
                proc,
                until=lambda tasks, finished: any(s == "processing" for s, _ in tasks.values()),
            )
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            deadline = time.monotonic() + 30
            while watcher.run_on_scheduler(convaudit_tasks) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = watcher.run_on_scheduler(convaudit_tasks)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted", err
    assert "Traceback" not in err, err
    assert list(out.parent.iterdir()) == []  # no report, no temporary file
    assert left == {}, left  # the futures were cancelled: the cluster forgot them


ORPHAN_SCRIPT = """
import asyncio, gc, sys
from convaudit.cli.cluster import open_executor
from convaudit.distributed import ClusterSpec

with open_executor(ClusterSpec(scheduler=sys.argv[1]), quiet=True):
    pass
loop = asyncio.new_event_loop()
orphan = loop.create_future()  # as a Dask wait left pending by Ctrl-C ends, at exit
orphan.set_exception(TimeoutError("Timeout"))
del orphan
gc.collect()
loop.call_exception_handler({"message": "some other asyncio trouble"})
"""


@pytest.mark.parametrize("debug", [False, True])
def test_futures_orphaned_by_the_cluster_print_nothing_unless_debugging(loopback, debug):
    """The stray ``Future exception was never retrieved`` / ``TimeoutError: Timeout`` that a
    Ctrl-C on a cluster run could print after ``error: interrupted``; CONVAUDIT_DEBUG shows it
    (which also proves the script does make asyncio report one)."""
    env = cli_env(**({"CONVAUDIT_DEBUG": "1"} if debug else {}))
    done = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, loopback.address],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert ("Future exception was never retrieved" in done.stderr) is debug, done.stderr
    assert "some other asyncio trouble" in done.stderr  # only the orphans are dropped
