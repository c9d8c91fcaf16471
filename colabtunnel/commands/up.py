"""`colabtunnel up PROFILE`: bring the tunnel up (or find it up) and return its record."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from colabtunnel import durations
from colabtunnel.errors import EXIT_INTERRUPTED, ColabtunnelError, ConfigError
from colabtunnel.keeper import state
from colabtunnel.keeper.state import HANDED_OVER
from colabtunnel.profiles import get_profile, with_overrides

# The tunnel's machinery is imported where a tunnel is started: `up` on a tunnel that is up
# answers from the state record alone, and fast (issue 14: 0.15 s).
if TYPE_CHECKING:
    from colabtunnel.keeper.tunnel import Reporter, Tunnel, UpOptions
    from colabtunnel.output import Prompter

LOCK_MARGIN_S = 60.0


@dataclass(frozen=True)
class UpRequest:
    name: str
    accept_new: bool = False
    timeout: float = 120.0
    local_port: int | None = None
    remote_port: int | None = None
    idle_timeout: str | None = None  # as typed; checked like the profile key

    def check(self) -> None:
        for flag, value in (("--local-port", self.local_port), ("--remote-port", self.remote_port)):
            if value is not None and not 1 <= value <= 65535:
                raise ConfigError(
                    f"{flag} {value} is out of range", hint=f"a port is 1..65535, e.g. {flag} 8888"
                )

    def options(self, previous: state.Record | None) -> UpOptions:
        from colabtunnel.keeper.tunnel import UpOptions

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
    # fail on configuration now, before anything starts (a bad --idle-timeout too)
    with_overrides(get_profile(name), idle_timeout=request.idle_timeout)
    # SIGTERM is handled like Ctrl-C (this process runs no paramiko: the keeper does).
    with _sigterm_as_interrupt(), state.lock(name, request.timeout + LOCK_MARGIN_S):
        previous = state.read(name)
        running = state.live(name)
        if running is not None and state.reusable(running):
            return UpResult(running, reused=True)
        _say_if_it_ended(name, reporter)
        from colabtunnel.keeper import process as keeper

        if running is not None and running.health in HANDED_OVER:
            # Its keeper cannot log in again by itself (a one-time code; a host key that changed
            # and may have been trusted again since): hand the tunnel to a new keeper that tries
            # here. The remote Jupyter, its token and the local port stay.
            reporter.step(f"the tunnel needs a new login ({running.health})")
            keeper.release(running)
        elif running is not None:
            reporter.note(
                "Jupyter on the host had died (out of memory? exit()?): starting a new one. "
                "The URL (token) changes; paste the new one into Colab. Kernel state was lost."
            )
            keeper.stop(running)
        overrides = {
            "local_port": request.local_port,
            "remote_port": request.remote_port,
            "idle_timeout": request.idle_timeout,
        }
        record = keeper.spawn(name, overrides, request.options(previous), reporter, prompter)
        return UpResult(record, reused=False)


def _say_if_it_ended(name: str, reporter: Reporter) -> None:
    from colabtunnel.keeper import ended

    note = ended.take(name)
    if note is not None:
        reporter.note(
            f"the last Jupyter of {name} {note.text()} (idle_timeout): starting a new one. "
            "The URL (token) changes; paste the new one into Colab."
        )


def up_foreground(
    request: UpRequest,
    reporter: Reporter,
    prompter: Prompter | None,
    on_ready: Callable[[state.Record], None],
) -> None:
    """Run the tunnel in this process until Ctrl-C or SIGTERM, then tear both ends down."""
    from colabtunnel.keeper import process as keeper
    from colabtunnel.keeper import startup
    from colabtunnel.keeper.tunnel import Tunnel
    from colabtunnel.logs import setup_file_logging
    from colabtunnel.output import confirm
    from colabtunnel.ssh.credentials import Credentials

    name = request.name
    request.check()
    profile = with_overrides(
        get_profile(name),
        local_port=request.local_port,
        remote_port=request.remote_port,
        idle_timeout=request.idle_timeout,
    )
    # As the keeper does: the log file gets the warnings, the terminal only progress and notes
    # (unlogged, they went raw to stderr, paramiko's tracebacks included).
    setup_file_logging(name)
    creds = Credentials(name, prompter=prompter)
    with _sigterm_as_interrupt(), state.lock(name, request.timeout + LOCK_MARGIN_S):
        previous = state.read(name)
        if state.live(name) is not None:
            raise ColabtunnelError(
                f"{name!r} is already up in the background",
                hint=f"run `colabtunnel down {name}` first, or use it as it is",
            )
        _say_if_it_ended(name, reporter)
        tunnel = Tunnel(profile, request.options(previous), reporter, creds)
        try:
            try:
                startup.open_tunnel(tunnel, keeper.INTERRUPTS, note=startup.CLEANUP_NOTE)
            finally:
                leftover = tunnel.leftover_record(os.getpid())
                if leftover is not None:
                    state.write(leftover)  # a job that could not be cancelled: `down` retries
        except startup.Interrupted as exc:
            if exc.worker_busy:
                reporter.note("interrupted")
                startup.leave_now(EXIT_INTERRUPTED)
            raise KeyboardInterrupt from None
        try:
            creds.offer_to_save(lambda question: confirm(prompter, question))
            record = tunnel.record(os.getpid(), foreground=True)
            state.write(record)
        except BaseException:
            with startup.patient(keeper.INTERRUPTS):
                tunnel.abandon_on_failure()
            raise
    _serve_foreground(tunnel, record, reporter, on_ready)


def _serve_foreground(
    tunnel: Tunnel,
    record: state.Record,
    reporter: Reporter,
    on_ready: Callable[[state.Record], None],
) -> None:
    from colabtunnel.keeper import control as keeper_control
    from colabtunnel.keeper import process as keeper
    from colabtunnel.keeper import startup

    # While serving, Ctrl-C and SIGTERM only end the serve loop: raised as KeyboardInterrupt they
    # could land inside paramiko between a lock's acquire() and its try, and the clean-up (the STOP
    # script goes over the same transport) would wait on that lock forever. Later ones only say
    # that the clean-up is still running: cutting it short would leave Jupyter on the host.
    with startup.Signals(keeper.INTERRUPTS, startup.CLEANUP_NOTE) as signals:
        try:
            on_ready(record)
            handlers = {
                **keeper_control.tunnel_handlers(tunnel),
                **keeper.ending_orders(signals, release=False),  # `down` asks it to stop
            }
            with keeper_control.serving(record.profile, handlers):
                tunnel.serve(
                    signals.stop,
                    lambda h: record.set_health(h.state, h.attempt, h.retry_at, h.detail),
                )
            if record.health == "ended" and tunnel.profile.idle_timeout:
                idle = durations.short_duration(tunnel.profile.idle_timeout)
                reporter.note(
                    f"Jupyter ended itself after {idle} with nothing to do (idle_timeout); its GPUs "
                    f"are free. `colabtunnel up {record.profile}` starts a new one."
                )
            else:
                reporter.step("stopping: closing the tunnel and the remote Jupyter")
        finally:
            stopped = tunnel.close(stop_remote=True)
            if stopped is None:
                # Jupyter may still run there: the record stays for `down`, which tries again
                record.set_health("stop-failed", detail=UNREACHED)
            else:
                state.remove(record.profile)
    if stopped is None:
        from colabtunnel.keeper import manual_stop

        name = record.profile
        raise ColabtunnelError(
            f"{UNREACHED}; Jupyter for {name} may still run on {record.host}",
            hint=f"stop it with: {manual_stop.command(name)} (or `colabtunnel down {name}` "
            "once the host answers again)",
        )


UNREACHED = "the host could not be reached to stop Jupyter"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    restore = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, restore)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
