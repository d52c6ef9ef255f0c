"""The typer application object, and the decorator every command registers with.

``@command()`` wraps a command so that convaudit's errors become one ``error:`` line (plus
``hint:``) on stderr and the documented exit code, also under ``typer.testing.CliRunner``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from convaudit import __version__
from convaudit.errors import EXIT_ERROR, EXIT_INTERRUPTED, ConvauditError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="convaudit",
    help="Audit the singular values of the convolutional layers of trained networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def debug_enabled() -> bool:
    return os.environ.get("CONVAUDIT_DEBUG", "") not in ("", "0")


def report_error(message: str, hint: str | None = None) -> None:
    """One ``error:`` line, then ``hint:`` where useful, on stderr."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    if hint:
        sys.stderr.write(f"hint: {' '.join(hint.split())}\n")


def command(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """``@app.command`` plus the error-to-exit-code mapping."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return func(*a, **kw)
            except ConvauditError as exc:
                if debug_enabled():
                    raise
                report_error(exc.message, exc.hint)
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                sys.stderr.write("error: interrupted\n")
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except MemoryError:
                if debug_enabled():
                    raise
                report_error("out of memory", "lower --max-memory, or ask for sigma_max only")
                raise typer.Exit(EXIT_ERROR) from None

        app.command(*args, **kwargs)(wrapper)
        return func

    return decorate


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convaudit {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show a traceback on errors (also CONVAUDIT_DEBUG=1)."
    ),
) -> None:
    """convaudit: exact singular values of conv layers (Sedghi, Gupta & Long, ICLR 2019)."""
    if debug:
        os.environ["CONVAUDIT_DEBUG"] = "1"
