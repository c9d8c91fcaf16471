"""A link that goes silent or is cut, and a host whose key changes, under a live tunnel.

The keeper talks to its own sshd through tests/silent_link.py, a proxy that can hold every byte
(sockets stay open: a closed laptop lid, a dead Wi-Fi, a NAT that forgot us) or reset every
connection. The profile has keepalive = 5, as a user tuning for a flaky link would set it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import Env, jupyters_under, wait_for
from tests.silent_link import SilentLink
from tests.sshd import Sshd, keygen, running_sshd
from tests.tunnel_helpers import (
    Kernel,
    answers,
    keepers,
    record_of,
    root_profile,
    status_of,
    token_of,
    up_json,
)

KEEPALIVE = 5
NAME = "flaky"


@dataclass
class Linked:
    server: Sshd
    link: SilentLink


@pytest.fixture
def linked(tmp_path: Path, env: Env) -> Iterator[Linked]:
    """An sshd of this test's own behind a SilentLink, and profile `flaky` going through it."""
    with running_sshd(tmp_path / "own-sshd") as server:
        link = SilentLink(server.port)
        try:
            root_profile(env, server, NAME, port=link.port, keepalive=KEEPALIVE)
            yield Linked(server, link)
        finally:
            link.release()
            env.run("down", NAME, timeout=120)
            link.close()
            for proc in jupyters_under(server.remote_home):
                proc.kill()


def _health(env: Env) -> str:
    record = record_of(env, NAME)
    return record["health"] if record else "gone"


class _Request:
    """One HTTP request through the tunnel on a thread: when it ended, and how."""

    def __init__(self, port: int, token: str) -> None:
        self.started = time.monotonic()
        self.ended: float | None = None
        self.reply = b""
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, args=(port, token), daemon=True)
        self._thread.start()

    def _run(self, port: int, token: str) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(
                    f"GET /api/status?token={token} HTTP/1.1\r\nHost: localhost\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                while chunk := sock.recv(65536):
                    self.reply += chunk
        except OSError as exc:
            self.error = repr(exc)
        self.ended = time.monotonic()

    def wait(self, timeout: float) -> float:
        self._thread.join(timeout)
        assert self.ended is not None, f"the request still hangs after {timeout} s"
        return self.ended - self.started


class _RecordChanges:
    """The tunnel's record, sampled every 50 ms from construction until stop(): (when, record)
    at each change, so that a test measures from the event, not from its own schedule."""

    def __init__(self, env: Env) -> None:
        self.seen: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._env = env
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        last = None
        while not self._stop.wait(0.05):
            record = record_of(self._env, NAME) or {}
            if record != last:
                self.seen.append((time.monotonic(), record))
                last = record

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_silent_link_is_reported_at_once_and_the_tunnel_recovers(env: Env, linked: Linked) -> None:
    tunnel = up_json(env, NAME)
    port, token = tunnel["local_port"], token_of(tunnel)
    kernel = Kernel(port, token)
    kernel.run("x = 41")
    connections = linked.link.accepted

    linked.link.hold()
    silent_since = time.monotonic()
    changes = _RecordChanges(env)  # sampled from now: when each health change happened
    waiting = _Request(port, token)  # a new local connection while the link is silent
    wait_for(lambda: _health(env) != "ok", timeout=4 * KEEPALIVE, interval=0.05)
    noticed = time.monotonic() - silent_since
    assert noticed <= 3 * KEEPALIVE, f"`status` still said ok {noticed:.1f} s into the silence"
    shown = status_of(env, NAME)
    assert shown is not None and shown["health"] == "reconnecting", shown
    text = env.run("status", NAME, check=True).stdout
    assert "reconnecting (attempt 1" in text, text

    # It waits for the link (at most 20 s), then gets a clean close: never a hang.
    waited = waiting.wait(timeout=30)
    assert 15 <= waited <= 22, f"the waiting connection ended after {waited:.1f} s"
    assert waiting.reply == b"" and waiting.error is None, (waiting.reply, waiting.error)
    assert linked.link.accepted > connections, "no reconnect attempt was made while silent"

    # The first attempt gives up at its own deadline (2 intervals), saying what it waited for:
    # measured from its connection reaching the link to the record saying it gave up.
    def gave_up_at() -> float | None:
        said = (t for t, seen in changes.seen if "gave up waiting for" in seen.get("detail", ""))
        return next(said, None)

    gave_up = wait_for(gave_up_at, timeout=3 * KEEPALIVE)
    changes.stop()
    started = next(t for t in linked.link.accept_times if t > silent_since)
    took = gave_up - started
    assert 2 * KEEPALIVE - 0.5 <= took <= 2 * KEEPALIVE + 1.5, (
        f"the attempt ended after {took:.1f} s"
    )
    failed = record_of(env, NAME)
    assert failed is not None and failed["health"] == "reconnecting", failed

    linked.link.release()
    wait_for(lambda: answers(port, token), timeout=40, interval=0.2)
    assert kernel.run("print(x + 1)").strip() == "42"  # the same kernel, through the same URL
    wait_for(lambda: _health(env) == "ok", timeout=10)
    assert status_of(env, NAME)["url"] == tunnel["url"]  # type: ignore[index]


def test_a_short_silence_rides_through_without_a_reconnect(env: Env, linked: Linked) -> None:
    tunnel = up_json(env, NAME)
    port, token = tunnel["local_port"], token_of(tunnel)
    connections = linked.link.accepted
    seen = set()
    with linked.link.silent():
        ends = time.monotonic() + 6
        while time.monotonic() < ends:
            seen.add(_health(env))
            time.sleep(0.1)
    assert seen == {"ok"}, seen
    assert answers(port, token)
    time.sleep(KEEPALIVE)  # a heartbeat sent during the silence is answered after it
    assert linked.link.accepted == connections, "the keeper reconnected after a 6 s silence"
    assert _health(env) == "ok"


def _idle_usage(pid: int) -> tuple[int, int]:
    """(open fds, threads) of `pid`, the smallest over a second: a heartbeat's short-lived thread
    must not count."""
    proc = psutil.Process(pid)
    samples = []
    for _ in range(10):
        samples.append((proc.num_fds(), proc.num_threads()))
        time.sleep(0.1)
    return min(s[0] for s in samples), min(s[1] for s in samples)


def test_ten_faults_in_a_row_leave_the_keepers_fds_and_threads_flat(
    env: Env, linked: Linked
) -> None:
    tunnel = up_json(env, NAME)
    port, token = tunnel["local_port"], token_of(tunnel)
    keeper = tunnel["keeper_pid"]
    kernel = Kernel(port, token)
    kernel.run("x = 1")
    usage = []
    for fault in range(10):
        if fault == 9:
            # Last, a silence the heartbeat finds, that then ends: the old connection comes back
            # to life, so only the keeper's own close ends it (a cut would end it for it).
            linked.link.hold()
            wait_for(lambda: _health(env) != "ok", timeout=4 * KEEPALIVE, interval=0.05)
            linked.link.release()
        else:
            if fault % 2:
                linked.link.hold()  # a silence that ends in a reset, as a NAT that dropped us
                time.sleep(0.5)
                linked.link.refuse_for(1.0)  # and the first attempt fails: not back yet
            linked.link.cut()
            linked.link.release()
            wait_for(lambda: _health(env) != "ok", timeout=10, interval=0.05)
        wait_for(lambda: _health(env) == "ok" and answers(port, token), timeout=30, interval=0.1)
        assert kernel.run("x += 1; print(x)").strip() == str(fault + 2)
        usage.append(_idle_usage(keeper))
    (fds_first, threads_first), (fds_last, threads_last) = usage[0], usage[-1]
    assert fds_last <= fds_first, usage
    assert threads_last <= threads_first, usage
    print("(fds, threads) after each fault:", usage)
    assert linked.link.accepted >= 15  # four of the faults took more than one attempt


def _fingerprint(public_key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public_key)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


@contextlib.contextmanager
def _impostor(original: Sshd, root: Path) -> Iterator[Sshd]:
    """An sshd on the original's port with a host key of its own, that would let the real
    client key in, logging every login request (LogLevel DEBUG)."""
    root.mkdir(parents=True)
    keygen(root / "host_ed25519")
    for name in ("client_ed25519", "client_ed25519.pub"):
        shutil.copy(original.client_key.parent / name, root / name)
    with running_sshd(root, port=original.port, extra="LogLevel DEBUG\n") as server:
        yield server


def _sshd_sessions(server: Sshd) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


def test_changed_host_key_on_reconnect_is_refused_and_nothing_is_sent(
    env: Env, linked: Linked, tmp_path: Path
) -> None:
    tunnel = up_json(env, NAME)
    server = linked.server
    sessions = _sshd_sessions(server)
    server.process.terminate()
    server.process.wait(10)
    for session in sessions:
        with contextlib.suppress(psutil.NoSuchProcess):
            session.kill()
    linked.link.cut()
    with _impostor(server, tmp_path / "impostor") as impostor:
        wait_for(lambda: _health(env) == "host-key-changed", timeout=30, interval=0.1)
        record = record_of(env, NAME)
        assert record is not None
        assert _fingerprint(tmp_path / "impostor" / "host_ed25519.pub") in record["detail"]
        text = env.run("status", NAME, check=True).stdout
        assert "host-key-changed" in text and "HAS CHANGED" in text, text
        log = impostor.log.read_text()
        tried = log.count("Connection from")
        assert tried >= 1, log  # the keeper did reach the impostor ...
        assert "userauth-request" not in log, log  # ... and offered it no credentials
        assert "Accepted" not in log, log
        time.sleep(3 * KEEPALIVE)
        assert impostor.log.read_text().count("Connection from") == tried  # it stopped trying
        assert _health(env) == "host-key-changed"
        assert keepers(env), "the keeper must stay, so that `status` can say why"

        done = env.run("down", NAME, check=True)
        assert "warning:" in done.stderr and "host key" in done.stderr.lower(), done.stderr
        assert "kill -TERM" in done.stderr, done.stderr
        wait_for(lambda: not keepers(env), timeout=15)
        assert record_of(env, NAME) is None
        assert "userauth-request" not in impostor.log.read_text()
    assert tunnel["url"]
