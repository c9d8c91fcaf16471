"""A reconnect hands out its new way to Jupyter whole: the login and what reaches Jupyter through it.

On a cluster the way in is a bridge built after the login (a job step's sshd over srun, 0.2 s on
this machine, seconds on a loaded one). A forwarded connection that arrives while the keeper
rebuilds it must wait for the bridge and go through it, not through the dead one of the dropped
login: Colab's page opens its websocket while `status` already says the job runs. The bridge's
build is held open here (the launcher's real attach, run late) so that the connection surely
arrives inside it; the SSH server, the logins and the forwarded channels are real.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from colabtunnel import launchers
from colabtunnel.errors import ColabtunnelError
from colabtunnel.keeper.tunnel import Opened, Tunnel, UpOptions
from colabtunnel.output import Progress
from colabtunnel.profiles import get_profile
from tests.conftest import PROFILE, Env, wait_for
from tests.tcp_servers import TcpServer


class HeldAttach:
    """The profile's launcher, whose attach() waits for `release` before it builds the way in
    (or fails, when told to), as a slow bridge would."""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher
        self.attaching = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.logins: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)

    def attach(self, host: Any, *args: Any) -> Any:
        self.logins.append(host.connection)
        self.attaching.set()
        assert self.release.wait(10)
        if self.fail:
            raise ColabtunnelError("the job step could not be started")
        return self.launcher.attach(host, *args)


def echo(conn: socket.socket) -> None:
    while data := conn.recv(4096):
        conn.sendall(data)


@pytest.fixture
def serving(env: Env) -> Iterator[tuple[Tunnel, HeldAttach]]:
    """A tunnel as the keeper holds it while serving, with an echo server as its Jupyter."""
    jupyter = TcpServer(echo)
    tunnel = Tunnel(get_profile(PROFILE), UpOptions(), Progress(quiet=True))
    host = tunnel.connect_host()
    server = launchers.Server(("127.0.0.1", jupyter.port), "t" * 43, "notebook7")
    tunnel.opened = Opened(0, server, tunnel.target, tunnel.launcher.NAME)
    tunnel.reach = tunnel.launcher.attach(host, tunnel.profile, server, tunnel.creds)
    tunnel._serving.set()  # what serve() sets before its supervisor runs
    held = HeldAttach(tunnel.launcher)
    tunnel.launcher = held
    yield tunnel, held
    held.release.set()
    tunnel.close(stop_remote=False)
    jupyter.close()


def _in_thread(target: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(target())
        except Exception as exc:  # the test reports it
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_connection_made_while_the_way_in_is_rebuilt_goes_through_the_new_one(
    serving: tuple[Tunnel, HeldAttach],
) -> None:
    tunnel, held = serving
    tunnel.drop_connection()  # what the supervisor does once it finds the login dead
    reconnecting, outcome = _in_thread(lambda: tunnel.reconnect(time.monotonic() + 15))
    assert held.attaching.wait(15), "the reconnect did not log in"
    opening, channel = _in_thread(lambda: tunnel._open_channel(("127.0.0.1", 50000)))
    wait_for(lambda: tunnel.waiting_connections == 1, timeout=10)  # it is in, and waiting
    assert opening.is_alive() and not channel
    held.release.set()
    reconnecting.join(15)
    opening.join(15)
    assert outcome and outcome[0].state == "ok", outcome
    assert channel, "the forwarded connection was still waiting"
    assert not isinstance(channel[0], Exception), f"the connection was refused: {channel[0]!r}"
    channel[0].sendall(b"ping")
    assert channel[0].recv(4) == b"ping"
    channel[0].close()


def test_a_login_whose_way_in_cannot_be_built_is_closed_and_not_used(
    serving: tuple[Tunnel, HeldAttach],
) -> None:
    tunnel, held = serving
    before = tunnel.connection
    tunnel.drop_connection()
    held.fail = True
    held.release.set()
    attempt = tunnel.reconnect(time.monotonic() + 15)
    assert attempt.state == "failed", attempt
    assert held.logins, "the reconnect did not log in"
    assert not held.logins[0].alive, "the login whose bridge failed was left open"
    assert tunnel.connection is before, "a login without a way to Jupyter was handed out"
    assert not tunnel._connected.is_set()
