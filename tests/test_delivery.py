"""Direct delivery (colabtunnel/ssh/delivery.py) through a real sshd: small messages skip the pump
thread, a client that stops reading gets the rest through the buffer, in order, and the SSH window
is granted back for bytes delivered either way (a transfer of several windows would stall if not).
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator

import pytest

from colabtunnel.profiles import get_profile
from colabtunnel.ssh import connection, delivery, sshtarget
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.forwarder import Forwarder, bind_listener
from colabtunnel.ssh.window import MIN_WINDOW, TunedChannel
from tests.conftest import PROFILE, Env, wait_for
from tests.tcp_servers import TcpServer

pytestmark = pytest.mark.skipif(
    delivery.DONTWAIT is None, reason="platform: no MSG_DONTWAIT on this OS"
)


class Remote:
    """A TCP server on the host side: echoes, or sends `payload` (after one byte from the client)
    and closes."""

    def __init__(self, payload: bytes | None = None) -> None:
        self.payload = payload
        self.port = TcpServer(self._serve).port

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.payload is not None:
            conn.recv(1)  # the client's go: by then the tunnel's channel is fully set up
            conn.sendall(self.payload)
            return
        while data := conn.recv(65536):
            conn.sendall(data)


class Tunnel:
    def __init__(self, remote_port: int) -> None:
        profile = get_profile(PROFILE)
        self.conn = connection.connect(
            sshtarget.resolve(profile), profile.name, creds=Credentials(profile.name)
        )
        self.channels: list[TunedChannel] = []

        def open_channel(origin: tuple[str, int]) -> TunedChannel:
            channel = self.conn.open_tuned_forward(("127.0.0.1", remote_port), origin)
            self.channels.append(channel)
            return channel

        self.forwarder = Forwarder(bind_listener(0), open_channel).start()

    def delivery(self) -> delivery.DirectDelivery:
        in_buffer = self.channels[0].channel.in_buffer
        assert isinstance(in_buffer, delivery.DirectDelivery)
        return in_buffer

    def close(self) -> None:
        self.forwarder.stop()
        self.conn.close()


@pytest.fixture
def echo_tunnel(env: Env) -> Iterator[Tunnel]:
    tunnel = Tunnel(Remote().port)
    yield tunnel
    tunnel.close()


def test_small_messages_skip_the_pump(echo_tunnel: Tunnel) -> None:
    with socket.create_connection(("127.0.0.1", echo_tunnel.forwarder.port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(300):
            message = i.to_bytes(4, "big") * 16  # 64 bytes, like a kernel's small messages
            sock.sendall(message)
            got = b""
            while len(got) < len(message):
                got += sock.recv(64 - len(got))
            assert got == message
    seen = echo_tunnel.delivery()
    # Nothing was ever waiting in the buffer, so every answer went straight to the socket. (The
    # count is taken just after the last send: the client can be quicker to read than it.)
    wait_for(lambda: seen.direct == 300 * 64, timeout=5)
    assert seen.buffered == 0


def test_a_client_that_stops_reading_gets_everything_in_order(env: Env) -> None:
    # Four windows' worth: the server stops sending unless window is granted back for bytes
    # delivered directly as well as for those that went through the buffer.
    payload = b"".join(
        hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(4 * MIN_WINDOW // 32)
    )
    remote = Remote(payload)
    tunnel = Tunnel(remote.port)
    try:
        with socket.create_connection(("127.0.0.1", tunnel.forwarder.port), timeout=60) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(b"!")
            time.sleep(1.5)  # not reading: the socket fills up, the rest waits in the buffer
            chunks = []
            while data := sock.recv(1 << 20):
                chunks.append(data)
        assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(payload).digest()
        seen = tunnel.delivery()
        assert seen.direct > 0 and seen.buffered > 0, (seen.direct, seen.buffered)
        assert seen.direct + seen.buffered == len(payload)
    finally:
        tunnel.close()
