"""The concrete `Host` aliases of the user's ~/.ssh/config (and the files it Includes): the names
`ssh NAME` already reaches, offered by `profiles import` and `profiles add`.

Only names: no wildcard patterns (`*`, `?`), no negations (`!name`), nothing from `Match` lines.
Lines are read by sshconfig.py's reader (quotes, `Key=value`, Include relative to ~/.ssh, the
password database's home as ssh takes it); what an alias resolves to is sshtarget.py's job.
"""

from __future__ import annotations

from pathlib import Path

from colabtunnel.errors import ConfigError
from colabtunnel.ssh import sshconfig


def config_path() -> Path:
    return sshconfig.user_config()


def concrete_aliases(path: Path | None = None) -> list[str]:
    """The aliases in file order, each once; a missing or unreadable file has none."""
    found: dict[str, None] = {}
    _collect(path or config_path(), found, depth=0)
    return list(found)


def _collect(path: Path, found: dict[str, None], depth: int) -> None:
    if depth > sshconfig.MAX_INCLUDE_DEPTH:
        return
    for number, raw in enumerate(sshconfig.read_lines(path), 1):
        try:
            option = sshconfig.split_line(raw, path, number)
        except ConfigError:  # an unbalanced quote: ssh refuses the line too
            continue
        if option is None:
            continue
        if option.key == "host":
            for alias in option.args:
                if alias and not any(c in alias for c in "*?!,"):
                    found.setdefault(alias, None)
        elif option.key == "include":
            for included in sshconfig.include_targets(option.args, user=True):
                _collect(included, found, depth + 1)
