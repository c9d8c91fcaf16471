"""Signals reaching a serving keeper end its loop; they never interrupt the code it is running.

paramiko acquires some locks a few bytecodes before the `try` that releases them. A signal handler
that raised would, landing there, leave the lock held, and the keeper's clean-up (the STOP script
rides the same transport) would then wait on it forever. That window cannot be hit on demand in a
real transport, so the tunnel here is a stand-in that holds a lock the same way, without try/finally,
while the signal arrives; the keeper code, the signals and the state record are real.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from colabtunnel.keeper import process as keeper
from colabtunnel.keeper import state


class LockWindowTunnel:
    """serve(): take the lock, let the signal arrive, release it (no try/finally, like the window
    in paramiko), then wait for `stop`. close(): needs the lock, as the STOP script needs paramiko's."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.lock = threading.Lock()
        self.closed_with: bool | None = None
        self.got_lock_in_close = False

    def serve(self, stop: threading.Event, on_health: Callable[[object], None]) -> None:
        self.lock.acquire()
        os.kill(os.getpid(), self.signum)
        time.sleep(0.2)  # the handler runs in here, between two bytecodes of this frame
        self.lock.release()
        assert stop.wait(5), "the signal did not ask the loop to stop"

    def close(self, stop_remote: bool) -> bool:
        self.got_lock_in_close = self.lock.acquire(timeout=2)
        if self.got_lock_in_close:
            self.lock.release()
        self.closed_with = stop_remote
        return True


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def record() -> state.Record:
    rec = state.Record("gpu", os.getpid(), 0.0, "me@gpu:22", 8888, 9999, "t" * 43, "notebook7")
    state.write(rec)
    return rec


@pytest.mark.parametrize(
    ("signum", "stops_remote"), [(signal.SIGTERM, True), (signal.SIGUSR1, False)]
)
def test_a_signal_while_serving_ends_the_loop_and_the_clean_up_runs(
    restore_handlers: None, signum: int, stops_remote: bool
) -> None:
    tunnel = LockWindowTunnel(signum)
    assert keeper._serve(tunnel, record()) == 0  # type: ignore[arg-type]
    assert tunnel.got_lock_in_close, "the signal interrupted the lock's holder: clean-up would hang"
    assert tunnel.closed_with is stops_remote  # TERM stops Jupyter; USR1 hands it over
    assert state.read("gpu") is None


class StartUpLockWindowTunnel:
    """open(): take a lock, let the signal arrive, release it (no try/finally, as in paramiko),
    then run until cancelled. abandon_on_failure(): needs the lock, as the STOP script needs
    paramiko's."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.lock = threading.Lock()
        self.cancelled = threading.Event()
        self.got_lock_in_clean_up: bool | None = None

    def open(self) -> None:
        self.lock.acquire()
        os.kill(os.getpid(), self.signum)
        time.sleep(0.2)  # a handler that raised would run in here, between two bytecodes
        self.lock.release()
        assert self.cancelled.wait(5), "the signal did not cancel the start-up"
        raise RuntimeError("cancelled")

    def cancel(self) -> bool:
        self.cancelled.set()
        return True  # it reached the host: the clean-up must run

    def abandon_on_failure(self) -> None:
        self.got_lock_in_clean_up = self.lock.acquire(timeout=2)
        if self.got_lock_in_clean_up:
            self.lock.release()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_never_lands_inside_it_and_the_clean_up_runs(
    restore_handlers: None, signum: int
) -> None:
    from colabtunnel.keeper import startup

    saved = signal.getsignal(signal.SIGINT)
    tunnel = StartUpLockWindowTunnel(signum)
    try:
        with pytest.raises(startup.Interrupted):
            startup.open_tunnel(tunnel, (signal.SIGINT, signal.SIGTERM))  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGINT, saved)
    assert tunnel.got_lock_in_clean_up, "the signal interrupted the lock's holder: clean-up hangs"
