"""Real faults against a running tunnel: a dropped connection, an sshd outage, a sleeping laptop,
a crashed Jupyter, racing `up`s and Ctrl-C at every step of `up`. Each test owns its sshd, so it
can kill and restart it on the same port."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ACTIVATE, Env, jupyters_under, leftover_processes, wait_for
from tests.sshd import Sshd, running_sshd
from tests.tcp_servers import TcpServer
from tests.tunnel_helpers import URL_RE, Kernel, answers, status_of, up_json

OUTAGE_S = float(os.environ.get("COLABTUNNEL_TEST_OUTAGE_S", "40"))
SLEEP_S = float(os.environ.get("COLABTUNNEL_TEST_SLEEP_S", "60"))


@pytest.fixture
def own_sshd(tmp_path: Path, env: Env) -> Iterator[Sshd]:
    """An sshd of this test's own, with a profile `rel` (keepalive 2 s) pointing at it."""
    with running_sshd(tmp_path / "own-sshd") as server:
        env.known_hosts.write_text(env.known_hosts.read_text() + server.known_hosts_line())
        env.write_profile(
            "rel",
            host="127.0.0.1",
            port=server.port,
            user="root",
            identity_file=str(server.client_key),
            activate=ACTIVATE,
            keepalive=2,
        )
        yield server
        env.run("down", "rel", timeout=120)
        for proc in jupyters_under(server.remote_home):
            proc.kill()


def _up(env: Env, name: str = "rel") -> dict:
    return up_json(env, name)


def _status(env: Env, name: str = "rel") -> dict | None:
    return status_of(env, name)


def _answers(port: int, token: str) -> bool:
    return answers(port, token)


def _keeper_sshd_child(server: Sshd, keeper_pid: int) -> psutil.Process:
    """The sshd process serving the keeper's connection (not the listener)."""
    ports = {
        c.laddr.port
        for c in psutil.Process(keeper_pid).net_connections("tcp")
        if c.raddr and c.raddr.port == server.port
    }
    for child in psutil.Process(server.process.pid).children(recursive=True):
        for conn in child.net_connections("tcp"):
            if conn.raddr and conn.raddr.port in ports:
                return child
    raise AssertionError("no sshd process serves the keeper's connection")


def test_drop_reconnects_same_url_and_kernel_state(env: Env, own_sshd: Sshd) -> None:
    tunnel = _up(env)
    port, token = tunnel["local_port"], tunnel["url"].split("token=")[1]
    kernel = Kernel(port, token)
    kernel.run("x = 41")
    _keeper_sshd_child(own_sshd, tunnel["keeper_pid"]).kill()
    started = time.monotonic()
    wait_for(lambda: _answers(port, token), timeout=15, interval=0.2)
    assert kernel.run("print(x + 1)").strip() == "42"  # a new websocket, the same kernel
    assert time.monotonic() - started < 15
    assert _status(env)["url"] == tunnel["url"]


def test_outage_shows_reconnecting_then_recovers(env: Env, own_sshd: Sshd, tmp_path: Path) -> None:
    tunnel = _up(env)
    port, token = tunnel["local_port"], tunnel["url"].split("token=")[1]
    own_sshd.process.terminate()
    own_sshd.process.wait(10)
    for child in _sshd_children(own_sshd.port):
        child.kill()
    seen: set[str] = set()
    deadline = time.monotonic() + OUTAGE_S
    while time.monotonic() < deadline:
        seen.add(_status(env)["health"])
        time.sleep(1)
    assert "reconnecting" in seen, seen
    with running_sshd(tmp_path / "own-sshd", port=own_sshd.port):
        wait_for(lambda: _answers(port, token), timeout=45, interval=0.5)
        assert _status(env)["health"] == "ok"
        env.run("down", "rel", check=True)


def _sshd_children(port: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "sshd" and any(
                c.laddr.port == port for c in proc.net_connections("tcp")
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_sleeping_keeper_recovers_by_itself(env: Env, own_sshd: Sshd) -> None:
    tunnel = _up(env)
    port, token = tunnel["local_port"], tunnel["url"].split("token=")[1]
    keeper = psutil.Process(tunnel["keeper_pid"])
    keeper.suspend()
    try:
        time.sleep(SLEEP_S)
    finally:
        keeper.resume()
    wait_for(lambda: _answers(port, token), timeout=45, interval=0.5)
    assert _status(env)["url"] == tunnel["url"]


def test_remote_crash_is_remote_dead_and_up_starts_a_new_one(env: Env, own_sshd: Sshd) -> None:
    tunnel = _up(env)
    pid_file = own_sshd.remote_home / ".local/state/colabtunnel/rel/jupyter.pid"
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    wait_for(lambda: _status(env)["health"] == "remote-dead", timeout=30, interval=0.5)
    done = env.run("up", "rel")
    assert done.returncode == 0, done.stderr
    assert "URL (token) changes" in done.stderr and "Kernel state was lost" in done.stderr
    new_url = URL_RE.search(done.stdout).group(0)  # type: ignore[union-attr]
    assert new_url != tunnel["url"]
    port, token = URL_RE.search(new_url).groups()  # type: ignore[union-attr]
    assert _answers(int(port), token)


def test_two_ups_at_once_make_one_tunnel(env: Env, own_sshd: Sshd) -> None:
    procs = [env.popen("up", "rel") for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    urls = {URL_RE.search(out).group(0) for out, _ in outs}  # type: ignore[union-attr]
    assert len(urls) == 1
    servers = jupyters_under(own_sshd.remote_home, kernels=False)
    assert len(servers) == 1


class _SlowProxy:
    """A TCP proxy that holds each new connection `delay` seconds before passing bytes on."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self._server = TcpServer(self._serve)
        self.port = self._server.port
        self.close = self._server.close

    def _serve(self, client: socket.socket) -> None:
        time.sleep(self.delay)
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        from colabtunnel.forwarder import pump

        with upstream:
            pump(client, upstream)


def _interrupt_when(env: Env, name: str, marker: str) -> None:
    proc = env.popen("up", name)
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if marker in line:
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + rest
    assert "Traceback" not in seen + rest


def _nothing_left(env: Env, server: Sshd, name: str) -> None:
    wait_for(lambda: not jupyters_under(server.remote_home), timeout=30)
    assert not [p for p in leftover_processes(env) if "colabtunnel.keeper" in " ".join(p.cmdline())]
    assert not (env.ct_home / "state" / f"{name}.json").exists()


def test_interrupt_during_connect(env: Env, own_sshd: Sshd) -> None:
    proxy = _SlowProxy(own_sshd.port, delay=5)
    try:
        env.known_hosts.write_text(
            env.known_hosts.read_text()
            + own_sshd.known_hosts_line().replace(f"]:{own_sshd.port}", f"]:{proxy.port}")
        )
        env.write_profile(
            "slowlink",
            host="127.0.0.1",
            port=proxy.port,
            user="root",
            identity_file=str(own_sshd.client_key),
            activate=ACTIVATE,
        )
        _interrupt_when(env, "slowlink", "connecting to")
        _nothing_left(env, own_sshd, "slowlink")
    finally:
        proxy.close()


def test_interrupt_during_jupyter_start(env: Env, own_sshd: Sshd, tmp_path: Path) -> None:
    slow = tmp_path / "slow-jupyter"
    slow.write_text(f'#!/bin/sh\nsleep 3\nexec {Path(sys.executable).parent / "jupyter"} "$@"\n')
    slow.chmod(0o755)
    env.write_profile(
        "slowstart",
        host="127.0.0.1",
        port=own_sshd.port,
        user="root",
        identity_file=str(own_sshd.client_key),
        activate=ACTIVATE,
        jupyter=str(slow),
    )
    _interrupt_when(env, "slowstart", "starting ")
    _nothing_left(env, own_sshd, "slowstart")
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(slow) in " ".join(p.info["cmdline"] or [])
    ]


def test_interrupt_during_probe(env: Env, own_sshd: Sshd) -> None:
    _interrupt_when(env, "rel", "checking it the way Colab")
    _nothing_left(env, own_sshd, "rel")


def test_killed_keeper_then_up_keeps_the_kernel_and_its_state(env: Env, own_sshd: Sshd) -> None:
    tunnel = _up(env)
    port, token = tunnel["local_port"], tunnel["url"].split("token=")[1]
    kernel = Kernel(port, token)
    kernel.run("x = 41")
    os.kill(tunnel["keeper_pid"], signal.SIGKILL)
    wait_for(lambda: not _answers(port, token), timeout=10)
    again = _up(env)
    assert again["url"] == tunnel["url"]
    assert kernel.run("print(x + 1)").strip() == "42"  # the same kernel, its variables intact
