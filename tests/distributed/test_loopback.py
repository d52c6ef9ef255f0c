"""``spectrum``, ``check`` and ``clip`` on a real Dask cluster on loopback (``dask scheduler`` +
two ``dask worker`` processes) give exactly the single-process output: the same JSON bytes, the
same clipped file. The truth is the single-process run of the same command (itself tested
against dense operators elsewhere) with one thread, as every cluster task runs: the engine's
last digits depend on the thread count, with or without a cluster.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from dask_loopback import SAMPLES, cli_env, medium_model, run_convaudit

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MODELS = [SAMPLES / "signal_1d.onnx", SAMPLES / "resnet_tiny.onnx"]


def _on_cluster(stderr: str, address: str) -> None:
    assert re.search(rf"^running on 2 workers at {re.escape(address)}$", stderr, re.M), stderr
    assert "Traceback" not in stderr, stderr


def test_spectrum_json_is_byte_identical(loopback, tmp_path):
    args = ["spectrum", *MODELS, "--format", "json", "--full"]
    env = cli_env(**ONE_THREAD)
    single = run_convaudit(*args, env=env)
    assert single.returncode == 0, single.stderr
    out = tmp_path / "report.json"
    dist = run_convaudit(*args, "--scheduler", loopback.address, "-o", out, env=env)
    assert dist.returncode == 0, dist.stderr
    _on_cluster(dist.stderr, loopback.address)
    assert out.read_text() == single.stdout
    report = json.loads(single.stdout)  # the comparison is not vacuous
    assert [len(m["layers"]) for m in report["models"]] == [4, 11]
    assert all("singular_values" in layer for m in report["models"] for layer in m["layers"])


def test_tasks_run_on_one_thread_whatever_the_client(loopback):
    """The client keeps its default (one thread per core); its tasks still run on one, so the
    report is the one-thread single-process report."""
    args = ["spectrum", SAMPLES / "resnet_tiny.onnx", "--format", "json"]
    single = run_convaudit(*args, env=cli_env(**ONE_THREAD))
    dist = run_convaudit(*args, "--scheduler", loopback.address)
    assert single.returncode == 0 and dist.returncode == 0, dist.stderr
    assert dist.stdout == single.stdout


def test_check_json_is_byte_identical(loopback):
    args = ["check", SAMPLES / "resnet_tiny.onnx", "--format", "json", "--max-sigma", "1.5"]
    env = cli_env(**ONE_THREAD)
    single = run_convaudit(*args, env=env)
    dist = run_convaudit(*args, "--scheduler", loopback.address, env=env)
    assert single.returncode == dist.returncode == 1, (single.stderr, dist.stderr)  # 1.5 fails
    _on_cluster(dist.stderr, loopback.address)
    assert dist.stdout == single.stdout
    assert json.loads(single.stdout)["counts"]["fail"] > 0


def test_clip_writes_an_identical_file(loopback, tmp_path):
    model = SAMPLES / "resnet_tiny.onnx"
    env = cli_env(**ONE_THREAD)
    outputs = {}
    for name, extra in (("single", []), ("dist", ["--scheduler", loopback.address])):
        dest = tmp_path / f"{name}.onnx"
        result = run_convaudit(
            "clip", model, "--bound", "1.0", "-o", dest, "--format", "json", *extra, env=env
        )
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["output"] == str(dest) and doc["written"] and doc["ok"]
        doc.pop("output")
        outputs[name] = (dest.read_bytes(), doc)
    _on_cluster(result.stderr, loopback.address)
    assert outputs["dist"] == outputs["single"]
    assert outputs["single"][0] != model.read_bytes()  # something was clipped
    assert any(not layer["unchanged"] for layer in outputs["single"][1]["layers"])


def test_bad_input_on_a_worker_fails_the_run_with_one_error_line(loopback):
    """The memory budget is checked inside the task, on the worker: the run stops there."""
    result = run_convaudit(
        "spectrum", SAMPLES / "resnet_tiny.onnx", "--full", "--max-memory", "1K",
        "--scheduler", loopback.address, "-q", env=cli_env(**ONE_THREAD),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "memory budget" in lines[0], result.stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), lines


def test_scheduler_from_the_environment_and_the_config_file(loopback, tmp_path):
    env = cli_env(CONVAUDIT_SCHEDULER=loopback.address, **ONE_THREAD)
    by_env = run_convaudit("spectrum", SAMPLES / "signal_1d.onnx", "--sigma", "bound", env=env)
    assert by_env.returncode == 0, by_env.stderr
    _on_cluster(by_env.stderr, loopback.address)

    config = tmp_path / "convaudit.toml"
    model = SAMPLES / "signal_1d.onnx"
    config.write_text(f'models = ["{model}"]\nscheduler = "{loopback.address}"\n')
    by_file = run_convaudit(
        "check", "--config", config, "--no-empirical", env=cli_env(**ONE_THREAD)
    )
    assert by_file.returncode == 0, by_file.stderr
    _on_cluster(by_file.stderr, loopback.address)


def test_local_workers_flag(tmp_path):
    """--workers 2 starts its own local cluster, with the same results."""
    pytest.importorskip("distributed", reason="Dask is not installed")
    model = medium_model(tmp_path / "medium.onnx", widths=(16, 16, 24))
    env = cli_env(**ONE_THREAD)
    args = ["spectrum", SAMPLES / "signal_1d.onnx", model, "--format", "json"]
    single = run_convaudit(*args, env=env)
    dist = run_convaudit(*args, "--workers", "2", env=env)
    assert single.returncode == 0 and dist.returncode == 0, dist.stderr
    assert re.search(r"^running on 2 workers at tcp://127\.0\.0\.1:\d+$", dist.stderr, re.M)
    assert dist.stdout == single.stdout
    for name, extra in (("single", []), ("dist", ["--workers", "2"])):
        result = run_convaudit(
            "clip", model, "--bound", "0.5", "-o", tmp_path / f"{name}.onnx", "-q", *extra, env=env
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "dist.onnx").read_bytes() == (tmp_path / "single.onnx").read_bytes()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary files left
