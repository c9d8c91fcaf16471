"""`colabtunnel url PROFILE`: only the URL, for scripts and clipboards."""

from __future__ import annotations

from colabtunnel.errors import ColabtunnelError
from colabtunnel.keeper import state


def url(name: str) -> str:
    record = state.live(name)
    if record is None:
        raise ColabtunnelError(f"{name!r} is not up", hint=f"run `colabtunnel up {name}`")
    return record.url
