"""User-facing errors: the CLI prints them as one clear message and exits with status 2."""

from __future__ import annotations


class ForgetFilterError(Exception):
    """An error caused by input, configuration or environment, shown to the user without a traceback."""

    exit_code = 2


class InputError(ForgetFilterError):
    """Bad input data; names the file and, where known, the line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(ForgetFilterError):
    """A configuration that cannot work (bad flag combination, changed config on resume, ...)."""


class NumericalError(ForgetFilterError):
    """A loss or score became NaN/inf; the last good checkpoint is kept."""
