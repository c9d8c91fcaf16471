"""The background keeper: a detached process per profile that owns the SSH connection and listener.

`up` starts it as `python -m colabtunnel.keeper` in a new session, writes its orders (JSON, one line)
to the keeper's stdin and reads progress events (JSON lines) from its stdout until `ready` or
`error`. Orders travel on the pipe, never in argv or the environment, so later secrets can too.
After `ready` the keeper drops the pipe, logs to logs/PROFILE.log (tokens masked) and serves until
SIGTERM, when it stops the remote Jupyter and removes the state record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from colabtunnel import paths
from colabtunnel.errors import EXIT_RUNTIME, ColabtunnelError
from colabtunnel.keeper import control as keeper_control
from colabtunnel.keeper import ended, manual_stop, startup, state
from colabtunnel.keeper import launch as keeper_launch
from colabtunnel.keeper.tunnel import Reporter, Tunnel, UpOptions
from colabtunnel.logs import setup_file_logging
from colabtunnel.output import Prompter, confirm
from colabtunnel.ssh.credentials import Credentials

log = logging.getLogger("colabtunnel")


class Terminated(Exception):
    """SIGTERM (from `down`, or `up` being interrupted) reached the keeper."""


RELEASE_WAIT_S = 30.0
ORDER_TIMEOUT_S = 3.0  # a keeper answers an order at once; a silent one gets the signal
STOP_WAIT_S = 60.0
NOTES_READ_S = 1.0  # Windows: how long `up` reads what an exited keeper left in its pipe
# How long `up` waits for an interrupted keeper to undo its start-up (a silent link costs it
# STOP_PING_S and then CLEANUP_LOGIN_S) before it kills it and says what may still run.
# (The tests shorten it to reach that case without a minute's wait.)
UNDO_WAIT_S = float(os.environ.get("COLABTUNNEL_TEST_UNDO_WAIT_S") or 60.0)
if sys.platform == "win32":  # Ctrl-Break too: the console's other interrupt
    INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGBREAK)
else:
    INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def stop(record: state.Record) -> bool:
    """Ask the keeper to stop (it stops the remote Jupyter): over its control channel, else by
    SIGTERM; wait, KILL if need be. True if it exited having done so; False: the caller must
    stop the remote Jupyter itself."""
    import time

    if not _order(record, "stop"):
        if sys.platform == "win32":
            # os.kill is TerminateProcess there: the keeper ends without its clean-up
            with contextlib.suppress(OSError):
                os.kill(record.keeper_pid, signal.SIGTERM)
            return False
        try:
            os.kill(record.keeper_pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        if not state.keeper_alive(record):
            return True
        time.sleep(0.05)
    if hasattr(signal, "SIGKILL"):
        os.kill(record.keeper_pid, signal.SIGKILL)
    return False


def _order(record: state.Record, name: str) -> bool:
    """Give the keeper an order over its control channel; False if it could not be asked."""
    try:
        answer = keeper_control.ask(
            record.profile, name, timeout=ORDER_TIMEOUT_S, keeper_pid=record.keeper_pid
        )
    except keeper_control.Unavailable as exc:
        log.info("could not ask the keeper of %s to %s: %s", record.profile, name, exc)
        return False
    return bool(answer.get("ok"))


def release(record: state.Record) -> None:
    """Make a live keeper let go of its tunnel without stopping the remote Jupyter."""
    import time

    if not _order(record, "release"):
        if not hasattr(signal, "SIGUSR1"):
            raise ColabtunnelError(
                f"the keeper of {record.profile} cannot be asked to hand its tunnel over",
                hint=f"run `colabtunnel down {record.profile}` and `up` again (kernels restart)",
            )
        os.kill(record.keeper_pid, signal.SIGUSR1)
    deadline = time.monotonic() + RELEASE_WAIT_S
    while state.keeper_alive(record):
        if time.monotonic() > deadline:
            raise ColabtunnelError(
                f"the keeper of {record.profile} (pid {record.keeper_pid}) did not let go",
                hint=f"run `colabtunnel down {record.profile}`",
            )
        time.sleep(0.05)


# -- the parent side ---------------------------------------------------------------------------


def spawn(
    profile: str,
    overrides: dict[str, Any],
    options: UpOptions,
    reporter: Reporter,
    prompter: Prompter | None,
) -> state.Record:
    """Start a keeper for `profile` and relay its progress until it is ready. Return its record."""
    log_file = paths.log_file(profile)
    child = keeper_launch.take_early() or keeper_launch.launch(log_file)
    assert child.stdin is not None and child.stdout is not None
    orders = {"profile": profile, "overrides": overrides, "options": asdict(options)}
    try:
        child.stdin.write(json.dumps(orders).encode() + b"\n")
        child.stdin.flush()
        return _relay(child, reporter, prompter, log_file)
    except BaseException:
        # Interrupted (or failed): the keeper undoes what it started. A keeper waiting for an
        # answer on its stdin gets end-of-file instead, and a second Ctrl-C or SIGTERM here only
        # says the clean-up is still running: cutting it short would leave Jupyter behind.
        with startup.patient(INTERRUPTS):
            with contextlib.suppress(OSError):
                child.stdin.close()
            killed = _terminate(child)
            if not _last_notes(child, reporter) and killed:
                # its own word on what may still run never came: say it here
                why = f"its keeper did not finish undoing the start-up within {UNDO_WAIT_S:g} s"
                reporter.note(manual_stop.advice(profile, why))
        raise
    finally:
        with contextlib.suppress(OSError):
            child.stdin.close()
        child.stdout.close()


def _relay(
    child: subprocess.Popen[bytes], reporter: Reporter, prompter: Prompter | None, log_file: object
) -> state.Record:
    assert child.stdin is not None and child.stdout is not None
    for raw in child.stdout:
        event = json.loads(raw)
        kind = event.get("type")
        if kind == "prompt":
            # The keeper has no terminal: the question is asked here and the answer goes back
            # on its stdin, the same pipe as its orders (never argv or the environment).
            answer = prompter.ask(event["prompt"], event["echo"]) if prompter else None
            child.stdin.write(json.dumps({"answer": answer}).encode() + b"\n")
            child.stdin.flush()
        elif kind == "step":
            reporter.step(event["message"])
        elif kind == "note":
            reporter.note(event["message"])
        elif kind == "ready":
            return state.Record(**event["record"])
        elif kind == "error":
            child.wait(30)
            error = ColabtunnelError(event["message"], hint=event.get("hint"))
            error.exit_code = event.get("exit_code", EXIT_RUNTIME)
            raise error
    code = child.wait(30)
    raise ColabtunnelError(
        f"the background keeper exited (code {code}) before the tunnel was ready",
        hint=f"see its log: {log_file}",
    )


def _read_waiting(stream: IO[bytes]) -> bytes | None:
    """What is in the pipe now (None: nothing), without waiting for its writer to end."""
    if sys.platform == "win32":
        # no non-blocking pipes before Python 3.12 there: read for a moment in a thread
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(stream.read()), daemon=True)
        reader.start()
        reader.join(NOTES_READ_S)
        return got[0] if got else None
    with contextlib.suppress(OSError, ValueError):
        os.set_blocking(stream.fileno(), False)
        return stream.read()
    return None


def _last_notes(child: subprocess.Popen[bytes], reporter: Reporter) -> bool:
    """What the keeper said while it undid the start-up (a Jupyter it could not stop, and how
    to), shown before `up` exits. The keeper has exited: what it wrote waits in the pipe, and
    whatever else still holds the pipe's far end cannot make this wait."""
    assert child.stdout is not None
    pending = _read_waiting(child.stdout)
    shown = False
    for line in (pending or b"").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event = json.loads(line)
            if event["type"] == "note":
                reporter.note(event["message"])
                shown = True
    return shown


def _terminate(child: subprocess.Popen[bytes]) -> bool:
    """Ask the keeper to undo what it started; it stops the remote Jupyter before exiting.
    True when it had to be killed, its clean-up perhaps unfinished."""
    if child.poll() is not None:
        return False
    child.terminate()
    try:
        child.wait(UNDO_WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return True
    return False


# -- the keeper side ---------------------------------------------------------------------------


class _PipeReporter:
    """Progress and questions for `up`, as JSON lines on stdout; answers come back on stdin."""

    def __init__(self, out: IO[str], answers: IO[str]) -> None:
        self.out = out
        self.answers = answers

    def ask(self, prompt: str, echo: bool) -> str | None:
        self.send(type="prompt", prompt=prompt, echo=echo)
        line = self.answers.readline()
        return json.loads(line).get("answer") if line else None

    def send(self, **event: Any) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def step(self, message: str) -> None:
        log.info("%s", message)
        self.send(type="step", message=message)

    def note(self, message: str) -> None:
        log.warning("%s", message)
        self.send(type="note", message=message)


def _on_term(signum: int, frame: object) -> None:
    raise Terminated


def main() -> int:
    """Entry point of `python -m colabtunnel.keeper`."""
    from colabtunnel.profiles import get_profile, with_overrides

    # paramiko imports invoke only to run ssh_config `Match exec`; colabtunnel parses ssh_config
    # itself, and invoke (asyncio, yaml, unittest.mock) is 0.05 s of every `up`. This process is
    # ours alone, so it can decline that import.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    # Until there are orders nothing has been started: a SIGTERM may simply end the process.
    signal.signal(signal.SIGTERM, _on_term)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        if "--warm" in sys.argv[1:]:
            import paramiko  # noqa: F401 - started early (keeper_launch): no orders yet
        line = sys.stdin.readline()
    except Terminated:
        return 1
    if not line:
        return 0  # an early keeper that `up` did not need
    orders = json.loads(line)
    name = orders["profile"]
    _stderr_to(paths.log_file(name))
    setup_file_logging(name)
    reporter = _PipeReporter(sys.stdout, sys.stdin)
    tunnel: Tunnel | None = None
    try:
        profile = with_overrides(get_profile(name), **orders["overrides"])
        creds = Credentials(name, prompter=reporter)
        tunnel = Tunnel(profile, UpOptions(**orders["options"]), reporter, creds)
        pending = tunnel  # `down` finds a queued job through this record while `up` waits
        tunnel.on_submitted = lambda handle, token, flavour: state.write(
            pending.provisional_record(os.getpid(), handle, token, flavour)
        )
        startup.open_tunnel(tunnel, (signal.SIGTERM,))
    except startup.Interrupted as exc:
        log.info("terminated during start-up; what it had started is undone")
        _forget_provisional(name, tunnel)
        if exc.worker_busy:
            startup.leave_now(1)
        return 1
    except ColabtunnelError as exc:
        log.error("start failed: %s", exc.message)
        _forget_provisional(name, tunnel)
        reporter.send(type="error", message=exc.message, hint=exc.hint, exit_code=exc.exit_code)
        return exc.exit_code
    except BaseException as exc:
        log.exception("keeper crashed during start-up")
        _forget_provisional(name, tunnel)
        reporter.send(
            type="error",
            message=f"internal error: {exc!r}",
            hint=f"see {paths.log_file(name)}",
        )
        return EXIT_RUNTIME
    # From here a signal only asks the serve loop to end (see _serve); one that came before the
    # loop started makes it end at once, and the clean-up after it still runs.
    if not SERVE_SIGNALS:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as TerminateProcess: no clean-up runs
    with startup.Signals(SERVE_SIGNALS) as signals:
        try:
            creds.offer_to_save(lambda question: confirm(reporter, question))
            creds.prompter = None  # from here nobody can answer: a one-time code means needs-login
            record = tunnel.record(os.getpid(), foreground=False)
            state.write(record)
            reporter.send(type="ready", record=asdict(record))
        except BaseException:
            # `up` is gone (a broken pipe: it was interrupted) or the state could not be written
            log.exception("start-up could not be completed; undoing it")
            tunnel.abandon_on_failure()
            with contextlib.suppress(ColabtunnelError):
                state.remove(name)
            return EXIT_RUNTIME
        _detach_stdio()
        handlers = {**keeper_control.tunnel_handlers(tunnel), **ending_orders(signals)}
        with keeper_control.serving(name, handlers):
            return _serve(tunnel, record, signals)


def _forget_provisional(name: str, tunnel: Tunnel | None = None) -> None:
    """A start that failed leaves no record: remove the one written while a job waited. Unless
    its job could not be cancelled: then it stays as stop-failed, for `down` to try again."""
    record = state.read(name)
    if record is None or record.keeper_pid != os.getpid():
        return
    leftover = tunnel.leftover_record(os.getpid()) if tunnel is not None else None
    if leftover is not None:
        state.write(leftover)
    else:
        state.remove(name)


def _stderr_to(log_file: Path) -> None:
    """Whatever reaches stderr (a crash, a warning) goes to the profile's log, also for a keeper
    started before its profile was known."""
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)
    os.close(fd)


def _detach_stdio() -> None:
    """`up` has what it needs: drop the pipes so its exit cannot break ours."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


# While serving, SIGTERM (`down`) and SIGUSR1 (a new keeper takes the tunnel over) only ask the
# serve loop to end (startup.Signals). Raised as an exception they could land inside paramiko
# between a lock's acquire() and its try, and the clean-up (the STOP script goes over the same
# transport) would then wait on that lock forever.
# The same two also come as orders over the control channel ("stop", "release"), which is how
# `down` and a new keeper ask first, on every platform; the signals are the POSIX fallback.
HAND_OVER = getattr(signal, "SIGUSR1", None)  # POSIX only
SERVE_SIGNALS: tuple[int, ...] = (
    (signal.SIGTERM,) if HAND_OVER is None else (signal.SIGTERM, HAND_OVER)
)
if os.environ.get("COLABTUNNEL_TEST_NO_SIGNALS"):
    SERVE_SIGNALS = ()  # the tests' stand-in for Windows: no handler, only the channel's orders


def ending_orders(
    signals: startup.Signals, release: bool = True
) -> dict[str, Callable[[], dict[str, Any]]]:
    """The control channel's "stop" (and "release": hand the tunnel over, Jupyter stays up)."""

    def order(name: str) -> Callable[[], dict[str, Any]]:
        def handle() -> dict[str, Any]:
            log.info("asked to %s over the control channel", name)
            signals.order(name)
            return {"ok": True}

        return handle

    names = keeper_control.ORDERS if release else keeper_control.ORDERS - {"release"}
    return {name: order(name) for name in names}


def _said(first: int | str | None) -> str:
    if isinstance(first, int):
        return signal.Signals(first).name
    return f"asked: {first}" if first else "the tunnel ended"


def _serve(tunnel: Tunnel, record: state.Record, signals: startup.Signals | None = None) -> int:
    if signals is None:
        with startup.Signals(SERVE_SIGNALS) as own:
            return _serve(tunnel, record, own)
    try:
        tunnel.serve(
            signals.stop,
            lambda h: record.set_health(h.state, h.attempt, h.retry_at, h.detail),
        )
    finally:
        # the first signal says what ends the loop: a stop, or a hand-over (Jupyter stays up)
        handed_over = signals.first == "release" or (
            HAND_OVER is not None and signals.first == HAND_OVER
        )
        stop_remote = not handed_over
        if record.health == "ended":
            log.info("Jupyter ended itself: removing what is left of it, then exiting")
        elif stop_remote:
            log.info("stopping (%s)", _said(signals.first))
        else:
            log.info(
                "handing the tunnel to a new keeper (%s); Jupyter stays up", _said(signals.first)
            )
        why = record.detail if record.health == "host-key-changed" else ""
        stopped = tunnel.close(stop_remote=stop_remote)
        log.info("remote Jupyter stopped: %s", stopped)
        current = state.read(record.profile)
        if record.health == "ended" and tunnel.profile.idle_timeout:
            ended.write(
                ended.Ended(
                    record.profile,
                    "idle",
                    tunnel.profile.idle_timeout,
                    record.host,
                    record.launcher,
                )
            )
        if current is not None and current.keeper_pid == os.getpid():
            if stop_remote and stopped is None:
                # `down` reads this and tells the user how to stop it by hand
                record.set_health("stop-failed", detail=why)
            else:
                state.remove(record.profile)
    return 0
