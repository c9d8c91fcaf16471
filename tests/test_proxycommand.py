"""The ProxyCommand wrapper on its own: a chatty proxy, its log, and a hundred connections that
leave no process, descriptor or thread behind. In-process, against the real test sshd."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import Profile
from colabtunnel.ssh import connection, proxycommand, sshtarget
from colabtunnel.ssh.credentials import Credentials
from tests.conftest import Env, wait_for

# A relay in plain bash: fast to start, so a hundred connections take seconds, not minutes.
RELAY = "bash -c 'exec 3<>/dev/tcp/%h/%p; cat <&3 & exec cat >&3'"


def _relay_profile(env: Env, alias: str, proxy: str) -> sshtarget.SSHTarget:
    assert env.sshd is not None
    config = env.home / ".ssh" / "config"
    config.write_text(
        config.read_text()
        + f"Host {alias}\n  HostName 127.0.0.1\n  Port {env.sshd.port}\n  User root\n"
        + f"  IdentityFile {env.sshd.client_key}\n  IdentitiesOnly yes\n  ProxyCommand {proxy}\n"
    )
    return sshtarget.resolve(Profile(alias, host=alias))


@pytest.fixture(params=["shell", "windows-way"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: through the user's shell (POSIX), and as on Windows (the command line
    started without a shell, its pipes relayed to the socket by threads)."""
    monkeypatch.setattr(proxycommand, "WINDOWS_WAY", request.param == "windows-way")
    return str(request.param)


def _counts() -> tuple[int, int, int]:
    me = psutil.Process()
    return (
        len(os.listdir("/proc/self/fd")),
        len(me.children(recursive=True)),
        threading.active_count(),
    )


def test_hundred_connections_leave_no_process_fd_or_thread(env: Env, way: str) -> None:
    target = _relay_profile(env, "relay-gpu", RELAY)
    creds = Credentials("relay")
    connection.connect(target, "relay", creds=creds).close()  # warm-up: imports, caches
    time.sleep(0.5)
    before = _counts()
    started = time.monotonic()
    for _ in range(100):
        conn = connection.connect(target, "relay", creds=creds)
        assert conn.run("echo ok").stdout == "ok\n"
        conn.close()
    took = time.monotonic() - started

    def settled() -> bool:
        fds, children, threads = _counts()
        return fds <= before[0] and children <= before[1] and threads <= before[2] + 1

    # A leak never settles; 30 s is for a loaded machine (the suite runs 4 workers on 2 cores),
    # where the last proxies and transport threads take seconds to be reaped.
    wait_for(settled, timeout=30, interval=0.2, why=lambda: f"{before} -> {_counts()}")
    print(f"100 connections ({way}) in {took:.1f} s; fds/children/threads {before}")


def _logged_through(env: Env, caplog: pytest.LogCaptureFixture, name: str, proxy: str) -> str:
    """Log in through `proxy`, run a command, close: what the log holds once close returned."""
    target = _relay_profile(env, f"{name}-gpu", proxy)
    with caplog.at_level(logging.INFO, logger="colabtunnel"):
        conn = connection.connect(target, name, creds=Credentials(name))
        try:
            assert conn.run("echo ok").stdout == "ok\n"
        finally:
            conn.close()
        return caplog.text


def test_a_chatty_proxy_does_not_block_and_its_stderr_is_logged(
    env: Env, caplog: pytest.LogCaptureFixture, way: str
) -> None:
    # 2 MB on stderr before any byte of SSH: far more than a pipe holds (64 KiB); a proxy whose
    # stderr nobody reads would stop here, and the banner would never come.
    chatty = (
        "bash -c 'for i in $(seq 20000); do echo \"proxy chatter line $i: "
        '................................................................................" >&2;'
        " done; exec 3<>/dev/tcp/%h/%p; cat <&3 & exec cat >&3'"
    )
    assert "proxy: proxy chatter line 20000:" in _logged_through(env, caplog, "chatty", chatty)


def test_what_a_proxy_says_as_it_ends_is_logged_before_close_returns(
    env: Env, caplog: pytest.LogCaptureFixture, way: str
) -> None:
    # 600 lines (about 50 KiB: the pipe holds them all, the proxy does not wait) once our end
    # has closed, then it exits: the lines are the reader thread's to log, and close waits.
    parting = (
        "bash -c 'exec 3<>/dev/tcp/%h/%p; cat <&3 & cat >&3; for i in $(seq 600); do echo "
        '"proxy parting line $i: ........................................................" >&2;'
        " done'"
    )
    assert "proxy: proxy parting line 600:" in _logged_through(env, caplog, "parting", parting)


def test_proxy_runs_through_the_users_shell(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ssh_config(5): the command is run with the user's shell, `exec`-ed."""
    shell = tmp_path / "myshell"
    seen = tmp_path / "seen"
    shell.write_text(f'#!/bin/bash\necho "$@" > {seen}\nexec /bin/bash "$@"\n')
    shell.chmod(0o755)
    monkeypatch.setenv("SHELL", str(shell))
    target = _relay_profile(env, "shell-gpu", RELAY)
    connection.connect(target, "shell", creds=Credentials("shell")).close()
    assert seen.read_text().startswith("-c exec bash -c ")


def test_the_windows_way_runs_no_shell(env: Env, tmp_path: Path) -> None:
    """Windows' OpenSSH starts the line itself: shell syntax is not read, the program is run with
    its words as arguments. A line that needs a shell says so, in one line."""
    seen = tmp_path / "seen"
    recorder = tmp_path / "record-args"
    recorder.write_text(
        f'#!/bin/bash\nprintf "%s\\n" "$@" > {seen}\nexec 3<>/dev/tcp/"$1"/"$2"; cat <&3 & exec cat >&3\n'
    )
    recorder.chmod(0o755)
    proxycommand.WINDOWS_WAY = True
    try:
        target = _relay_profile(env, "direct-gpu", f"{recorder} %h %p $HOME;x")
        connection.connect(target, "direct", creds=Credentials("direct")).close()
        assert seen.read_text().splitlines()[2] == "$HOME;x"  # no shell expanded or split it
        with pytest.raises(ColabtunnelError, match="cannot run ProxyCommand") as failed:
            proxycommand.start("no-such-proxy-program %h")
        assert "full path" in (failed.value.hint or "")
    finally:
        proxycommand.WINDOWS_WAY = sys.platform == "win32"


def test_a_proxy_that_exits_at_once_is_one_clear_error_within_seconds(env: Env, way: str) -> None:
    """Its exit must reach paramiko as EOF at once (the relay passes it on as Windows' way), not
    after a banner timeout; its last words are the message."""
    target = _relay_profile(env, "broken-gpu", "sh -c 'echo no route to bastion >&2; exit 3'")
    started = time.monotonic()
    with pytest.raises(ColabtunnelError) as failed:
        connection.connect(target, "broken", creds=Credentials("broken"))
    took = time.monotonic() - started
    assert "exited with status 3" in failed.value.message
    assert "no route to bastion" in failed.value.message
    assert took < 5, took
