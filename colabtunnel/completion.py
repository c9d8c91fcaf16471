"""Shell completion of profile names: the table names of profiles.toml, read as fast as possible.

Runs on every Tab press, so: no validation (a broken file completes what it can), no SSH, nothing
heavier than tomllib; the whole `colabtunnel` process stays well under 0.15 s.
"""

from __future__ import annotations

import tomllib

from colabtunnel import paths

BUILT_IN = ("local",)


def profile_names(incomplete: str = "") -> list[str]:
    """Profile names starting with `incomplete`: the file's, then the built-in `local`."""
    names = dict.fromkeys([*_file_names(), *BUILT_IN])
    return [name for name in names if name.startswith(incomplete)]


def _file_names() -> list[str]:
    try:
        data = tomllib.loads(paths.profiles_file().read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    tables = data.get("profiles")
    return [str(name) for name in tables] if isinstance(tables, dict) else []
