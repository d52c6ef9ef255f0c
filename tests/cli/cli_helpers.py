"""Helpers shared by the CLI tests (a uniquely named module: `conftest` is ambiguous)."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner, Result

from convaudit.cli import app

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> Result:
    """Run convaudit from the repository root (short, stable model paths in reports).

    The Result keeps stdout and stderr apart. Usable from module-scoped fixtures, so that one
    slow analysis can serve several tests.
    """
    before = Path.cwd()
    os.chdir(REPO)
    try:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})
    finally:
        os.chdir(before)


def one_error_line(result: Result) -> str:
    """The run failed cleanly: nothing on stdout, one `error:` line (+ optional hint), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.stdout == "", result.stdout
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
