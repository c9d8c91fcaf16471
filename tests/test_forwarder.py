"""The local listener and the byte pump, with plain TCP sockets standing in for SSH channels."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from colabtunnel.ssh import forwarder
from colabtunnel.ssh.forwarder import Forwarder, PortBusy
from tests.tcp_servers import Handler, TcpServer


class Server(TcpServer):
    """A tiny threaded TCP server on 127.0.0.1 playing the remote Jupyter."""

    def open_channel(self, peer: tuple[str, int]) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port))


def echo(conn: socket.socket) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


RESPONSE_BODY = os.urandom(512 * 1024)


def answer_after_eof(conn: socket.socket) -> None:
    """Like an HTTP/1.0 server that reads the request to EOF before answering."""
    request = b""
    while chunk := conn.recv(65536):
        request += chunk
    digest = hashlib.sha256(request).hexdigest().encode()
    conn.sendall(b"HTTP/1.0 200 OK\r\nX-Request-Sha256: " + digest + b"\r\n\r\n" + RESPONSE_BODY)


def recv_all(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@contextlib.contextmanager
def forwarding(handler: Handler) -> Iterator[tuple[Forwarder, Server]]:
    server = Server(handler)
    fwd = Forwarder(forwarder.bind_listener(0), server.open_channel).start()
    try:
        yield fwd, server
    finally:
        fwd.stop()
        server.close()


@pytest.fixture
def echo_fwd() -> Iterator[Forwarder]:
    with forwarding(echo) as (fwd, _):
        yield fwd


def _connect(fwd: Forwarder) -> socket.socket:
    return socket.create_connection(("127.0.0.1", fwd.port), timeout=20)


# --- listening ---------------------------------------------------------------------------------


def test_listener_is_bound_to_loopback_only(echo_fwd: Forwarder) -> None:
    host, port = echo_fwd.listener.getsockname()
    assert host == "127.0.0.1"
    assert port == echo_fwd.port > 0
    others = [
        addr.address
        for addrs in psutil.net_if_addrs().values()
        for addr in addrs
        if addr.family == socket.AF_INET and not addr.address.startswith("127.")
    ]
    for address in others:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
            pass


def test_bind_listener_on_busy_port_raises_portbusy() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortBusy) as info:
            forwarder.bind_listener(port)
        assert isinstance(info.value, OSError)
        assert info.value.errno == errno.EADDRINUSE
        assert str(port) in str(info.value)
        assert not forwarder.port_is_free(port)
    assert forwarder.port_is_free(port)


def test_bind_listener_on_port_taken_on_all_interfaces_raises_portbusy() -> None:
    with socket.create_server(("0.0.0.0", 0)) as taken, pytest.raises(PortBusy):
        forwarder.bind_listener(taken.getsockname()[1])


def test_pick_local_port_explicit_is_returned_as_is() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert forwarder.pick_local_port(port) == port  # the caller reports it busy


def _a_port_free_on_both_loopbacks() -> int:
    """A port free on 127.0.0.1 and ::1 a moment ago (other workers' tunnels take 8888 and up)."""
    for _ in range(50):
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = int(probe.getsockname()[1])
        if forwarder.port_is_free(port):
            return port
    raise AssertionError("no port free on both loopbacks in 50 tries")


def test_pick_local_port_starts_at_8888() -> None:
    # The URL users paste stays http://localhost:8888 when they can: the default is the promise.
    for function in (forwarder.pick_local_port, forwarder.bind_free_listener):
        assert inspect.signature(function).parameters["fallback_from"].default == 8888


def test_pick_local_port_prefers_its_first_port_when_free() -> None:
    first = _a_port_free_on_both_loopbacks()
    assert forwarder.pick_local_port(None, fallback_from=first) == first


def test_pick_local_port_falls_back_to_next_free() -> None:
    first = _a_port_free_on_both_loopbacks()
    held = []
    try:
        for port in (first, first + 1):
            if forwarder.port_is_free(port):
                held.append(forwarder.bind_listener(port))
        # Both are busy now (held by us, or by someone else already).
        picked = forwarder.pick_local_port(None, fallback_from=first)
        assert first + 2 <= picked < first + 100
        assert forwarder.port_is_free(picked)
    finally:
        for sock in held:
            sock.close()


def test_pick_local_port_when_whole_range_busy_returns_a_free_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        picked = forwarder.pick_local_port(None, fallback_from=port, span=1)
        assert picked != port
        assert forwarder.port_is_free(picked)


def test_pick_local_port_skips_port_taken_on_ipv6_loopback() -> None:
    assert socket.has_ipv6, "this suite's machine has IPv6 loopback (browsers try ::1 first)"
    for _ in range(50):
        with socket.create_server(("::1", 0), family=socket.AF_INET6) as taken:
            port = taken.getsockname()[1]
            try:
                forwarder.bind_listener(port).close()
            except PortBusy:
                continue  # its IPv4 side is taken too: not the case under test
            assert forwarder.pick_local_port(None, fallback_from=port, span=1) != port
            return
    raise AssertionError("every ::1 port found had its IPv4 side taken too")


# --- pumping -----------------------------------------------------------------------------------


def test_20mb_round_trip_is_exact(echo_fwd: Forwarder) -> None:
    payload = os.urandom(20 * 1024 * 1024)
    with _connect(echo_fwd) as client:

        def send() -> None:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = recv_all(client)
        sender.join(20)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_half_close_still_gets_the_full_answer() -> None:
    request = b"POST /api/kernels HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello" * 100
    with forwarding(answer_after_eof) as (fwd, _), _connect(fwd) as client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        response = recv_all(client)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert hashlib.sha256(request).hexdigest().encode() in head
    assert body == RESPONSE_BODY


def test_concurrent_connections_are_independent(echo_fwd: Forwarder) -> None:
    results: dict[int, bool] = {}

    def one(i: int) -> None:
        data = os.urandom(200_000) + str(i).encode()
        with _connect(echo_fwd) as client:
            sender = threading.Thread(
                target=lambda: (client.sendall(data), client.shutdown(socket.SHUT_WR))
            )
            sender.start()
            results[i] = recv_all(client) == data
            sender.join()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: True for i in range(16)}


def test_200_sequential_connections_leak_nothing() -> None:
    with forwarding(echo) as (fwd, _):
        # Warm up once so lazily created objects do not count as leaks.
        with _connect(fwd) as client:
            client.sendall(b"warm")
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b"warm"
        _wait(lambda: fwd.active_connections == 0)
        start = _fd_count()
        for i in range(200):
            message = f"request {i}".encode()
            with _connect(fwd) as client:
                client.sendall(message)
                client.shutdown(socket.SHUT_WR)
                assert recv_all(client) == message
        _wait(lambda: fwd.active_connections == 0)
        _wait(lambda: abs(_fd_count() - start) <= 2, timeout=10)


def test_failed_channel_closes_client_and_keeps_listening() -> None:
    server = Server(echo)
    calls = []

    def flaky(peer: tuple[str, int]) -> socket.socket:
        calls.append(peer)
        if len(calls) == 1:
            raise OSError("channel open failed (administratively prohibited)")
        return server.open_channel(peer)

    fwd = Forwarder(forwarder.bind_listener(0), flaky).start()
    try:
        with _connect(fwd) as client, contextlib.suppress(ConnectionResetError):
            assert client.recv(10) == b""
        _wait(lambda: fwd.active_connections == 0)
        with _connect(fwd) as client:
            client.sendall(b"second")
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b"second"
        assert calls[0][0] == "127.0.0.1"
    finally:
        fwd.stop()
        server.close()


# --- stopping ----------------------------------------------------------------------------------


def test_stop_ends_active_connections(echo_fwd: Forwarder) -> None:
    client = _connect(echo_fwd)
    try:
        client.sendall(b"x")
        assert client.recv(1) == b"x"
        assert echo_fwd.active_connections == 1
        echo_fwd.stop()
        client.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(10) == b""
        _wait(lambda: echo_fwd.active_connections == 0)
    finally:
        client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", echo_fwd.port), timeout=2).close()


def test_stop_closes_the_port_promptly() -> None:
    server = Server(echo)
    fwd = Forwarder(forwarder.bind_listener(0), server.open_channel).start()
    try:
        time.sleep(0.1)  # the accept thread is now blocked in accept()
        began = time.monotonic()
        fwd.stop()
        took = time.monotonic() - began
        stray = None
        try:
            stray = socket.create_connection(("127.0.0.1", fwd.port), timeout=2)
        except ConnectionRefusedError:
            pass
        finally:
            if stray is not None:
                stray.close()
        assert stray is None, "the port still accepted a connection after stop()"
        assert took < 2, f"stop() took {took:.1f} s"
    finally:
        server.close()


def test_a_port_taken_between_the_look_and_the_bind_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two `up`s starting at once both look from 8888 on: the one that loses the bind must take
    the next port, not fail with PortBusy (seen with the suite's parallel workers)."""
    with contextlib.closing(forwarder.bind_listener(0)) as taken:
        port = taken.getsockname()[1]
        # as if the other `up` bound it just after this one looked
        monkeypatch.setattr(forwarder, "port_is_free", lambda p: True)
        with contextlib.closing(forwarder.bind_free_listener(port, span=3)) as mine:
            assert mine.getsockname()[1] != port
