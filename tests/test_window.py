"""The window that follows the link (colabtunnel/ssh/window.py), on real channels of a real sshd.

Each decision is driven with a given rate and round trip (the rule is what is tested, not the
clock); the sshd proves each grant arrived by sending that much more than the old window
without this end reading a byte.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabtunnel.profiles import get_profile
from colabtunnel.ssh import connection, sshtarget
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.window import MAX_WINDOW, MIN_WINDOW, TunedChannel
from tests.conftest import HOST_ALIAS, PROFILE, Env, wait_for
from tests.sshd import running_sshd
from tests.tcp_servers import TcpServer

MiB = 1 << 20
FAR = 0.1  # a 100 ms round trip


class Sender:
    """A TCP server on the host: on each byte it receives, sends `chunk` bytes more."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.port = TcpServer(self._serve).port

    def _serve(self, conn: socket.socket) -> None:
        while conn.recv(1):
            conn.sendall(b"x" * self.chunk)


@pytest.fixture
def link(env: Env) -> Iterator[connection.Connection]:
    profile = get_profile(PROFILE)
    conn = connection.connect(
        sshtarget.resolve(profile), profile.name, creds=Credentials(profile.name)
    )
    yield conn
    conn.close()


def tuned(conn: connection.Connection, port: int, rtt: float) -> TunedChannel:
    channel = conn.open_forward(("127.0.0.1", port), ("127.0.0.1", 0))
    return TunedChannel(channel, lambda: rtt)


def unread(channel: TunedChannel) -> int:
    return len(channel.channel.in_buffer)


def test_the_window_doubles_each_round_trip_the_link_fills_it(
    link: connection.Connection,
) -> None:
    sender = Sender(MiB)
    channel = tuned(link, sender.port, FAR)
    assert channel.window == MIN_WINDOW
    # A round trip carried the whole window: it is what limits; doubled.
    channel._adapt(MIN_WINDOW / FAR)
    assert channel.window == 2 * MIN_WINDOW == channel.channel.in_window_size
    # Still the old window's worth (the grant takes a round trip to show): doubled again, since
    # that old window was full.
    channel._adapt(MIN_WINDOW / FAR)
    assert channel.window == 4 * MIN_WINDOW
    # Half the window in effect then: the window no longer limits.
    channel._adapt(MIN_WINDOW / FAR)
    assert channel.window == 4 * MIN_WINDOW
    channel._adapt(8 * MIN_WINDOW / FAR)
    assert channel.window == MAX_WINDOW
    channel._adapt(100 * MAX_WINDOW / FAR)
    assert channel.window == MAX_WINDOW  # the cap
    # sshd was told: 6 MiB arrive while nothing is read (the old window held 2)
    channel.sendall(b"g" * 6)
    wait_for(lambda: unread(channel) >= 6 * MiB, timeout=30)
    channel.close()


def test_the_window_is_taken_back_when_the_link_carries_far_less(
    link: connection.Connection,
) -> None:
    """What a window allows beyond what the link carries waits in sshd (whose cost per byte
    climbs with that queue): a round trip that carried less than half the window in effect
    takes it back to twice what it carried. The bytes read next are not granted again until
    that much is withheld; the transfer goes on."""
    sender = Sender(MiB)
    channel = tuned(link, sender.port, FAR)
    for _ in range(3):
        channel._adapt(MAX_WINDOW / FAR)
    assert channel.window == MAX_WINDOW
    channel._adapt(MAX_WINDOW / FAR)  # the window of two decisions ago is in effect now
    channel._adapt(MiB / FAR)  # a round trip carried 1 MiB of 16
    assert channel.window == 2 * MiB == channel.channel.in_window_size
    channel.sendall(b"g" * 24)
    channel.settimeout(30)  # a grant never given back would stall it: fail, not hang
    got = 0
    while got < 24 * MiB:  # more than the 16 MiB granted: the withheld grants came back
        got += len(channel.recv(1 << 16))
    channel.close()


def test_no_growth_on_a_fast_link_or_when_this_end_lags(link: connection.Connection) -> None:
    sender = Sender(MiB)
    near = tuned(link, sender.port, 0.0002)
    near._adapt(1e9)  # 1 GB/s over 0.2 ms: 200 kB of a 2 MiB window
    assert near.window == MIN_WINDOW == near.channel.in_window_size
    near.close()
    lagging = tuned(link, sender.port, FAR)
    lagging.sendall(b"g")
    wait_for(lambda: unread(lagging) >= MiB, timeout=30)  # more than a quarter left unread
    lagging._adapt(MIN_WINDOW / FAR)
    assert lagging.window == MIN_WINDOW == lagging.channel.in_window_size
    lagging.close()


def test_a_jump_hosts_channel_is_tuned_too(env: Env, tmp_path: Path) -> None:
    """Everything the target sends crosses the jump host's channel: its window must follow
    the link as well, or it caps the whole session at 2 MiB per round trip."""
    assert env.sshd is not None
    key = env.sshd.client_key
    with running_sshd(tmp_path / "jump") as jump:
        (tmp_path / "jump" / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        with open(env.home / ".ssh" / "config", "a") as config:
            config.write(
                f"Host jumpbox\n  HostName 127.0.0.1\n  Port {jump.port}\n  User root\n"
                f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
            )
        env.known_hosts.write_text(env.known_hosts.read_text() + jump.known_hosts_line())
        env.write_profile("viajump", host=HOST_ALIAS, jump="jumpbox")
        profile = get_profile("viajump")
        conn = connection.connect(
            sshtarget.resolve(profile), profile.name, creds=Credentials(profile.name)
        )
        _hop_is_tuned(conn)


def _hop_is_tuned(conn: connection.Connection) -> None:
    try:
        hop = conn.transport.sock
        assert isinstance(hop, TunedChannel)
        assert conn.hops and hop.channel.get_transport() is conn.hops[0]
        wait_for(lambda: conn.link_rtt() > 0, timeout=30)  # the first keepalives' answer
        assert hop.rtt_s() == conn.link_rtt()
    finally:
        conn.close()
