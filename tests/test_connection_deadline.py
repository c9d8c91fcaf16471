"""A connection attempt with a deadline never outlives it, whatever step the link goes silent in.

The reconnect loop depends on this: a silent link (bytes dropped, sockets open) must not hold one
attempt for paramiko's own 15-30 s step timeouts. Each fault here is a server that really goes
silent at that step, so the bound is the deadline and nothing else.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from colabtunnel.profiles import Profile
from colabtunnel.ssh import connection, sshtarget
from colabtunnel.ssh.credentials import Credentials
from tests.conftest import HOST_ALIAS, Env
from tests.tcp_servers import TcpServer

BUDGET_S = 2.0


def _silent(conn: socket.socket, banner: bytes = b"") -> None:
    """Read whatever comes and never answer (after an optional banner): a link gone quiet."""
    conn.sendall(banner)
    done = threading.Event()
    conn.settimeout(60)
    while not done.wait(0):
        try:
            if not conn.recv(65536):
                return
        except OSError:
            return


@pytest.fixture
def silent_server() -> Iterator[TcpServer]:
    server = TcpServer(_silent)
    yield server
    server.close()


@pytest.fixture
def banner_then_silent() -> Iterator[TcpServer]:
    server = TcpServer(lambda conn: _silent(conn, b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"))
    yield server
    server.close()


def _attempt(profile: Profile) -> tuple[connection.Unreachable, float]:
    started = time.monotonic()
    with pytest.raises(connection.Unreachable) as info:
        connection.connect(
            sshtarget.resolve(profile),
            profile.name,
            creds=Credentials(profile.name),
            deadline=started + BUDGET_S,
        )
    return info.value, time.monotonic() - started


def test_no_banner_is_bounded_by_the_deadline(silent_server: TcpServer) -> None:
    error, took = _attempt(Profile("t", host="127.0.0.1", port=silent_server.port))
    assert took < BUDGET_S + 1.5, took
    assert "SSH banner" in error.message and "ran out of time" in error.message


def test_silence_after_the_banner_is_bounded_by_the_deadline(banner_then_silent: TcpServer) -> None:
    error, took = _attempt(Profile("t", host="127.0.0.1", port=banner_then_silent.port))
    assert took < BUDGET_S + 1.5, took
    assert "key exchange" in error.message


def test_a_silent_hop_behind_a_jump_host_is_bounded(env: Env, silent_server: TcpServer) -> None:
    """The jump host (a real sshd) answers; the target behind it never does."""
    profile = Profile("t", host="127.0.0.1", port=silent_server.port, jump=HOST_ALIAS)
    error, took = _attempt(profile)
    assert took < BUDGET_S + 1.5, took
    assert f"127.0.0.1:{silent_server.port}" in error.message


def test_a_spent_deadline_fails_before_connecting(silent_server: TcpServer) -> None:
    profile = Profile("t", host="127.0.0.1", port=silent_server.port)
    started = time.monotonic()
    with pytest.raises(connection.Unreachable, match="TCP connection"):
        connection.connect(sshtarget.resolve(profile), "t", deadline=started - 1)
    assert time.monotonic() - started < 0.5
