"""The one error type for problems the user can fix, and the exit codes it maps to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


class ColabtunnelError(Exception):
    """Something the user can fix. Rendered as `error: message` plus `hint: ...`, never a traceback."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(ColabtunnelError):
    """Bad usage or bad configuration (profiles.toml, flags): exit 2."""

    exit_code = EXIT_CONFIG
