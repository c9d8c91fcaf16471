"""End to end through a real sshd: up, the Colab probe from outside, down; keys; re-attach."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from colabtunnel.jupyter.probe import run_probe
from tests.conftest import ACTIVATE as ACTIVATE_LINE
from tests.conftest import (
    PROFILE,
    Env,
    command_of,
    jupyters_under,
    leftover_processes,
    ours_listening,
    wait_for,
)
from tests.sshd import free_port, running_sshd
from tests.tunnel_helpers import root_profile

URL_RE = re.compile(r"^http://localhost:(\d+)/\?token=([A-Za-z0-9_\-]{43,})$", re.M)


def up(env: Env, *args: str) -> tuple[str, int, str]:
    done = env.run("up", PROFILE, *args, check=True)
    match = URL_RE.search(done.stdout)
    assert match, f"no root URL in output: {done.stdout!r} {done.stderr!r}"
    return match.group(0), int(match.group(1)), match.group(2)


def record(env: Env, profile: str = PROFILE) -> dict:
    return json.loads((env.ct_home / "state" / f"{profile}.json").read_text())


def remote_jupyters(env: Env) -> list[psutil.Process]:
    assert env.sshd is not None
    return jupyters_under(env.sshd.remote_home)


def remote_servers(env: Env) -> set[int]:
    """PIDs of the Jupyter servers on the host (not their kernels)."""
    assert env.sshd is not None
    return {p.pid for p in jupyters_under(env.sshd.remote_home, kernels=False)}


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def kernel_ids(port: int, token: str) -> list[str]:
    resp = requests.get(f"http://127.0.0.1:{port}/api/kernels", params={"token": token}, timeout=30)
    resp.raise_for_status()
    return [kernel["id"] for kernel in resp.json()]


def known_host_filed(env: Env) -> bool:
    """The sshd's key is in known_hosts as ssh files it: plain, or hashed where ssh_config says
    HashKnownHosts yes (Debian's /etc/ssh/ssh_config does); `ssh-keygen -F` finds either."""
    assert env.sshd is not None
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{env.sshd.port}", "-f", str(env.known_hosts)],
        capture_output=True,
        text=True,
    )
    return found.returncode == 0 and env.sshd.host_key_pub in found.stdout


def test_up_probe_down(env: Env) -> None:
    _, port, token = up(env)
    # up's own probe kernel is deleted by the keeper after the URL is out
    wait_for(lambda: not kernel_ids(port, token), timeout=15)
    report = run_probe(f"http://127.0.0.1:{port}/", token)
    assert report.ok, report.to_dict()
    execute = next(c for c in report.checks if c.name == "kernel-execute")
    assert "42" in execute.detail
    assert remote_jupyters(env), "no Jupyter running on the host"
    # a kernel left running (as Colab leaves one) must go down with the server
    kernel = requests.post(
        f"http://127.0.0.1:{port}/api/kernels", params={"token": token}, json={}, timeout=60
    )
    assert kernel.status_code == 201
    kernels = [p for p in remote_jupyters(env) if "ipykernel" in command_of(p)]
    assert kernels, "the kernel process was not found on the host"
    done = env.run("down", PROFILE, check=True)
    assert "stopped gpu" in done.stderr
    assert not ours_listening(env, port), "local port still open after down"
    assert not (env.ct_home / "state" / f"{PROFILE}.json").exists()
    wait_for(lambda: not remote_jupyters(env), timeout=15)
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kernels)
    assert not leftover_processes(env)


def test_listeners_are_loopback_only(env: Env) -> None:
    _, port, _ = up(env)
    rec = record(env)
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert ("127.0.0.1", port) in listening
    assert ("127.0.0.1", rec["remote_port"]) in listening
    for ip, p in listening:
        if p in (port, rec["remote_port"]):
            assert ip == "127.0.0.1", f"port {p} listens on {ip}"


def test_token_not_on_command_lines_or_in_logs(env: Env) -> None:
    _, port, token = up(env)
    assert run_probe(f"http://127.0.0.1:{port}/", token, execute=False).ok
    args = subprocess.run(
        ["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True
    ).stdout
    assert token not in args
    assert "jupyter" in args
    assert env.sshd is not None
    logs = 0
    for root in (env.ct_home, env.sshd.remote_home, env.home):
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            if path.suffix == ".log":
                logs += 1
                assert token not in path.read_text(errors="replace"), f"token in log {path}"
            elif token in path.read_text(errors="replace"):
                # the state record, the host's token file, Jupyter's own runtime files: 0600 only
                assert path.stat().st_mode & 0o077 == 0, f"{path} holds the token and is not 0600"
    assert logs >= 2  # the keeper's log and Jupyter's log on the host were both checked
    state_file = env.ct_home / "state" / f"{PROFILE}.json"
    assert oct(state_file.stat().st_mode & 0o777) == "0o600"
    assert oct((env.ct_home / "state").stat().st_mode & 0o777) == "0o700"
    assert oct((env.ct_home / "logs").stat().st_mode & 0o777) == "0o700"


def test_unknown_host_key_refused_then_trust(env: Env) -> None:
    env.known_hosts.write_text("")
    done = env.run("up", PROFILE)
    assert done.returncode == 1, done.stderr
    assert "SHA256:" in done.stderr and "colabtunnel trust gpu" in done.stderr
    assert "Traceback" not in done.stderr
    assert not remote_jupyters(env)
    assert not (env.ct_home / "state" / f"{PROFILE}.json").exists()
    trusted = env.run("trust", PROFILE, "--yes", check=True)
    assert "SHA256:" in trusted.stdout
    assert env.known_hosts.read_text().count("\n") == 1
    assert known_host_filed(env)
    # OpenSSH itself accepts what trust wrote
    ssh = subprocess.run(
        [
            "ssh",
            "-F",
            str(env.home / ".ssh" / "config"),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={env.known_hosts}",
            "-o",
            "BatchMode=yes",
            "gpu-test",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ssh.returncode == 0, ssh.stderr
    up(env)


def test_accept_new_adds_unknown_key(env: Env) -> None:
    env.known_hosts.write_text("")
    up(env, "--accept-new")
    assert known_host_filed(env)


def test_changed_host_key_refused(env: Env, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = (tmp_path / "other.pub").read_text().split()
    env.known_hosts.write_text(f"[127.0.0.1]:{env.sshd.port} {other[0]} {other[1]}\n")  # type: ignore[union-attr]
    for args in (("up", PROFILE), ("up", PROFILE, "--accept-new")):
        done = env.run(*args)
        assert done.returncode == 1
        assert "HAS CHANGED" in done.stderr and "Traceback" not in done.stderr
    assert not remote_jupyters(env)
    assert "other" not in env.known_hosts.read_text()  # never rewritten


def test_up_twice_reuses_and_reattaches_after_keeper_killed(env: Env) -> None:
    # A first port from outside 8888 upward, where the suite's other `up`s pick theirs: the dead
    # keeper's port is then still free for the third `up`, which prefers it unasked.
    url1, port, token = up(env, "--local-port", str(free_port()))
    url2, _, _ = up(env)
    assert url2 == url1
    servers = remote_servers(env)
    rec = record(env)
    os.kill(rec["keeper_pid"], signal.SIGKILL)
    wait_for(lambda: not ours_listening(env, port), timeout=10)
    url3, port3, token3 = up(env)
    assert token3 == token and url3 == url1
    assert remote_servers(env) == servers
    assert run_probe(f"http://127.0.0.1:{port3}/", token3).ok


def test_up_on_a_live_tunnel_opens_no_ssh_connection(env: Env, tmp_path: Path) -> None:
    """The second `up` answers from the state record and the live keeper: the sshd accepts no
    connection meanwhile (its VERBOSE log has a line per connection accepted)."""
    with running_sshd(tmp_path / "counted", extra="LogLevel VERBOSE\n") as server:
        root_profile(env, server, "counted")
        try:
            first = env.run("up", "counted", check=True)
            accepted = server.log.read_text().count("Connection from")
            assert accepted >= 1
            again = env.run("up", "counted", check=True)
            assert "already up" in again.stderr, again.stderr
            assert again.stdout.split()[0] == first.stdout.split()[0]  # the same URL
            assert server.log.read_text().count("Connection from") == accepted
        finally:
            env.run("down", "counted", timeout=120)


def test_foreground_sigint_tears_down(env: Env) -> None:
    proc = env.popen("up", PROFILE, "--foreground")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = URL_RE.search(line)
    assert match, line + (proc.stderr.read() if proc.stderr else "")
    port = int(match.group(1))
    assert port_open(port)
    assert remote_jupyters(env)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert not ours_listening(env, port)
    wait_for(lambda: not remote_jupyters(env), timeout=15)
    assert not (env.ct_home / "state" / f"{PROFILE}.json").exists()


def test_lab_flavour(env: Env) -> None:
    env.write_profile(
        "lab",
        host="gpu-test",
        activate=f"source {Path(os.sys.executable).parent / 'activate'}",
        app="lab",
    )
    done = env.run("up", "lab", "--json", check=True)
    data = json.loads(done.stdout)
    assert data["ok"] and data["tunnel"]["flavour"] == "lab"
    port = data["tunnel"]["local_port"]
    token = data["tunnel"]["url"].split("token=")[1]
    assert data["tunnel"]["url"] == f"http://localhost:{port}/?token={token}"
    assert run_probe(f"http://127.0.0.1:{port}/", token).ok
    env.run("down", "lab", check=True)


@pytest.mark.parametrize("unused", [None])
def test_status_json(env: Env, unused: None) -> None:
    url, port, _ = up(env)
    done = env.run("status", "--json", check=True)
    data = json.loads(done.stdout)
    assert data["schema_version"] == 1 and data["command"] == "status"
    (tunnel,) = data["tunnels"]
    assert tunnel["profile"] == PROFILE and tunnel["url"] == url and tunnel["local_port"] == port
    assert tunnel["health"] == "ok" and "token" not in tunnel
    assert env.run("url", PROFILE, check=True).stdout.strip() == url


def test_host_config_that_disables_the_token_is_refused(env: Env) -> None:
    assert env.sshd is not None
    config_dir = env.sshd.remote_home / ".jupyter"
    config_dir.mkdir(exist_ok=True)
    config = config_dir / "jupyter_server_config.py"
    config.write_text("c.ServerApp.open_browser = False\nc.ServerApp.token = ''\n")
    try:
        done = env.run("up", PROFILE)
        assert done.returncode == 1
        assert f"{config}, line 2" in done.stderr and "disables authentication" in done.stderr
        assert "http://localhost" not in done.stdout
        assert not remote_jupyters(env)
        # the same hazard written so the pre-start scan cannot read its value (it reads every
        # directory `jupyter --paths` lists, JUPYTER_CONFIG_PATH too) is still caught after start
        config.unlink()
        (env.sshd.remote_home / "extra-config").mkdir(exist_ok=True)
        (env.sshd.remote_home / "extra-config" / "jupyter_server_config.py").write_text(
            "import os\nc.IdentityProvider.token = os.environ.get('NO_SUCH_VARIABLE', '')\n"
        )
        env.write_profile(
            "hazard2",
            host="gpu-test",
            activate=f"{ACTIVATE_LINE}\nexport JUPYTER_CONFIG_PATH=$HOME/extra-config",
        )
        done = env.run("up", "hazard2")
        assert done.returncode == 1, done.stdout
        assert "WITHOUT authentication" in done.stderr
        assert "http://localhost" not in done.stdout
        wait_for(lambda: not remote_jupyters(env), timeout=15)
    finally:
        config.unlink(missing_ok=True)


def test_busy_remote_port(env: Env) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        done = env.run("up", PROFILE, "--remote-port", str(busy))
        assert done.returncode == 1
        assert f"port {busy} is already in use" in done.stderr and "remote_port" in done.stderr
        assert not remote_jupyters(env)
        data = json.loads(env.run("up", PROFILE, "--json", check=True).stdout)
        assert data["tunnel"]["remote_port"] != busy


def test_logs_shows_the_remote_jupyter_log_masked(env: Env) -> None:
    missing = env.run("logs", PROFILE)
    assert missing.returncode == 1 and "no Jupyter log" in missing.stderr
    _, _, token = up(env)
    done = env.run("logs", PROFILE, "-n", "200", check=True)
    assert "Jupyter" in done.stdout or "jupyter" in done.stdout
    assert token not in done.stdout
    follow = env.popen("logs", PROFILE, "-f", "-n", "1")
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline()  # one existing line arrives, then it keeps following
        time.sleep(0.5)
        assert follow.poll() is None
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(15)
