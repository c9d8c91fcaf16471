"""`colabtunnel logs PROFILE [-f] [-n N]`: the remote Jupyter's log, tokens masked."""

from __future__ import annotations

from collections.abc import Callable

from colabtunnel import launchers, redact
from colabtunnel.errors import ColabtunnelError
from colabtunnel.keeper import state
from colabtunnel.keeper.tunnel import Reporter, local_jupyter
from colabtunnel.output import Prompter
from colabtunnel.profiles import get_profile
from colabtunnel.ssh import hosts
from colabtunnel.ssh.credentials import Credentials


def logs(
    name: str,
    lines: int,
    follow: bool,
    sink: Callable[[str], None],
    reporter: Reporter,
    prompter: Prompter | None = None,
) -> None:
    profile = get_profile(name)
    record = state.read(name)
    if record is not None:  # mask() knows `token=...`; a bare token only once registered
        redact.register(record.token)
    launcher = launchers.for_record(record, profile)
    creds = Credentials(name, prompter=prompter)
    profile = local_jupyter(profile) if profile.is_local else profile
    with hosts.connected(profile, reporter, creds) as host:
        if launcher.logs(host, profile, lines, follow, sink) == 3:
            raise ColabtunnelError(
                f"no Jupyter log for {name!r} on {host.name}",
                hint=f"it appears once `colabtunnel up {name}` has started Jupyter",
            )
