"""Choosing where to run: --workers / --scheduler / CONVAUDIT_SCHEDULER / ``scheduler`` in the
config file, and what happens when that cannot work (one ``error:`` line, exit 2). Without any
of them nothing changes: Dask is never imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from dask_loopback import REPO, SAMPLES, cli_env
from typer.testing import CliRunner

from convaudit.cli import app
from convaudit.cli.cluster import cluster_spec
from convaudit.errors import ConfigError
from convaudit.gate.config import load_settings, scheduler_setting


def _cli(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env or {"COLUMNS": "200"})


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), lines
    return lines[0]


def test_without_cluster_options_dask_is_never_imported():
    code = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from convaudit.cli import app
        for args in (["spectrum", {str(SAMPLES / "signal_1d.onnx")!r}, "--format", "json"],
                     ["check", {str(SAMPLES / "signal_1d.onnx")!r}, "--no-empirical"]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("dask", "distributed") or m == "convaudit.distributed")
        print(loaded)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=REPO,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cluster_spec_precedence():
    assert cluster_spec(None, None) is None
    assert cluster_spec(None, None, fallback="") is None
    local = cluster_spec(3, None, fallback="tcp://elsewhere:8786")  # the command line wins
    assert (local.workers, local.scheduler) == (3, None)
    remote = cluster_spec(None, "tcp://a:1", fallback="tcp://b:2")
    assert (remote.workers, remote.scheduler) == (None, "tcp://a:1")
    assert cluster_spec(None, None, fallback="tcp://b:2").scheduler == "tcp://b:2"
    with pytest.raises(ConfigError, match="not both"):
        cluster_spec(2, "tcp://a:1")
    with pytest.raises(ConfigError, match="at least 1"):
        cluster_spec(0, None)


def test_scheduler_in_the_config_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.convaudit]\nscheduler = "tcp://10.0.0.1:8786"\nmax-sigma = 2\n'
    )
    sub = tmp_path / "src"
    sub.mkdir()
    assert scheduler_setting(cwd=sub) == "tcp://10.0.0.1:8786"
    settings = load_settings({}, cwd=sub, environ={})
    assert settings.scheduler == "tcp://10.0.0.1:8786"
    assert load_settings({}, cwd=sub, environ={"CONVAUDIT_SCHEDULER": "tcp://e:1"}).scheduler == (
        "tcp://e:1"
    )
    (tmp_path / "pyproject.toml").write_text("[tool.convaudit]\nscheduler = 8786\n")
    with pytest.raises(ConfigError, match="scheduler must be a non-empty string"):
        scheduler_setting(cwd=sub)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert scheduler_setting(cwd=sub) is None


def test_both_options_is_a_usage_error():
    line = _one_error_line(
        _cli("spectrum", SAMPLES / "signal_1d.onnx", "--workers", "2", "--scheduler", "tcp://a:1")
    )
    assert "not both" in line


def test_without_dask_installed_the_hint_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    result = _cli("spectrum", SAMPLES / "signal_1d.onnx", "--workers", "2")
    assert "Dask" in _one_error_line(result)
    assert "pip install 'convaudit[distributed]'" in result.stderr


def test_an_unreachable_scheduler_is_one_error_line(monkeypatch):
    pytest.importorskip("distributed", reason="Dask is not installed")
    import convaudit.distributed.cluster as cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    result = _cli("spectrum", SAMPLES / "signal_1d.onnx", "--scheduler", "tcp://127.0.0.1:9", "-q")
    assert "cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in _one_error_line(result)


def test_workers_running_another_convaudit_are_refused(loopback, monkeypatch):
    import convaudit.distributed.cluster as cluster

    monkeypatch.setattr(cluster, "__version__", "0.0.0+other")
    result = _cli("spectrum", SAMPLES / "signal_1d.onnx", "--scheduler", loopback.address, "-q")
    line = _one_error_line(result)
    assert f"the Dask workers at {loopback.address} run convaudit" in line
    assert "this is 0.0.0+other" in line
