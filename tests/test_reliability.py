"""Real faults against a running tunnel: a dropped connection, an sshd outage, a sleeping laptop,
a crashed Jupyter, a killed keeper, racing `up`s. Each test owns its sshd, so it can kill and
restart it on the same port. (A silent link: test_link_faults.py; signals: test_interrupts.py.)"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import Env, jupyters_under, wait_for
from tests.sshd import Sshd, free_port, running_sshd
from tests.tunnel_helpers import URL_RE, Kernel, answers, root_profile, status_of, up_json

OUTAGE_S = float(os.environ.get("COLABTUNNEL_TEST_OUTAGE_S", "40"))
SLEEP_S = float(os.environ.get("COLABTUNNEL_TEST_SLEEP_S", "60"))


@pytest.fixture
def own_sshd(tmp_path: Path, env: Env) -> Iterator[Sshd]:
    """An sshd of this test's own, with a profile `rel` (keepalive 2 s) pointing at it."""
    with running_sshd(tmp_path / "own-sshd") as server:
        root_profile(env, server, "rel", keepalive=2)
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


def test_killed_keeper_then_up_keeps_the_kernel_and_its_state(env: Env, own_sshd: Sshd) -> None:
    # A first port from outside 8888 upward, where the suite's other `up`s pick theirs: the dead
    # keeper's port is then still free for the second `up`, which prefers it unasked.
    tunnel = up_json(env, "rel", "--local-port", str(free_port()))
    port, token = tunnel["local_port"], tunnel["url"].split("token=")[1]
    kernel = Kernel(port, token)
    kernel.run("x = 41")
    os.kill(tunnel["keeper_pid"], signal.SIGKILL)
    wait_for(lambda: not _answers(port, token), timeout=10)
    again = _up(env)
    assert again["url"] == tunnel["url"]
    assert kernel.run("print(x + 1)").strip() == "42"  # the same kernel, its variables intact
