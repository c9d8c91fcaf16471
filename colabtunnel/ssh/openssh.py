"""OpenSSH's own resolver: `ssh -G` prints the options that apply to a host after every `Host`,
`Match` (exec included), `Include`, the system-wide config and canonicalisation.

Asked once per host (the target and each jump host), with the profile's own settings passed as
`-o` options so they win exactly as command-line options win in `ssh`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from colabtunnel.errors import ConfigError

log = logging.getLogger("colabtunnel")

# `Match exec` runs the user's commands: give them time, but never hang `up` on one.
RESOLVE_TIMEOUT_S = 20.0


def client() -> str | None:
    """The OpenSSH client to ask, or None (then the built-in reader is used)."""
    return shutil.which("ssh")


def resolve(
    ssh: str,
    host: str,
    options: Sequence[tuple[str, str]],
    config_file: Path | None = None,
) -> dict[str, list[str]]:
    """`ssh -G` for `host`: keyword (lowercase) -> one value per printed line, in order."""
    argv = [ssh, "-G"]
    if config_file is not None:
        argv += ["-F", str(config_file)]
    for key, value in options:
        quoted = (
            f'"{value}"' if any(c.isspace() for c in value) and key != "ProxyCommand" else value
        )
        argv += ["-o", f"{key}={quoted}"]
    argv += ["--", host]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=RESOLVE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(
            f"`ssh -G {host}` did not finish within {RESOLVE_TIMEOUT_S:.0f} s",
            hint="a `Match exec` command in your ssh_config probably hangs; "
            f"try `ssh -G {host}` yourself",
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot run {ssh}: {exc.strerror or exc}", hint="check your OpenSSH installation"
        ) from exc
    if done.returncode != 0:
        problem = _first_problem(done.stderr) or f"exit status {done.returncode}"
        raise ConfigError(
            f"ssh_config for {host!r}: {problem}",
            hint=f"`ssh -G {host}` shows the same; fix that line of your ssh_config",
        )
    settings: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key:
            settings.setdefault(key.lower(), []).append(value)
    return settings


def _first_problem(text: str) -> str:
    """ssh's own complaint (`FILE line N: Bad port 'x'.`), not its closing `terminating` line."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("Pseudo-terminal") and "terminating," not in line
    ]
    located = [line for line in lines if " line " in line]
    return (located or lines or [""])[0]
