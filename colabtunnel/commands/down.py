"""`colabtunnel down [PROFILE...]`: stop keepers and remote Jupyters; no name = every tunnel."""

from __future__ import annotations

from dataclasses import dataclass

from colabtunnel import keeper, state
from colabtunnel.credentials import Credentials, Prompter
from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import get_profile
from colabtunnel.tunnel import Reporter, Tunnel, UpOptions

KEEPER_EXIT_S = keeper.STOP_WAIT_S


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
            if keeper.stop(record):
                after = state.read(name)
                state.remove(name)
                if after is not None and after.health == "stop-failed":
                    return DownResult(name, was_up=True, warning=_manual_stop(name, "it"))
                return DownResult(name, was_up=True)
        # The keeper is gone (or would not die): stop the remote Jupyter ourselves.
        warning = _stop_remote_directly(name, reporter, prompter)
        state.remove(name)
        return DownResult(name, was_up=True, warning=warning)


def _stop_remote_directly(name: str, reporter: Reporter, prompter: Prompter | None) -> str | None:
    profile = get_profile(name)
    reporter.step(f"stopping Jupyter for {name} (its keeper is gone)")
    tunnel = Tunnel(profile, UpOptions(probe=False), reporter, Credentials(name, prompter))
    try:
        tunnel.host = tunnel.connect_host()
        tunnel.close(stop_remote=True)
    except ColabtunnelError as exc:
        tunnel.close(stop_remote=False)
        return _manual_stop(name, f"{profile.host} ({exc.message})")
    return None


def _manual_stop(name: str, where: str) -> str:
    profile = get_profile(name)
    run_dir = f"${{XDG_STATE_HOME:-$HOME/.local/state}}/colabtunnel/{name}"
    command = f'kill -TERM -- -$(cat "{run_dir}/jupyter.pid") && rm -rf "{run_dir}"'
    if profile.is_local:
        return f"could not stop Jupyter for {name} here; stop it with: {command}"
    return (
        f"could not reach {where}; Jupyter may still run there. Stop it with: "
        f"ssh {profile.host} '{command}'"
    )
