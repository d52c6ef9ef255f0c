"""CLI test helpers: a CliRunner with stdout and stderr apart, and golden-file comparison."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from convaudit.cli import app

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the repository root, so model paths in reports are short and stable."""
    monkeypatch.chdir(REPO)
    return REPO


@pytest.fixture
def cli(in_repo: Path) -> Callable[..., Result]:
    """invoke('spectrum', 'model.onnx', ...) -> Result with .exit_code, .stdout, .stderr apart."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})

    return invoke


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], str]:
    """golden(name, actual) -> the expected text; rewrites it with --regen-golden."""
    regen = request.config.getoption("--regen-golden", default=False) or os.environ.get(
        "CONVAUDIT_REGEN_GOLDEN", ""
    ) not in ("", "0")

    def check(name: str, actual: str) -> str:
        path = GOLDEN / name
        if regen:
            path.write_text(actual, encoding="utf-8")
        if not path.exists():
            pytest.fail(f"{path} is missing: run pytest with --regen-golden to create it")
        return path.read_text(encoding="utf-8")

    return check


def one_error_line(result: Result) -> str:
    """The run failed cleanly: nothing on stdout, one `error:` line (+ optional hint), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.stdout == "", result.stdout
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
