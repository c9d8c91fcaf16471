"""Per-profile state records: who holds the tunnel, where, and the token (so: mode 0600).

A record is JSON with a schema version, written atomically (temp file, then os.replace). A per-profile
lock serialises `up`/`down` of one profile. A record whose keeper is gone (or whose PID now belongs to
another process) is stale, and is removed by whoever finds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from colabtunnel import paths
from colabtunnel.errors import ColabtunnelError

log = logging.getLogger("colabtunnel")

# 2: which launcher started the tunnel, and its handle (schema 1 records are direct ones).
SCHEMA_VERSION = 2
SECRET_HANDLE_KEYS = frozenset({"keys"})


@dataclass
class Record:
    profile: str
    keeper_pid: int
    keeper_started: float  # the keeper's process create time: PID identity, not just existence
    host: str  # what the user calls it: "alice@gpu.example.org:22" or "local"
    local_port: int
    remote_port: int
    token: str
    flavour: str
    started_at: float = field(default_factory=time.time)
    # ok | reconnecting | needs-login | remote-dead | host-key-changed | stop-failed
    health: str = "ok"
    attempt: int = 0  # reconnect attempts so far, while reconnecting
    retry_at: float = 0.0  # when the next attempt is due (epoch seconds); 0 while one runs
    detail: str = ""  # what an attempt waits for, why it failed, the new host key, ...
    foreground: bool = False
    schema_version: int = SCHEMA_VERSION
    gpu_report: dict[str, Any] = field(default_factory=dict)  # the host's GPUs at `up` (gpus.py)
    launcher: str = "direct"  # launchers/: what started Jupyter, and so what stops it
    handle: dict[str, Any] = field(default_factory=dict)  # the launcher's own: pid, job, node

    def set_health(
        self, health: str, attempt: int = 0, retry_at: float = 0.0, detail: str = ""
    ) -> None:
        """Record the keeper's view of the tunnel and write it for `status`."""
        self.health, self.attempt, self.retry_at, self.detail = health, attempt, retry_at, detail
        write(self)

    def health_text(self) -> str:
        text = self.health
        if self.health in ("reconnecting", "needs-login") and self.attempt:
            wait = max(0.0, self.retry_at - time.time())
            when = f"next in {wait:.0f} s" if self.retry_at else "trying now"
            text = f"{self.health} (attempt {self.attempt}, {when})"
        return f"{text}: {self.detail}" if self.detail else text

    @property
    def url(self) -> str:
        return build_url(self.local_port, self.token)

    def public(self) -> dict[str, Any]:
        """What status/--json shows. The token appears only inside the URL the user asked for."""
        data = asdict(self)
        data.pop("token")
        # the launcher's handle may hold this session's private key (slurm's srun bridge)
        data["handle"] = {k: v for k, v in self.handle.items() if k not in SECRET_HANDLE_KEYS}
        data["gpus"] = data.pop("gpu_report").get("devices", [])
        data["url"] = self.url
        data["uptime_s"] = round(time.time() - self.started_at, 1)
        return data


def build_url(local_port: int, token: str) -> str:
    # The root, always: Colab treats any path (/tree, /lab) as the API base and gets 404/405.
    return f"http://localhost:{local_port}/?token={token}"


def _record_path(profile: str) -> Path:
    return paths.state_dir() / f"{profile}.json"


def _ensure_dir() -> Path:
    try:
        return paths.private_dir(paths.state_dir())
    except OSError as exc:
        raise ColabtunnelError(
            f"cannot create the state directory {paths.state_dir()}: {exc.strerror}",
            hint="set COLABTUNNEL_HOME to a writable directory",
        ) from exc


def write(record: Record) -> None:
    _ensure_dir()
    paths.write_private(_record_path(record.profile), json.dumps(asdict(record), indent=2))


def read(profile: str) -> Record | None:
    """The record, or None when absent or unreadable (a corrupted record counts as stale)."""
    path = _record_path(profile)
    try:
        return _from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.info("state record %s is unreadable (%s); treating it as stale", path, exc)
        remove(profile)
        return None


_TYPES: dict[str, tuple[type, ...]] = {
    "profile": (str,),
    "keeper_pid": (int,),
    "keeper_started": (int, float),
    "host": (str,),
    "local_port": (int,),
    "remote_port": (int,),
    "token": (str,),
    "flavour": (str,),
    "started_at": (int, float),
    "health": (str,),
    "attempt": (int,),
    "retry_at": (int, float),
    "detail": (str,),
    "foreground": (bool,),
    "schema_version": (int,),
    "gpu_report": (dict,),
    "launcher": (str,),
    "handle": (dict,),
}


def _from_json(data: object) -> Record:
    """A Record from parsed JSON; anything malformed raises TypeError (the record is stale)."""
    if not isinstance(data, dict):
        raise TypeError(f"a record must be a JSON object, not {type(data).__name__}")
    values = {k: v for k, v in data.items() if k in _TYPES}
    values["schema_version"] = SCHEMA_VERSION  # an older record is read as this one's defaults
    for key, value in values.items():
        if not isinstance(value, _TYPES[key]) or (
            isinstance(value, bool) and bool not in _TYPES[key]
        ):
            raise TypeError(f"{key} has the wrong type")
    return Record(**values)


def remove(profile: str) -> None:
    path = _record_path(profile)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)
    except OSError as exc:
        raise ColabtunnelError(
            f"cannot remove the state record {path}: {exc.strerror}",
            hint="remove it by hand; it only holds this tunnel's port and token",
        ) from exc


def all_records() -> list[Record]:
    directory = paths.state_dir()
    if not directory.is_dir():
        return []
    records = (read(p.stem) for p in sorted(directory.glob("*.json")))
    return [r for r in records if r is not None]


def process_identity(pid: int) -> float | None:
    """The create time of `pid`, or None if no such process (a zombie counts as gone)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def keeper_alive(record: Record) -> bool:
    started = process_identity(record.keeper_pid)
    return started is not None and abs(started - record.keeper_started) < 1.0


# A keeper in these states cannot get back in by itself; a new `up` hands the tunnel to a new one.
HANDED_OVER = ("needs-login", "host-key-changed")


def reusable(record: Record) -> bool:
    """`up` for a profile whose live keeper holds this record hands out the same URL."""
    return record.health not in (*HANDED_OVER, "remote-dead")


def peek(profile: str) -> Record | None:
    """The record if its keeper is alive, read without cleaning anything up (no lock held)."""
    try:
        record = _from_json(json.loads(_record_path(profile).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return record if keeper_alive(record) else None


def live(profile: str) -> Record | None:
    """The record if its keeper is alive; a stale one is removed and None returned."""
    record = read(profile)
    if record is None:
        return None
    if keeper_alive(record):
        return record
    log.info("removing stale state for %s (keeper %d is gone)", profile, record.keeper_pid)
    remove(profile)
    return None


@contextlib.contextmanager
def lock(profile: str, timeout: float) -> Iterator[None]:
    """Hold the per-profile lock (blocking up to `timeout` s) so two `up`s cannot race."""
    directory = _ensure_dir()
    fd = os.open(directory / f"{profile}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, timeout, profile)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock on every platform


def _acquire(fd: int, timeout: float, profile: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise ColabtunnelError(
                    f"another colabtunnel command holds the lock for {profile!r}",
                    hint="wait for it to finish, or run `colabtunnel status`",
                ) from None
            time.sleep(0.1)
