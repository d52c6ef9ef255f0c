"""Assertions shared by the CLI tests (a uniquely named module: `conftest` is ambiguous)."""

from __future__ import annotations

from typer.testing import Result


def one_error_line(result: Result) -> str:
    """The run failed cleanly: nothing on stdout, one `error:` line (+ optional hint), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.stdout == "", result.stdout
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
