"""The progress bar: on stderr for slow runs on a terminal; never with --quiet or machine formats."""

from __future__ import annotations

import json

import pytest

import convaudit.cli.progress as progress_module
import convaudit.cli.spectrum as spectrum_cli
from convaudit.cli.progress import LazyProgress

SIGNAL = "sample_models/signal_1d.onnx"


@pytest.fixture
def slow_terminal(monkeypatch):
    """Pretend stderr is a terminal and every run is slow enough for a bar."""
    monkeypatch.setattr(spectrum_cli, "stderr_is_tty", lambda: True)
    monkeypatch.setattr(progress_module, "DELAY_S", 0.0)


def test_bar_on_a_terminal_goes_to_stderr_only(cli, slow_terminal):
    result = cli("spectrum", SIGNAL, "--layers", "conv3", "--sigma", "bound")
    assert result.exit_code == 0, result.stderr
    assert "signal_1d.onnx" in result.stderr  # the bar, labelled with the model, on stderr
    assert "ETA" in result.stderr  # with an estimate of the time left
    assert "\x1b[" in result.stderr
    assert "\x1b[" not in result.stdout and "σ_max" in result.stdout  # the report is clean


@pytest.mark.parametrize("extra", [("--quiet",), ("--format", "json"), ("--format", "csv")])
def test_no_bar_when_quiet_or_machine_format(cli, slow_terminal, extra):
    result = cli("spectrum", SIGNAL, "--layers", "conv3", "--sigma", "bound", *extra)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    if "json" in extra:
        json.loads(result.stdout)


def test_fast_runs_get_no_bar(monkeypatch):
    bar = LazyProgress("x", enabled=True)
    with bar:
        bar(0, 3, "a")  # well under a second after start
    assert bar._bar is None


def test_disabled_bar_never_starts(monkeypatch):
    monkeypatch.setattr(progress_module, "DELAY_S", 0.0)
    bar = LazyProgress("x", enabled=False)
    with bar:
        bar(1, 3, "a")
    assert bar._bar is None
