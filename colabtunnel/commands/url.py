"""`colabtunnel url PROFILE`: only the URL, for scripts and clipboards."""

from __future__ import annotations

from colabtunnel import state
from colabtunnel.errors import ColabtunnelError


def url(name: str) -> str:
    record = state.live(name)
    if record is None:
        raise ColabtunnelError(f"{name!r} is not up", hint=f"run `colabtunnel up {name}`")
    return record.url
