"""`colabtunnel logs PROFILE [-f] [-n N]`: the remote Jupyter's log, tokens masked."""

from __future__ import annotations

from collections.abc import Callable

from colabtunnel import jupyter
from colabtunnel.credentials import Credentials, Prompter
from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import get_profile
from colabtunnel.tunnel import Reporter, Tunnel, UpOptions


def logs(
    name: str,
    lines: int,
    follow: bool,
    sink: Callable[[str], None],
    reporter: Reporter,
    prompter: Prompter | None = None,
) -> None:
    _know_the_token(name)
    creds = Credentials(name, prompter=prompter)
    tunnel = Tunnel(get_profile(name), UpOptions(probe=False), reporter, creds)
    try:
        host = tunnel.connect_host()
        if jupyter.stream_log(host, tunnel.profile, lines, follow, sink) == 3:
            raise ColabtunnelError(
                f"no Jupyter log for {name!r} on {host.name}",
                hint=f"it appears once `colabtunnel up {name}` has started Jupyter",
            )
    finally:
        tunnel.close(stop_remote=False)


def _know_the_token(name: str) -> None:
    """mask() hides `token=...` by pattern; a bare token (a kernel that printed its environment
    into Jupyter's log) only if it is known: take it from the tunnel's state record."""
    from colabtunnel import redact, state

    record = state.read(name)
    if record is not None:
        redact.register(record.token)
