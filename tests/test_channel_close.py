"""A forwarded connection that ends while its channel is still receiving leaves the SSH
connection, and every other channel on it, alive.

The pump waits on a channel with select(), which makes paramiko give the channel an OS pipe;
paramiko's reader thread writes to that pipe for each packet it feeds the channel, and
Channel.close() closes it. Met by chance, the write hits a closed descriptor and the OSError
ends the reader thread: the whole connection dies. That happened when `up` was interrupted
during its probe (the forwarder stopped while the kernel's websocket was receiving), and the
connection needed to stop Jupyter on the host was gone. Here a real sshd streams into hundreds
of forwarded connections that each end after their first bytes; thread switches are made
frequent, as on a loaded machine, so that reader and closer interleave as often as they can.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest

from colabtunnel.profiles import get_profile
from colabtunnel.ssh import connection, sshtarget
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.forwarder import Forwarder, bind_listener
from colabtunnel.ssh.window import TunedChannel
from tests.conftest import PROFILE, Env
from tests.tcp_servers import TcpServer

CONNECTIONS = 300


def stream(conn: socket.socket) -> None:
    """Small writes without end (each its own SSH packet), until the tunnel's side goes away."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        conn.sendall(b"s" * 512)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_channels_closed_while_data_arrives_keep_the_connection(
    env: Env, fast_switching: None
) -> None:
    profile = get_profile(PROFILE)
    link = connection.connect(
        sshtarget.resolve(profile), profile.name, creds=Credentials(profile.name)
    )
    server = TcpServer(stream)

    def open_channel(origin: tuple[str, int]) -> TunedChannel:
        return link.open_tuned_forward(("127.0.0.1", server.port), origin)

    forwarder = Forwarder(bind_listener(0), open_channel).start()
    try:
        for done in range(CONNECTIONS):
            with socket.create_connection(("127.0.0.1", forwarder.port), timeout=10) as client:
                first = client.recv(1)
            assert link.alive, f"the SSH connection died at forwarded connection {done + 1}"
            assert first, "the host's stream did not arrive"
            # (the pump finds the client gone on its next write and closes the channel while
            # the host is still sending)
        deadline = time.monotonic() + 10
        while forwarder.active_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.alive, "the SSH connection died as the last channels closed"
        assert link.run("echo still here", timeout=30).stdout.strip() == "still here"
    finally:
        forwarder.stop()
        server.close()
        link.close()
