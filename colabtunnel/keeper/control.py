"""A local control channel to a running keeper: one JSON question, one JSON answer.

The keeper listens on a Unix socket beside its state record (state/PROFILE.sock: the directory is
0700, the socket 0600, and on Linux the peer must be this user). The keeper answers through the
connection it already holds (no second login, no new prompt). The asker never waits longer than
its timeout, so `status` cannot hang on a keeper that is busy, stuck or gone.

Questions are a fixed table (`handlers`): "gpus", the GPUs' use now; "job", what the launcher says
beyond the tunnel (a Slurm job's state and time left); "activity", when Jupyter was last used.
Orders ("stop", "release"; ORDERS) end the keeper's serve loop as its signals do, which are the
fallback for a keeper that cannot be asked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colabtunnel import paths

if TYPE_CHECKING:
    from colabtunnel.keeper.tunnel import Tunnel

log = logging.getLogger("colabtunnel")

Handler = Callable[[], dict[str, Any]]
REQUEST_LIMIT = 4096
ANSWER_LIMIT = 1 << 20
GPU_QUERY_S = 2.5  # how long the host's GPU tools may take (then they are killed)
SCRIPT_MARGIN_S = 1.5  # the round trip and the host's Python starting, on top of that
ASK_TIMEOUT_S = GPU_QUERY_S + SCRIPT_MARGIN_S + 0.5  # what `status` waits for a keeper, at most
ACTIVITY_S = 3.0  # Jupyter's /api/status through the forwarded port
# Unix socket paths are limited (108 bytes on Linux, 104 on macOS, the NUL included).
MAX_SOCKET_PATH = 100
# Orders rather than questions: `down` ("stop") and a new keeper taking over ("release")
ORDERS = frozenset({"stop", "release"})
# CPython on Windows has no Unix sockets; a named-pipe channel is issue 21's next step
NO_CHANNEL_HERE = "keepers have no control channel on Windows yet"


class Unavailable(Exception):
    """The keeper could not be asked or did not answer; the message says why, for people."""


def _unix_socket() -> socket.socket:
    if sys.platform == "win32":
        raise Unavailable(NO_CHANNEL_HERE)
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def socket_path(profile: str) -> Path:
    return paths.state_dir() / f"{profile}.sock"


@contextlib.contextmanager
def _addressable(path: Path) -> Iterator[str]:
    """An address for `path` that fits a Unix socket: the path itself, or (Linux, long paths) the
    same file reached through /proc/self/fd/N of its directory."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"the state directory's path is too long for a control socket: {path}")
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# -- the keeper's side -----------------------------------------------------------------------------


def tunnel_handlers(tunnel: Tunnel) -> dict[str, Handler]:
    """What a keeper holding `tunnel` can answer."""

    def gpu_use() -> dict[str, Any]:
        from colabtunnel.jupyter import gpus

        info, host = tunnel.host_info, tunnel.host
        if info is None or host is None:
            return {"ok": False, "reason": "the tunnel is not open"}
        if not host.is_local and not (tunnel.connection and tunnel.connection.alive):
            return {"ok": False, "reason": "the SSH connection is down (reconnecting)"}
        where = tunnel.node_host() or host
        report = gpus.use_now(where, info.python_path, info.gpus, GPU_QUERY_S, SCRIPT_MARGIN_S)
        return {"ok": True, "gpus": report.to_json()}

    def job() -> dict[str, Any]:
        if tunnel.connection is not None and not tunnel.connection.alive:
            return {"ok": False, "reason": "the SSH connection is down (reconnecting)"}
        return {"ok": True, "job": tunnel.launcher_details()}

    def activity() -> dict[str, Any]:
        return tunnel.activity(timeout=ACTIVITY_S)

    return {"gpus": gpu_use, "job": job, "activity": activity}


@contextlib.contextmanager
def serving(profile: str, handlers: Mapping[str, Handler]) -> Iterator[None]:
    """Answer questions for `profile` while the block runs. Never fails the keeper: without a
    socket, `status` just cannot show what the keeper would have said."""
    server = None
    try:
        server = _Server(profile, handlers)
    except (OSError, Unavailable) as exc:
        log.warning("no control channel for status: %s", exc)
    try:
        yield
    finally:
        if server is not None:
            server.close()


class _Server:
    def __init__(self, profile: str, handlers: Mapping[str, Handler]) -> None:
        self.handlers = handlers
        self.path = socket_path(profile)
        self.busy = threading.Lock()  # one question at a time reaches the host
        self.closed = threading.Event()
        self.listener = _unix_socket()
        try:
            with _addressable(self.path) as address:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address)  # left by a keeper that was killed
                old_umask = os.umask(0o177)
                try:
                    self.listener.bind(address)
                finally:
                    os.umask(old_umask)
                os.chmod(address, 0o600)
                self.identity = os.stat(address).st_ino
            self.listener.listen(8)
            self.listener.settimeout(0.5)  # so close() is noticed without waking accept()
        except BaseException:
            self.listener.close()
            raise
        threading.Thread(target=self._accept, name="control", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(ASK_TIMEOUT_S + 5)
                if not _same_user(conn):
                    return
                question = json.loads(_read_line(conn, REQUEST_LIMIT, time.monotonic() + 5))
                answer = self._handle(question)
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except (OSError, ValueError, Unavailable) as exc:
                log.info("control: a question went unanswered: %s", exc)

    def _handle(self, question: object) -> dict[str, Any]:
        ask = question.get("ask") if isinstance(question, dict) else None
        handler = self.handlers.get(ask) if isinstance(ask, str) else None
        if handler is None:
            return {"ok": False, "reason": f"unknown question {ask!r}"}
        if ask in ORDERS:
            return handler()  # it only asks the serve loop to end: never waits on the host
        if not self.busy.acquire(timeout=ASK_TIMEOUT_S):
            return {"ok": False, "reason": "the keeper is busy answering another question"}
        try:
            return handler()
        except Exception as exc:  # an answer, never a dead keeper
            log.warning("control: %r failed: %r", ask, exc)
            return {"ok": False, "reason": getattr(exc, "message", None) or repr(exc)}
        finally:
            self.busy.release()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        with contextlib.suppress(OSError, Unavailable), _addressable(self.path) as address:
            if os.stat(address).st_ino == self.identity:  # not a newer keeper's socket
                os.unlink(address)


def _same_user(conn: socket.socket) -> bool:
    """Linux tells who is on the other end; elsewhere the 0700 directory is the guard."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or sys.platform == "win32":
        return True
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, 12))
    return bool(uid == os.getuid())


def _read_line(conn: socket.socket, limit: int, deadline: float) -> bytes:
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unavailable("no answer in time")
        conn.settimeout(left)
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            raise Unavailable("no answer in time") from None
        if not chunk:
            raise Unavailable("the keeper closed the channel without answering")
        data += chunk
        if len(data) > limit:
            raise Unavailable("the answer is too long")
    return data.split(b"\n", 1)[0]


# -- the asker's side ------------------------------------------------------------------------------


def ask(profile: str, question: str, timeout: float = ASK_TIMEOUT_S) -> dict[str, Any]:
    """Ask the keeper of `profile`; its answer, or Unavailable within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    path = socket_path(profile)
    with _unix_socket() as conn:
        conn.settimeout(timeout)
        try:
            with _addressable(path) as address:
                conn.connect(address)
            conn.sendall(json.dumps({"ask": question}).encode() + b"\n")
        except (FileNotFoundError, ConnectionRefusedError):
            raise Unavailable(
                "the keeper has no control channel (started by an older colabtunnel?)"
            ) from None
        except OSError as exc:
            raise Unavailable(f"cannot reach the keeper: {exc.strerror or exc}") from None
        try:
            answer = json.loads(_read_line(conn, ANSWER_LIMIT, deadline))
        except Unavailable as exc:
            if str(exc) == "no answer in time":
                raise Unavailable(f"the keeper did not answer within {timeout:g} s") from None
            raise
        except ValueError:
            raise Unavailable("the keeper's answer could not be read") from None
    if not isinstance(answer, dict):
        raise Unavailable("the keeper's answer could not be read")
    return answer
