"""CLI test helpers: a CliRunner with stdout and stderr apart, and golden-file comparison."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Re-exported: some test modules import it from here.
from cli_helpers import REPO, one_error_line, run_cli  # noqa: F401
from typer.testing import Result

GOLDEN = REPO / "tests" / "golden"


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the repository root, so model paths in reports are short and stable."""
    monkeypatch.chdir(REPO)
    return REPO


@pytest.fixture
def cli(in_repo: Path) -> Callable[..., Result]:
    """invoke('spectrum', 'model.onnx', ...) -> Result with .exit_code, .stdout, .stderr apart."""
    return run_cli


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
