"""Starting the keeper process, and starting it early.

The keeper spends ~0.2 s importing paramiko and the rest before it can connect; the CLI spends
~0.1 s importing typer and the `up` command before it can send the keeper its orders. Started
first thing (before the CLI has parsed its arguments), the keeper does its imports on the other
core meanwhile, then reads its orders like any keeper: keeper.spawn() adopts it. A keeper nobody
adopts (`up` found the tunnel already up, or the arguments were wrong) reads end-of-file on its
stdin when the CLI exits, and quits without doing anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_early: subprocess.Popen[bytes] | None = None

GLOBAL_FLAGS = frozenset({"--debug", "-v", "--verbose"})
NOT_BACKGROUND = frozenset({"--foreground", "--help", "-h"})
WITH_VALUE = frozenset({"--local-port", "--remote-port", "--timeout"})  # `up` options


def launch(stderr_path: Path, warm: bool = False) -> subprocess.Popen[bytes]:
    """`python -m colabtunnel.keeper` in a session of its own, orders and progress on pipes.
    `warm`: import the SSH library before waiting for orders (they are not there yet)."""
    stderr = os.open(stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # Not through the CLI: the keeper needs no typer.
        return subprocess.Popen(
            [sys.executable, "-m", "colabtunnel.keeper", *(["--warm"] if warm else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            close_fds=True,
            **_detach_flags(),
        )
    finally:
        os.close(stderr)


def _detach_flags() -> dict[str, Any]:
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
        return {"creationflags": flags}
    return {"start_new_session": True}


def wants_keeper(argv: list[str]) -> bool:
    """True for `colabtunnel [--debug|-v] up ...` that will run in the background."""
    rest = list(argv)
    while rest and rest[0] in GLOBAL_FLAGS:
        rest.pop(0)
    return bool(rest) and rest[0] == "up" and not NOT_BACKGROUND & set(rest)


def profile_of(argv: list[str]) -> str | None:
    """The PROFILE of `[flags] up [options] PROFILE ...`, or None when it cannot be told."""
    rest = iter(argv[argv.index("up") + 1 :] if "up" in argv else [])
    for word in rest:
        if word in WITH_VALUE:
            next(rest, None)
        elif not word.startswith("-"):
            return word
    return None


def _already_up(argv: list[str]) -> bool:
    """The tunnel `up` asks for is up already: `up` only prints its URL and needs no keeper (an
    early one would spend a core on imports meanwhile). Only a hint: `up` decides under its
    lock."""
    name = profile_of(argv)
    if name is None:
        return False
    from colabtunnel.keeper import state

    try:
        record = state.peek(name)
    except Exception:  # an optimisation only: a name that is no profile, an unreadable home
        return False
    return record is not None and state.reusable(record)


def start_early(argv: list[str]) -> None:
    """Start a keeper now if `argv` is an `up` that will need one. Never fails: without an early
    keeper, keeper.spawn() starts one the usual way."""
    global _early
    if _early is not None or not wants_keeper(argv) or _already_up(argv):
        return
    from colabtunnel import paths

    try:
        _early = launch(paths.log_file("keeper-start"), warm=True)
    except Exception:  # an optimisation only: the normal path reports real problems
        _early = None


def take_early() -> subprocess.Popen[bytes] | None:
    """The early keeper, if one was started and is still waiting; the caller owns it now."""
    global _early
    child, _early = _early, None
    if child is not None and child.poll() is not None:
        return None
    return child


def discard_early() -> None:
    """Kill an early keeper nobody adopted: it has connected nothing and written nothing, and
    killing it now leaves no process behind for even a moment."""
    child = take_early()
    if child is not None:
        child.kill()
        child.wait()
