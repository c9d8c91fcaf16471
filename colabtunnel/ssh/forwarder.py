"""The local end of the tunnel: a listener on 127.0.0.1 whose connections ride SSH channels.

Each accepted connection gets a channel from `open_channel` and one thread that pumps bytes both ways
with select, honouring half-close (a client that shuts its write side still gets the whole answer).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from colabtunnel.ssh import delivery
from colabtunnel.ssh.window import TunedChannel

log = logging.getLogger("colabtunnel")

LISTEN_HOST = "127.0.0.1"  # never 0.0.0.0: the URL carries the token
CHUNK = 256 * 1024

ChannelOpener = Callable[[tuple[str, int]], Any]


class PortBusy(OSError):
    """127.0.0.1:PORT cannot be bound. `holder` names who listens there, when the OS tells."""

    def __init__(self, errno_: int | None, message: str, port: int = 0) -> None:
        super().__init__(errno_, message)
        self.port = port
        self._holder: str | None = None
        self._looked = False

    @property
    def holder(self) -> str | None:
        """Who listens on the port, as "NAME (pid N)", or None. Looked up on first use only:
        pick_local_port() tries many ports and needs no names."""
        if not self._looked:
            self._looked = True
            self._holder = port_holder(self.port) if self.port else None
        return self._holder

    def describe(self) -> str:
        """For messages: 127.0.0.1:PORT is in use by NAME (pid N), or without the "by" part."""
        by = f" by {self.holder}" if self.holder else ""
        return f"127.0.0.1:{self.port} is in use{by}"


def port_holder(port: int) -> str | None:
    """Which process listens on local TCP `port`: "NAME (pid N)", or None where the OS won't say.

    Linux tells anyone about their own processes and root about all; macOS needs root for the
    system-wide table, so there the caller's own processes are searched instead.
    """
    import psutil

    pids: list[int] = []
    try:
        for conn in psutil.net_connections("tcp"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr
            if listening and getattr(conn.laddr, "port", None) == port and conn.pid:
                pids.append(conn.pid)
    except (psutil.AccessDenied, OSError):
        pids = _own_listeners(port)
    for pid in dict.fromkeys(pids):
        try:
            return f"{psutil.Process(pid).name()} (pid {pid})"
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def _own_listeners(port: int) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            conns = (
                proc.net_connections("tcp")
                if hasattr(proc, "net_connections")
                else proc.connections("tcp")
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            found.append(proc.pid)
    return found


def bind_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: refuse to share the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LISTEN_HOST, port))
    except OSError as exc:
        sock.close()
        raise PortBusy(exc.errno, f"127.0.0.1:{port} is in use", port) from exc
    sock.listen(128)
    return sock


def port_is_free(port: int) -> bool:
    """Free on 127.0.0.1 and, where IPv6 exists, on ::1: browsers may try `localhost` as ::1."""
    try:
        bind_listener(port).close()
    except PortBusy:
        return False
    if not socket.has_ipv6:
        return True
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", port))
    except OSError as exc:
        return exc.errno not in (errno.EADDRINUSE, errno.EACCES)
    return True


def pick_local_port(preferred: int | None, fallback_from: int = 8888, span: int = 100) -> int:
    """`preferred` if given (free or not: the caller reports it), else 8888 or the next free port."""
    if preferred is not None:
        return preferred
    with contextlib.closing(bind_free_listener(fallback_from, span)) as sock:
        return int(sock.getsockname()[1])


def bind_free_listener(fallback_from: int = 8888, span: int = 100) -> socket.socket:
    """A listener on 8888 or the next free port (free on ::1 too, see port_is_free), else any.

    The bind is the test: a port found free and bound later can be taken in between by another
    `up` starting at the same moment (it also starts at 8888)."""
    for port in range(fallback_from, fallback_from + span):
        if not port_is_free(port):
            continue
        try:
            return bind_listener(port)
        except PortBusy:
            continue  # taken since port_is_free looked: the next one
    return bind_listener(0)


class Forwarder:
    def __init__(self, listener: socket.socket, open_channel: ChannelOpener) -> None:
        self.listener = listener
        self.open_channel = open_channel
        self.port: int = listener.getsockname()[1]
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="forwarder", daemon=True)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # close() alone does not wake accept()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self.listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            threading.Thread(
                target=self._serve, args=(conn, peer), name=f"fwd-{peer[1]}", daemon=True
            ).start()

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._conns.add(conn)
        channel = None
        try:
            channel = self.open_channel(peer)
            pump(
                conn,
                channel,
                delivery.install(channel, conn) if isinstance(channel, TunedChannel) else None,
            )
        except Exception as exc:
            log.warning("forwarded connection from port %d failed: %s", peer[1], exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
            if channel is not None:
                with contextlib.suppress(Exception):
                    close_selected(channel)
            else:
                _discard_input(conn)
            with contextlib.suppress(OSError):
                conn.close()


def close_selected(channel: Any) -> None:
    """Close a channel the pump waited on with select().

    select() made paramiko give the channel an OS pipe, which paramiko's reader thread writes to
    for every packet it feeds the channel, without the lock under which Channel.close() closes
    the pipe. A packet arriving just then is written to a closed (or reused) descriptor, and the
    OSError ends the reader thread: the SSH connection and all its channels die. (That is how an
    interrupted `up` once lost the connection it needed to stop Jupyter.) The channel's buffers
    wake a plain Event instead from here on: the buffer's lock, which the reader holds while it
    feeds, makes the swap wait for a feed under way, and the pipe is nobody's when it closes."""
    inner = getattr(channel, "channel", channel)  # a TunedChannel wraps the paramiko Channel
    for name in ("in_buffer", "in_stderr_buffer"):
        buffer = getattr(inner, name, None)
        if buffer is not None:
            buffer.set_event(threading.Event())
    channel.close()


def _discard_input(conn: socket.socket) -> None:
    """Read what the client sent that no channel will carry: closed with unread bytes, a socket
    answers with a reset; emptied first, it ends with an orderly close the client can tell."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        while conn.recv(CHUNK):
            pass


def pump(sock: socket.socket, channel: Any, to_sock_lock: threading.Lock | None = None) -> None:
    """Copy both ways until both sides have finished sending. `channel` is a paramiko Channel
    or a socket: both have recv/sendall/fileno and a way to half-close. `to_sock_lock`, when
    given, is held while moving bytes from the channel to `sock` (see delivery.py)."""
    open_in = {sock: True, channel: True}
    peers = {sock: channel, channel: sock}
    locks = {sock: contextlib.nullcontext(), channel: to_sock_lock or contextlib.nullcontext()}
    while any(open_in.values()):
        readable, _, _ = select.select([s for s, live in open_in.items() if live], [], [], 60)
        for src in readable:
            dst = peers[src]
            with locks[src]:
                data = src.recv(CHUNK)
                if data:
                    dst.sendall(data)
                    continue
            open_in[src] = False
            _shutdown_write(dst)


def _shutdown_write(end: Any) -> None:
    with contextlib.suppress(OSError, EOFError):
        if isinstance(end, socket.socket):
            end.shutdown(socket.SHUT_WR)
        else:
            end.shutdown_write()
