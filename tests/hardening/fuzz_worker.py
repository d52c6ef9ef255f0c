"""Loads model files named on stdin, one per line, and answers one JSON line each.

Run by test_fuzz.py as a long-lived child process, so that a file that crashes the
interpreter (a segfault in a C parser) or hangs it (an endless loop in one) is caught and
reported as such instead of taking the test run down with it.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from convaudit.errors import ConvauditError
from convaudit.loaders import LoadOptions, detect
from convaudit.loaders.safety import UnexpectedLoaderError


def outcome(path: Path) -> dict[str, str]:
    # The loader is called directly, not through load_model, whose last-resort net would
    # turn an escaping exception into an error and hide the hole.
    try:
        detect(path)().load(path, LoadOptions())
    except UnexpectedLoaderError as exc:
        return {"outcome": "escaped", "type": type(exc).__name__, "message": str(exc)}
    except ConvauditError as exc:
        return {"outcome": "refused", "type": type(exc).__name__, "message": str(exc)}
    except BaseException as exc:
        return {
            "outcome": "escaped",
            "type": type(exc).__name__,
            "message": str(exc)[:500],
            "traceback": traceback.format_exc()[-4000:],
        }
    return {"outcome": "loaded"}


def main() -> None:
    for line in sys.stdin:
        result = outcome(Path(line.rstrip("\n")))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
