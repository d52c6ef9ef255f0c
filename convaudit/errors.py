"""convaudit's error types. Every failure a user can cause maps to one of these.

The CLI turns each into one ``error: ...`` line (plus ``hint: ...``) and its exit code.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class ConvauditError(Exception):
    """Base class: convaudit could not do its job. Exit code 2."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ModelFileError(ConvauditError):
    """A model file is missing, unreadable, corrupt, or not a format we read."""


class UntrustedPickleError(ModelFileError):
    """The file needs full unpickling (arbitrary code execution) and --trust-pickle was not given."""


class InputShapeError(ConvauditError):
    """Input shapes are missing (dynamic dims) or contradict the model."""


class UnsupportedLayerError(ConvauditError):
    """A layer's geometry is outside what the requested computation can do exactly."""


class ResourceLimitError(ConvauditError):
    """A request cannot fit into the memory budget."""


class ConfigError(ConvauditError):
    """Bad configuration (pyproject.toml / convaudit.toml / CLI values)."""


class OutputError(ConvauditError):
    """An output file could not be written (exists, no permission, ...)."""
