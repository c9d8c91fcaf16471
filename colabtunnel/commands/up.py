"""`colabtunnel up PROFILE`: bring the tunnel up (or find it up) and return its record."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from colabtunnel import keeper, keeper_control, state
from colabtunnel.credentials import Credentials, Prompter
from colabtunnel.errors import ColabtunnelError, ConfigError
from colabtunnel.output import confirm
from colabtunnel.profiles import get_profile, with_overrides
from colabtunnel.tunnel import Reporter, Tunnel, UpOptions

LOCK_MARGIN_S = 60.0


@dataclass(frozen=True)
class UpRequest:
    name: str
    accept_new: bool = False
    timeout: float = 120.0
    local_port: int | None = None
    remote_port: int | None = None

    def check(self) -> None:
        for flag, value in (("--local-port", self.local_port), ("--remote-port", self.remote_port)):
            if value is not None and not 1 <= value <= 65535:
                raise ConfigError(
                    f"{flag} {value} is out of range", hint=f"a port is 1..65535, e.g. {flag} 8888"
                )

    def options(self, previous: state.Record | None) -> UpOptions:
        return UpOptions(
            accept_new=self.accept_new,
            timeout=self.timeout,
            prefer_local_port=previous.local_port if previous else None,
        )


@dataclass(frozen=True)
class UpResult:
    record: state.Record
    reused: bool  # a keeper already held this tunnel: nothing was started


def up(request: UpRequest, reporter: Reporter, prompter: Prompter | None) -> UpResult:
    name = request.name
    request.check()
    get_profile(name)  # fail on configuration now, before anything starts
    with state.lock(name, request.timeout + LOCK_MARGIN_S):
        previous = state.read(name)
        running = state.live(name)
        if running is not None and running.health not in ("needs-login", "remote-dead"):
            return UpResult(running, reused=True)
        if running is not None and running.health == "needs-login":
            # Its keeper cannot log in again by itself (a one-time code): hand the tunnel to a new
            # keeper that asks here. The remote Jupyter, its token and the local port stay.
            reporter.step("the tunnel needs a new login")
            keeper.release(running)
        elif running is not None:
            reporter.note(
                "Jupyter on the host had died (out of memory? exit()?): starting a new one. "
                "The URL (token) changes; paste the new one into Colab. Kernel state was lost."
            )
            keeper.stop(running)
        overrides = {"local_port": request.local_port, "remote_port": request.remote_port}
        record = keeper.spawn(name, overrides, request.options(previous), reporter, prompter)
        return UpResult(record, reused=False)


def up_foreground(
    request: UpRequest,
    reporter: Reporter,
    prompter: Prompter | None,
    on_ready: Callable[[state.Record], None],
) -> None:
    """Run the tunnel in this process until Ctrl-C or SIGTERM, then tear both ends down."""
    name = request.name
    request.check()
    profile = with_overrides(
        get_profile(name), local_port=request.local_port, remote_port=request.remote_port
    )
    creds = Credentials(name, prompter=prompter)
    with state.lock(name, request.timeout + LOCK_MARGIN_S):
        previous = state.read(name)
        if state.live(name) is not None:
            raise ColabtunnelError(
                f"{name!r} is already up in the background",
                hint=f"run `colabtunnel down {name}` first, or use it as it is",
            )
        tunnel = Tunnel(profile, request.options(previous), reporter, creds)
        restore = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            try:
                tunnel.open()
            except BaseException:
                tunnel.abandon_on_failure()
                raise
            creds.offer_to_save(lambda question: confirm(prompter, question))
            record = tunnel.record(os.getpid(), foreground=True)
            state.write(record)
        except BaseException:
            signal.signal(signal.SIGTERM, restore)
            raise
    # While serving, Ctrl-C and SIGTERM only end the serve loop: raised as KeyboardInterrupt they
    # could land inside paramiko between a lock's acquire() and its try, and the clean-up (the STOP
    # script goes over the same transport) would wait on that lock forever. A second Ctrl-C raises.
    stop = threading.Event()

    def ask_to_stop(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    restore_int = signal.signal(signal.SIGINT, ask_to_stop)
    signal.signal(signal.SIGTERM, ask_to_stop)
    try:
        on_ready(record)
        with keeper_control.serving(name, keeper_control.tunnel_handlers(tunnel)):
            tunnel.serve(stop, lambda h: record.set_health(h.state, h.attempt, h.retry_at))
        reporter.step("stopping: closing the tunnel and the remote Jupyter")
    finally:
        tunnel.close(stop_remote=True)
        state.remove(name)
        signal.signal(signal.SIGTERM, restore)
        signal.signal(signal.SIGINT, restore_int)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
