"""What click/typer reject before a command runs (a bad value, an unknown option, a missing
argument), in the house style: one `error:` line, one `hint:` line with the usage and where the
help is, exit 2, and with `--json` the JSON error document, instead of click's `Usage:` block."""

from __future__ import annotations

import re
import sys
from typing import Any

from colabtunnel import output
from colabtunnel.errors import EXIT_CONFIG

PROGRAM = "colabtunnel"


def render(exc: Any, argv: list[str]) -> int:
    """Print `exc` (a click UsageError) for a person, and for a script when `argv` asks --json."""
    message = exc.format_message().strip()
    hint = _hint(exc)
    if "--json" in argv:
        error = {"message": message, "hint": hint}
        output.emit_json(_command(exc) or PROGRAM, ok=False, error=error)
    output.error(message, hint)
    return EXIT_CONFIG


def _command(exc: Any) -> str | None:
    """The command as the JSON documents name it: `up`, `status`, `profiles`, ..."""
    if exc.ctx is None:
        return None
    words = exc.ctx.command_path.split()
    return words[1] if len(words) > 1 else None


def _hint(exc: Any) -> str:
    ctx = exc.ctx
    if ctx is None:
        return f"see `{PROGRAM} --help`"
    # typer writes a required argument as {NAME}
    usage = re.sub(r"\{(\w+)\}", r"\1", ctx.get_usage().removeprefix("Usage: ").strip())
    hint = f"usage: {usage} (see `{ctx.command_path} --help`)"
    param = getattr(exc, "param", None)
    if param is not None and getattr(param, "name", None) == "profile":
        hint += f"; `{PROGRAM} profiles list` shows the profile names"
    return hint


def show_help_instead(exc: Any) -> int:
    """`colabtunnel` (or a command group) with no arguments: its help, as click shows it."""
    exc.show(file=sys.stderr)
    return int(exc.exit_code)
