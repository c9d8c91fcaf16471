"""`colabtunnel down [PROFILE...]`: stop keepers and remote Jupyters; no name = every tunnel."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from colabtunnel import hosts, keeper, launchers, state
from colabtunnel.credentials import Credentials, Prompter
from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import Profile, get_profile
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
                    why = after.detail or "the host could not be reached"
                    return DownResult(name, was_up=True, warning=_manual_stop(name, why))
                return DownResult(name, was_up=True)
        # The keeper is gone (or would not die): stop the remote Jupyter ourselves.
        warning = _stop_remote_directly(record, reporter, prompter)
        state.remove(name)
        return DownResult(name, was_up=True, warning=warning)


def _stop_remote_directly(
    record: state.Record, reporter: Reporter, prompter: Prompter | None
) -> str | None:
    from colabtunnel.hostkeys import ChangedHostKey

    name = record.profile
    profile = get_profile(name)
    reporter.step(f"stopping Jupyter for {name} (its keeper is gone)")
    launcher = launchers.for_record(record, profile)
    try:
        host = hosts.connect(profile, reporter, Credentials(name, prompter))
    except ChangedHostKey as exc:
        return _manual_stop(name, f"colabtunnel refused to log in: {exc.message}")
    except ColabtunnelError as exc:
        return _manual_stop(name, f"could not reach {profile.host}: {exc.message}")
    try:
        launcher.stop(host, profile, record.handle)
    except (ColabtunnelError, OSError, EOFError) as exc:
        return _manual_stop(name, f"stopping it on {profile.host} failed: {exc}")
    finally:
        host.close()
    return None


def _manual_stop(name: str, why: str) -> str:
    """The warning for a Jupyter that may still run: why, and the exact command that stops it."""
    profile = get_profile(name)
    run_dir = f"${{XDG_STATE_HOME:-$HOME/.local/state}}/colabtunnel/{name}"
    command = f'kill -TERM -- -$(cat "{run_dir}/jupyter.pid") && rm -rf "{run_dir}"'
    if profile.is_local:
        return f"{why}; Jupyter for {name} may still run here. Stop it with: {command}"
    return f"{why}; Jupyter for {name} may still run there. Stop it with: {ssh_command(profile, command)}"


def ssh_command(profile: Profile, command: str) -> str:
    """`ssh ... 'command'` that reaches the profile's host the way colabtunnel does (its user,
    port, key and jump hosts; ssh_config supplies the rest, as it does for colabtunnel)."""
    argv = ["ssh"]
    if profile.port:
        argv += ["-p", str(profile.port)]
    if profile.identity_file:
        argv += ["-i", profile.identity_file]
    if profile.jump:
        argv += ["-J", profile.jump]
    argv.append(f"{profile.user}@{profile.host}" if profile.user else profile.host)
    return " ".join([*(shlex.quote(a) for a in argv), shlex.quote(command)])
