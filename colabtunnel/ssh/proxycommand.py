"""ProxyCommand: the first hop's byte stream from a command, run as ssh_config(5) says.

`$SHELL -c "exec COMMAND"` with its stdin and stdout on one end of a socket pair, so paramiko
gets a real socket (no relay thread). Its stderr goes, line by line, to the log (the keeper's
log file in the background), and the last lines are kept for the error message when the command
fails. Closing the socket ends the process: EOF first (`ssh -W` and most proxies exit on it), then
TERM, then KILL, and it is always reaped, so reconnects leave no zombies and no open descriptors.

On Windows, as Windows' OpenSSH does, the command line is started as it is (CreateProcess: no
shell, no `exec`), and since a pipe there cannot be a socket, two threads relay between the
process's pipes and the socket pair (WINDOWS_WAY; the tests run it on Linux too).

paramiko's own ProxyCommand class was not used: it splits the line without a shell, never reads
stderr (a chatty proxy blocks on a full pipe) and leaves a zombie on every close.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any

from colabtunnel.errors import ColabtunnelError
from colabtunnel.redact import mask

log = logging.getLogger("colabtunnel")

EXIT_GRACE_S = 0.5  # after EOF, before TERM
TERM_GRACE_S = 2.0  # after TERM, before KILL
STDERR_DRAIN_S = 1.0  # after it has ended, for its last lines to reach the log
# Messages of proxies that wait for a person (a browser sign-in, an expired token, a prompt that
# has no terminal): a reconnect that meets one becomes `needs-login`, not endless retries.
_NEEDS_PERSON = re.compile(
    r"https?://|browser|sign[ -]?in|log ?in|re-?auth|authenticat|expired|/dev/tty|"
    r"passphrase|password|token",
    re.IGNORECASE,
)


class ProxyFailed(ColabtunnelError):
    """The ProxyCommand ended (or never spoke SSH) before a session could start."""

    def __init__(self, message: str, hint: str, needs_person: bool) -> None:
        super().__init__(message, hint)
        self.needs_person = needs_person


class ProxySocket(socket.socket):
    """The local end of the socket pair; closing it stops and reaps the command.

    paramiko closes the socket from its own (daemon) thread when a session dies: the first
    close does the work, a second one (ours, from the thread that handles the failure) waits for
    it, so the process is gone before that thread goes on (and before the program exits).
    """

    process: subprocess.Popen[bytes]
    command: str
    stderr_tail: collections.deque[str]
    stderr_reader: threading.Thread
    finishing: threading.Lock

    def close(self) -> None:
        super().close()
        if getattr(self, "process", None) is None:
            return
        with self.finishing:
            _finish(self.process)
            _LIVE.discard(self.process)
        # What it said before it ended belongs in the log before close returns: the reader can
        # be a pipe's worth (64 KiB) behind a chatty proxy.
        self.stderr_reader.join(STDERR_DRAIN_S)

    def failure(self, waited_for: str) -> ProxyFailed:
        """Why the command did not give an SSH session, from its exit status and stderr."""
        code = self.process.poll()
        if code is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.process.wait(0.2)
        time.sleep(0.05)  # the stderr reader may be a line behind the exit
        last = self.stderr_tail[-1] if self.stderr_tail else ""
        said = f": {last}" if last else " (it printed nothing on stderr)"
        if code is None:
            what = f"ProxyCommand `{mask(self.command)}` did not produce {waited_for}{said}"
        else:
            status = f"signal {-code}" if code < 0 else f"status {code}"
            what = f"ProxyCommand `{mask(self.command)}` exited with {status}{said}"
        needs_person = any(_NEEDS_PERSON.search(line) for line in self.stderr_tail)
        hint = (
            "it seems to wait for you to sign in: run its login (for example `aws sso login`, "
            "`gcloud auth login`, `cloudflared access login HOST`), then `up` again"
            if needs_person
            else "run the command by hand to see why; its whole output is in the keeper's log"
        )
        return ProxyFailed(what, hint, needs_person)


# Windows' way of running the command (above). A module setting so the tests can take it here.
WINDOWS_WAY = sys.platform == "win32"
RELAY_CHUNK = 65536


def start(command: str) -> ProxySocket:
    """Run `command` as ssh_config(5) says, a socket pair's end as its stdin/stdout."""
    if WINDOWS_WAY:
        return _start_piped(command)
    ours, theirs = socket.socketpair()
    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        process = subprocess.Popen(
            [shell, "-c", f"exec {command}"],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=subprocess.PIPE,
            close_fds=True,
            **_own_group(),  # no terminal to read; the whole group can be stopped
        )
    except OSError as exc:
        ours.close()
        raise ColabtunnelError(
            f"cannot run ProxyCommand through {shell}: {exc.strerror or exc}",
            hint="check SHELL and the ProxyCommand line",
        ) from exc
    finally:
        theirs.close()
    return _wrap(ours, process, command)


def _start_piped(command: str) -> ProxySocket:
    """The command line started directly, its pipes relayed to a socket pair by two threads."""
    ours, relay = socket.socketpair()
    try:
        process = subprocess.Popen(
            _direct_argv(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            **_own_group(),
        )
    except (OSError, ValueError) as exc:
        ours.close()
        relay.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ColabtunnelError(
            f"cannot run ProxyCommand `{mask(command)}`: {reason}",
            hint="it is started without a shell: give the program's full path "
            r"(for example C:\Windows\System32\OpenSSH\ssh.exe) and no shell syntax",
        ) from exc
    assert process.stdin is not None and process.stdout is not None
    ends = _Ends(relay)
    threading.Thread(
        target=_pump_in, args=(relay, process.stdin, ends), name="proxy-in", daemon=True
    ).start()
    threading.Thread(
        target=_pump_out, args=(process.stdout, relay, ends), name="proxy-out", daemon=True
    ).start()
    return _wrap(ours, process, command)


def _direct_argv(command: str) -> str | list[str]:
    """Windows: the line itself, for CreateProcess to read. Elsewhere (the tests): split as a
    program and its arguments, with no shell either."""
    if sys.platform == "win32":
        return command
    return shlex.split(command)


def _own_group() -> dict[str, Any]:
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        return {"creationflags": flags}
    return {"start_new_session": True}


class _Ends:
    """The relay's socket end, closed by whichever pump finishes last."""

    def __init__(self, relay: socket.socket) -> None:
        self.relay = relay
        self.left = 2
        self.lock = threading.Lock()

    def done(self) -> None:
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.relay.close()


def _pump_in(relay: socket.socket, stdin: IO[bytes], ends: _Ends) -> None:
    """paramiko's bytes to the proxy; our end's close is EOF on its stdin."""
    try:
        while data := relay.recv(RELAY_CHUNK):
            view = memoryview(data)
            while view:
                view = view[stdin.write(view) or 0 :]
    except OSError:
        pass  # the proxy is gone: what it sent before is still relayed out
    finally:
        with contextlib.suppress(OSError):
            stdin.close()
        ends.done()


def _pump_out(stdout: IO[bytes], relay: socket.socket, ends: _Ends) -> None:
    """The proxy's bytes to paramiko; its exit is EOF on our end."""
    try:
        while data := stdout.read(RELAY_CHUNK):
            relay.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            relay.shutdown(socket.SHUT_WR)
        stdout.close()
        ends.done()


def _wrap(ours: socket.socket, process: subprocess.Popen[bytes], command: str) -> ProxySocket:
    sock = ProxySocket(fileno=ours.detach())
    sock.finishing = threading.Lock()
    _LIVE.add(process)
    sock.process = process
    sock.command = command
    sock.stderr_tail = collections.deque(maxlen=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.stderr_reader = threading.Thread(
        target=_read_stderr, args=(process, sock.stderr_tail), name="proxy-stderr", daemon=True
    )
    sock.stderr_reader.start()
    log.info("ProxyCommand started (pid %d): %s", process.pid, mask(command))
    return sock


def _read_stderr(process: subprocess.Popen[bytes], tail: collections.deque[str]) -> None:
    assert process.stderr is not None
    with process.stderr:
        for raw in process.stderr:
            line = mask(raw.decode(errors="replace").rstrip())
            if line:
                tail.append(line)
                log.info("proxy: %s", line)


def _finish(process: subprocess.Popen[bytes]) -> None:
    """EOF has been sent (our end is closed): wait, TERM, KILL; always reap. Helpers the command
    started in its session (its process group) are told to stop too."""
    if process.returncode is not None:
        return
    try:
        process.wait(EXIT_GRACE_S)
    except subprocess.TimeoutExpired:
        _end_group(process, force=False)
        try:
            process.wait(TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            _end_group(process, force=True)
            process.wait()
    _end_group(process, force=False)


def _end_group(process: subprocess.Popen[bytes], force: bool) -> None:
    """SIGTERM (or SIGKILL) to the proxy's process group: what it started goes with it. Windows
    has no process groups to signal: the proxy itself is terminated."""
    if sys.platform == "win32":
        with contextlib.suppress(OSError):
            process.kill()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)


# Proxies not yet reaped: a program that exits while one still runs (say, right after a failed
# connection, while paramiko's thread is still closing it) must not leave it behind.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_LIVE):
        if process.poll() is None:
            _end_group(process, force=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1)
