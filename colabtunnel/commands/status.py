"""`colabtunnel status [PROFILE]`: the live tunnels. Stale records are cleaned on the way."""

from __future__ import annotations

from colabtunnel import state


def status(name: str | None = None) -> list[state.Record]:
    names = [name] if name else [record.profile for record in state.all_records()]
    records = (state.live(n) for n in names)
    return [r for r in records if r is not None]
