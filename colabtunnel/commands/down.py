"""`colabtunnel down [PROFILE...]`: stop keepers and remote Jupyters; no name = every tunnel."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from colabtunnel import state
from colabtunnel.credentials import Credentials, Prompter
from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import get_profile
from colabtunnel.tunnel import Reporter, Tunnel, UpOptions

KEEPER_EXIT_S = 60.0


@dataclass(frozen=True)
class DownResult:
    profile: str
    was_up: bool
    warning: str | None = None


def down(
    names: list[str], reporter: Reporter, prompter: Prompter | None = None
) -> list[DownResult]:
    if names:
        for name in names:
            get_profile(name)  # an unknown name is a configuration error, before anything stops
    targets = names or [record.profile for record in state.all_records()]
    return [_down_one(name, reporter, prompter) for name in targets]


def _down_one(name: str, reporter: Reporter, prompter: Prompter | None) -> DownResult:
    with state.lock(name, KEEPER_EXIT_S * 2):
        record = state.read(name)
        if record is None:
            return DownResult(name, was_up=False)
        if state.keeper_alive(record):
            reporter.step(f"stopping {name}")
            if _stop_keeper(record):
                state.remove(name)
                return DownResult(name, was_up=True)
        # The keeper is gone (or would not die): stop the remote Jupyter ourselves.
        warning = _stop_remote_directly(name, reporter, prompter)
        state.remove(name)
        return DownResult(name, was_up=True, warning=warning)


def _stop_keeper(record: state.Record) -> bool:
    """TERM the keeper (it stops the remote Jupyter), wait, KILL if needed. True if it exited itself."""
    try:
        os.kill(record.keeper_pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + KEEPER_EXIT_S
    while time.monotonic() < deadline:
        if not state.keeper_alive(record):
            return True
        time.sleep(0.05)
    if hasattr(signal, "SIGKILL"):
        os.kill(record.keeper_pid, signal.SIGKILL)
    return False


def _stop_remote_directly(name: str, reporter: Reporter, prompter: Prompter | None) -> str | None:
    profile = get_profile(name)
    reporter.step(f"stopping Jupyter for {name} (its keeper is gone)")
    tunnel = Tunnel(profile, UpOptions(probe=False), reporter, Credentials(name, prompter))
    try:
        tunnel.host = tunnel.connect_host()
        tunnel.close(stop_remote=True)
    except ColabtunnelError as exc:
        tunnel.close(stop_remote=False)
        where = "this machine" if profile.is_local else profile.host
        return (
            f"could not reach {where} ({exc.message}); Jupyter may still run there. Stop it with: "
            f"ssh {profile.host} 'kill -TERM -- -$(cat ~/.local/state/colabtunnel/{name}/jupyter.pid)'"
        )
    return None
