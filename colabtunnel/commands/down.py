"""`colabtunnel down [PROFILE...]`: stop keepers and remote Jupyters; no name = every tunnel."""

from __future__ import annotations

from dataclasses import dataclass

from colabtunnel import launchers
from colabtunnel.errors import ColabtunnelError
from colabtunnel.keeper import ended, manual_stop, state
from colabtunnel.keeper import process as keeper
from colabtunnel.keeper.tunnel import Reporter
from colabtunnel.output import Prompter
from colabtunnel.profiles import get_profile
from colabtunnel.ssh import hosts
from colabtunnel.ssh.credentials import Credentials

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
    for note in ended.all_notes() if not names else []:
        ended.take(note.profile)  # `down` with no name forgets every idle end too
    return [_down_one(name, reporter, prompter) for name in targets]


def _down_one(name: str, reporter: Reporter, prompter: Prompter | None) -> DownResult:
    with state.lock(name, KEEPER_EXIT_S * 2):
        ended.take(name)  # nothing of it runs: its Jupyter ended itself
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
                    return DownResult(name, was_up=True, warning=manual_stop.advice(name, why))
                return DownResult(name, was_up=True)
        # The keeper is gone (or would not die): stop the remote Jupyter ourselves.
        warning = _stop_remote_directly(record, reporter, prompter)
        state.remove(name)
        return DownResult(name, was_up=True, warning=warning)


def _stop_remote_directly(
    record: state.Record, reporter: Reporter, prompter: Prompter | None
) -> str | None:
    from colabtunnel.ssh.hostkeys import ChangedHostKey

    name = record.profile
    profile = get_profile(name)
    reporter.step(f"stopping Jupyter for {name} (its keeper is gone)")
    launcher = launchers.for_record(record, profile)
    try:
        host = hosts.connect(profile, reporter, Credentials(name, prompter))
    except ChangedHostKey as exc:
        return manual_stop.advice(name, f"colabtunnel refused to log in: {exc.message}")
    except ColabtunnelError as exc:
        return manual_stop.advice(name, f"could not reach {profile.host}: {exc.message}")
    try:
        launcher.stop(host, profile, record.handle)
    except (ColabtunnelError, OSError, EOFError) as exc:
        return manual_stop.advice(name, f"stopping it on {profile.host} failed: {exc}")
    finally:
        host.close()
    return None
