"""The concrete `Host` aliases of the user's ~/.ssh/config (and the files it Includes): the names
`ssh NAME` already reaches, offered by `profiles import` and `profiles add`.

Only names: no wildcard patterns (`*`, `?`), no negations (`!name`), nothing from `Match` lines.
Resolving what an alias means (HostName, User, ProxyJump ...) is sshconfig.py's job, at `up` time.
"""

from __future__ import annotations

import glob
import os
import shlex
from pathlib import Path

MAX_INCLUDE_DEPTH = 16  # OpenSSH's own limit on nested Includes


def ssh_home() -> Path:
    """The home whose ~/.ssh is read. One place, so it can follow sshconfig's choice of home."""
    return Path.home()


def config_path() -> Path:
    return ssh_home() / ".ssh" / "config"


def concrete_aliases(path: Path | None = None) -> list[str]:
    """The aliases in file order, each once; a missing or unreadable file has none."""
    found: dict[str, None] = {}
    _collect(path or config_path(), found, depth=0)
    return list(found)


def _collect(path: Path, found: dict[str, None], depth: int) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        return
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        keyword, args = _split(line)
        if keyword == "host":
            for alias in args:
                if _concrete(alias):
                    found.setdefault(alias, None)
        elif keyword == "include":
            for pattern in args:
                for included in _expand(pattern):
                    _collect(included, found, depth + 1)


def _split(line: str) -> tuple[str, list[str]]:
    """`Keyword args...` or `Keyword=args...`, as OpenSSH reads a line; comments dropped."""
    line = line.strip()
    if not line or line.startswith("#"):
        return "", []
    keyword, _, rest = line.replace("=", " ", 1).partition(" ")
    try:
        args = shlex.split(rest, comments=True)
    except ValueError:  # an unbalanced quote: OpenSSH refuses the line too
        return "", []
    return keyword.lower(), args


def _concrete(alias: str) -> bool:
    return not any(c in alias for c in "*?!,") and bool(alias)


def _expand(pattern: str) -> list[Path]:
    """Include's argument: `~` expanded, relative to ~/.ssh, glob patterns sorted like ssh."""
    if pattern == "~" or pattern.startswith("~/"):
        pattern = str(ssh_home()) + pattern[1:]
    if not os.path.isabs(pattern):
        pattern = str(ssh_home() / ".ssh" / pattern)
    return [Path(p) for p in sorted(glob.glob(pattern))]
