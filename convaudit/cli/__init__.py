"""Command-line interface: thin typer commands over the library; the only code that prints.

Exit codes: 0 ok, 1 a check failed, 2 usage/input/environment error, 130 interrupted.

Start-up is instant: the command modules import only typer and convaudit's light modules at
the top, and each command imports what it computes with (numpy, torch, onnx, h5py, the
engine) in its body. ``--help``, ``--version``, ``layers`` and the error paths therefore never
import torch; tests/cli/test_startup.py proves it.
"""

from __future__ import annotations

import os
import sys

from convaudit.errors import EXIT_ERROR, EXIT_INTERRUPTED, ConvauditError


def _is_cli_process() -> bool:
    """True when this process is the convaudit command (console script or python -m)."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(main_spec, "name", "") == "convaudit.__main__" or (
        os.path.basename(sys.argv[0] if sys.argv else "") == "convaudit"
    )


try:  # a Ctrl-C during the imports is no traceback either
    import typer

    from convaudit.cli import check, clip, layers, spectrum  # noqa: F401  (registers the commands)
    from convaudit.cli.app import app, debug_enabled, report_error
except KeyboardInterrupt:
    if not _is_cli_process():
        raise
    sys.stderr.write("error: interrupted\n")
    raise SystemExit(EXIT_INTERRUPTED) from None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (errors already mapped to one line)."""
    try:
        # Without standalone mode click *returns* a typer.Exit's code instead of raising it.
        result = app(args=argv, prog_name="convaudit", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("error: interrupted\n")
        return EXIT_INTERRUPTED
    except ConvauditError as exc:  # raised outside a command (e.g. in a callback)
        if debug_enabled():
            raise
        report_error(exc.message, exc.hint)
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown option, bad value, ...
        message = exc.format_message()
        if message:  # empty when typer already printed the help (no arguments given)
            report_error(message, "run `convaudit --help` (or COMMAND --help) for usage")
        return EXIT_ERROR
    return result if type(result) is int else 0


def run() -> None:  # pragma: no cover - the console script
    try:
        code = main()
    except KeyboardInterrupt:  # between two handlers, e.g. while a report is being printed
        sys.stderr.write("error: interrupted\n")
        code = EXIT_INTERRUPTED
    sys.exit(code)


__all__ = ["app", "main", "run"]
