"""`colabtunnel down [PROFILE...]`: stop keepers and remote Jupyters; no name = every tunnel."""

from __future__ import annotations

from dataclasses import dataclass

from colabtunnel import hosts, keeper, launchers, state
from colabtunnel.credentials import Credentials, Prompter
from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import get_profile
from colabtunnel.tunnel import Reporter

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
        warning = _stop_remote_directly(record, reporter, prompter)
        state.remove(name)
        return DownResult(name, was_up=True, warning=warning)


def _stop_remote_directly(
    record: state.Record, reporter: Reporter, prompter: Prompter | None
) -> str | None:
    name = record.profile
    profile = get_profile(name)
    reporter.step(f"stopping Jupyter for {name} (its keeper is gone)")
    launcher = launchers.for_record(record, profile)
    try:
        with hosts.connected(profile, reporter, Credentials(name, prompter)) as host:
            launcher.stop(host, profile, record.handle)
    except ColabtunnelError as exc:
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
