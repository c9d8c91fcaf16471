"""Tunnels whose Jupyter ended itself (idle_timeout): a note per profile, written by its keeper
as it exits, so `status` can say `ended: idle for 2h` after the keeper is gone, and the next `up`
can say the URL changed. The note holds no token; `up` and `down` remove it.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from colabtunnel import durations, paths


@dataclass(frozen=True)
class Ended:
    profile: str
    why: str  # "idle": Jupyter had nothing to do for idle_timeout seconds
    idle_timeout: int
    host: str
    launcher: str
    at: float = field(default_factory=time.time)

    def text(self) -> str:
        return f"ended: {self.why} for {durations.short_duration(self.idle_timeout)}"


def _directory() -> Path:
    return paths.state_dir() / "ended"


def _path(profile: str) -> Path:
    return _directory() / f"{profile}.json"


def write(note: Ended) -> None:
    paths.private_dir(_directory())
    paths.write_private(_path(note.profile), json.dumps(asdict(note)))


def read(profile: str) -> Ended | None:
    try:
        data = json.loads(_path(profile).read_text(encoding="utf-8"))
        return Ended(**data)
    except (OSError, ValueError, TypeError):
        return None


def take(profile: str) -> Ended | None:
    """The note, removed: `up` and `down` read it once."""
    note = read(profile)
    with contextlib.suppress(OSError):
        _path(profile).unlink()
    return note


def all_notes() -> list[Ended]:
    directory = _directory()
    if not directory.is_dir():
        return []
    notes = (read(p.stem) for p in sorted(directory.glob("*.json")))
    return [n for n in notes if n is not None]
