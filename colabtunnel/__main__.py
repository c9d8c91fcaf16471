"""`colabtunnel` and `python -m colabtunnel`: an early keeper for `up` (keeper_launch), then the CLI.

First, a check that the `colabtunnel` package Python imports is this project's: the unrelated
PyPI project `colabtunnel` ships a top-level package of the same name, and installed over or beside
`colabtunnel-ssh` it would make every command die in an ImportError that explains nothing.
"""

from __future__ import annotations

import sys
from typing import NoReturn

DISTRIBUTION = "colabtunnel-ssh"
EXIT_CONFIG = 2  # errors.EXIT_CONFIG, without importing anything that may not be ours
LOOKALIKE_HINT = (
    "the PyPI project `colabtunnel` is a different tool with a package of the same name: "
    "pip uninstall colabtunnel colabtunnel-ssh, then pipx install colabtunnel-ssh "
    "(from a clone: pipx install .)"
)


def lookalike() -> str | None:
    """Why the imported `colabtunnel` package is not ours, or None when it is."""
    import colabtunnel

    if getattr(colabtunnel, "__distribution__", None) == DISTRIBUTION:
        return None
    where = getattr(colabtunnel, "__file__", None) or "an unknown place"
    return f"the Python package `colabtunnel` found at {where} is not {DISTRIBUTION}"


def main() -> None:
    problem = lookalike()
    if problem is not None:
        _fail(problem)
    try:
        from colabtunnel.keeper import launch as keeper_launch
    except ImportError as exc:  # our files partly overwritten by the other package
        _fail(_incomplete(exc))
    # Before the CLI's own imports, so the keeper's imports overlap them (keeper/launch.py).
    keeper_launch.start_early(sys.argv[1:])
    try:
        try:
            from colabtunnel.cli import main as cli_main
        except ImportError as exc:
            _fail(_incomplete(exc))
        cli_main()
    finally:
        keeper_launch.discard_early()


def _incomplete(exc: ImportError) -> str:
    return f"{DISTRIBUTION} is incompletely installed ({exc})"


def _fail(problem: str) -> NoReturn:
    print(f"error: {problem}", file=sys.stderr)
    print(f"hint: {LOOKALIKE_HINT}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


if __name__ == "__main__":
    main()
