"""`colabtunnel up PROFILE`: bring the tunnel up (or find it up) and return its record."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Any

from colabtunnel import keeper, state
from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import get_profile, with_overrides
from colabtunnel.tunnel import Reporter, Tunnel, UpOptions

LOCK_MARGIN_S = 60.0


@dataclass(frozen=True)
class UpResult:
    record: state.Record
    reused: bool  # a keeper already held this tunnel: nothing was started


def up(
    name: str,
    reporter: Reporter,
    *,
    accept_new: bool = False,
    timeout: float = 120.0,
    local_port: int | None = None,
    remote_port: int | None = None,
) -> UpResult:
    overrides: dict[str, Any] = {"local_port": local_port, "remote_port": remote_port}
    get_profile(name)  # fail on configuration now, before anything starts
    with state.lock(name, timeout + LOCK_MARGIN_S):
        previous = state.read(name)
        running = state.live(name)
        if running is not None:
            return UpResult(running, reused=True)
        options = UpOptions(
            accept_new=accept_new,
            timeout=timeout,
            prefer_local_port=previous.local_port if previous else None,
        )
        record = keeper.spawn(name, overrides, options, reporter)
        return UpResult(record, reused=False)


def up_foreground(
    name: str,
    reporter: Reporter,
    on_ready: Any,
    *,
    accept_new: bool = False,
    timeout: float = 120.0,
    local_port: int | None = None,
    remote_port: int | None = None,
) -> bool:
    """Run the tunnel in this process until Ctrl-C or SIGTERM; tear both ends down. True if it ran."""
    profile = with_overrides(get_profile(name), local_port=local_port, remote_port=remote_port)
    with state.lock(name, timeout + LOCK_MARGIN_S):
        previous = state.read(name)
        if state.live(name) is not None:
            raise ColabtunnelError(
                f"{name!r} is already up in the background",
                hint=f"run `colabtunnel down {name}` first, or use it as it is",
            )
        options = UpOptions(
            accept_new=accept_new,
            timeout=timeout,
            prefer_local_port=previous.local_port if previous else None,
        )
        tunnel = Tunnel(profile, options, reporter)
        restore = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            try:
                tunnel.open()
            except BaseException:
                tunnel.abandon_on_failure()
                raise
            record = tunnel.record(_pid(), foreground=True)
            state.write(record)
        except BaseException:
            signal.signal(signal.SIGTERM, restore)
            raise
    try:
        on_ready(record)
        tunnel.serve(threading.Event(), lambda health: _update(record, health))
    except KeyboardInterrupt:
        reporter.step("stopping: closing the tunnel and the remote Jupyter")
    finally:
        tunnel.close(stop_remote=True)
        state.remove(name)
        signal.signal(signal.SIGTERM, restore)
    return True


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _update(record: state.Record, health: str) -> None:
    record.health = health
    state.write(record)


def _pid() -> int:
    import os

    return os.getpid()
