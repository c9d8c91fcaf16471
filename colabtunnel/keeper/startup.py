"""Opening a tunnel so that Ctrl-C or SIGTERM at any step leaves nothing behind on either side.

tunnel.open() runs on a worker thread while the main thread, the one where Python runs signal
handlers, only waits. A handler therefore never runs inside paramiko: raised there, an exception
can land between a lock's acquire() and its `try`, leave the lock held, and the clean-up, which
talks to the host over the same transport, would wait on it forever. The handlers here only note
the signal; the main thread sees it within POLL_S, cancels the start-up (Tunnel.cancel: a Jupyter
being launched is stopped at once, the probe's connections are cut, no further step starts),
waits for the step in flight and undoes what reached the host. Further signals during that
clean-up only say that it is still running: cutting it short is what would leave things behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from colabtunnel.keeper.tunnel import Opened, Tunnel

POLL_S = 0.1
# How long the clean-up waits for the start-up's step in flight (a login, a host script whose
# Jupyter cancel() stopped, the probe) before it goes ahead on its own.
STEP_WAIT_S = 90.0
CLEANUP_NOTE = "still cleaning up (stopping what was started on the host); please wait"


class Interrupted(Exception):
    """A signal ended the start-up; what it had started on the host is undone."""

    def __init__(self, signum: int, worker_busy: bool) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        # The start-up thread is still inside a step that cannot be cut short (a TCP connect or
        # login, a question on the terminal); nothing of it reached the host.
        self.worker_busy = worker_busy


class Signals:
    """While entered, `signums` only record themselves and set `stop`; the `quiet_for` first
    ones are silent, later ones print `note` (if any) with a single write(2), which is safe in a
    handler where print() is not. An order over the control channel (`order()`: "stop",
    "release") ends the same way, on every platform; `first` is what came first."""

    def __init__(
        self, signums: tuple[int, ...], note: str | None = None, quiet_for: int = 1
    ) -> None:
        self.signums = signums
        self.note = (f"! {note}\n".encode()) if note else None
        self.quiet_for = quiet_for
        self.received: list[int] = []
        self.first: int | str | None = None  # the first signal number or order
        self.stop = threading.Event()
        self._saved: dict[int, object] = {}

    def __enter__(self) -> Signals:
        for signum in self.signums:
            self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]  # what getsignal returned

    def order(self, name: str) -> None:
        """What a signal would ask, asked over the control channel (from another thread)."""
        if self.first is None:
            self.first = name
        self.stop.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.first is None:
            self.first = signum
        self.stop.set()
        if len(self.received) > self.quiet_for and self.note:
            with contextlib.suppress(OSError):
                os.write(2, self.note)


def open_tunnel(tunnel: Tunnel, signums: tuple[int, ...], note: str | None = None) -> Opened:
    """tunnel.open(), interruptible by `signums` at every step. On failure or interruption what
    the attempt made on the host is removed before this raises (Interrupted for a signal)."""
    outcome: list[Opened | BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append(tunnel.open())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            done.set()

    terminal = _terminal_state()
    with Signals(signums, note) as signals:
        worker = threading.Thread(target=work, name="start-up", daemon=True)
        worker.start()
        while not done.wait(POLL_S) and not signals.received:
            pass
        if signals.received:
            if tunnel.cancel():
                worker.join(STEP_WAIT_S)
                tunnel.abandon_on_failure()
            else:
                threading.Thread(
                    target=_close_when_done, args=(tunnel, worker), daemon=True
                ).start()
            _restore_terminal(terminal)
            raise Interrupted(signals.received[0], worker_busy=worker.is_alive())
        result = outcome[0]
        if isinstance(result, BaseException):
            tunnel.abandon_on_failure()
            raise result
        return result


def _close_when_done(tunnel: Tunnel, worker: threading.Thread) -> None:
    """A start-up cancelled before it reached the host: drop its connection once it has one."""
    worker.join()
    tunnel.close(stop_remote=False)


@contextlib.contextmanager
def patient(signums: tuple[int, ...], note: str | None = CLEANUP_NOTE) -> Iterator[Signals]:
    """A clean-up that signals must not cut short."""
    with Signals(signums, note, quiet_for=0) as signals:
        yield signals


def _terminal_state() -> list[Any] | None:
    """The terminal's modes, if stdin is one: a password prompt (echo off) on the start-up thread
    may be abandoned by an interrupt."""
    if sys.platform == "win32":
        return None  # the console restores its own echo when the prompt's read ends
    try:
        import termios

        return termios.tcgetattr(sys.stdin.fileno()) if sys.stdin.isatty() else None
    except (ImportError, OSError, ValueError):
        return None


def _restore_terminal(saved: list[Any] | None) -> None:
    if saved is None or sys.platform == "win32":
        return
    with contextlib.suppress(ImportError, OSError, ValueError):
        import termios

        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def leave_now(code: int) -> None:
    """Exit at once, past interpreter shutdown: the start-up thread may still sit in a blocking
    read of stdin (a question), which would make a normal shutdown abort."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
