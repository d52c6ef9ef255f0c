"""``python -m convaudit``."""

from convaudit.cli import run

run()
