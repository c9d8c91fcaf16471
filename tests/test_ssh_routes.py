"""Every route `ssh` takes, `up` takes too: ProxyCommand, Match blocks, chains built from each
hop's own ProxyJump, the system-wide config, user certificates, failing proxies.

Real OpenSSH servers throughout; where a route matters, the target sits in a network namespace
the laptop (this test) cannot reach directly (tests/auth_servers.py `jump_chain`), and the proxy is
OpenSSH's own client (`ssh -W`), reading the test's ~/.ssh/config as a user's `ssh` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from colabtunnel.jupyter.probe import run_probe
from tests import required_areas
from tests.auth_servers import JumpChain, _start_sshd, jump_chain, require_root
from tests.conftest import ACTIVATE, Env, leftover_processes, wait_for
from tests.sshd import Sshd, free_port, keygen, running_sshd, stop
from tests.test_reliability import Kernel


def _up(env: Env, name: str, *args: str) -> dict:
    done = env.run("up", name, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["tunnel"]


def _token(tunnel: dict) -> str:
    return str(tunnel["url"].split("token=")[1])


def _answers(port: int, token: str) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/api/status"
        return requests.get(url, params={"token": token}, timeout=5).ok
    except requests.RequestException:
        return False


def _append_config(env: Env, text: str) -> None:
    config = env.home / ".ssh" / "config"
    config.write_text(config.read_text() + "\n" + text)


def _hop_block(alias: str, address: str, port: int, key: Path, extra: str = "") -> str:
    return (
        f"Host {alias}\n  HostName {address}\n  Port {port}\n  User root\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n  BatchMode yes\n{extra}"
    )


def _proxies_of(keeper_pid: int) -> list[psutil.Process]:
    """The ProxyCommand processes the keeper runs (`ssh -W ...`)."""
    found = []
    for child in psutil.Process(keeper_pid).children():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            if "-W" in child.cmdline():
                found.append(child)
    return found


def _restart_sshd_dropping_sessions(hop: object) -> None:
    """Stop the hop's sshd and every session it serves, start it again on the same address."""
    process = hop.process  # type: ignore[attr-defined]
    sessions = psutil.Process(process.pid).children(recursive=True)
    stop(process)
    for session in sessions:
        with contextlib.suppress(psutil.NoSuchProcess):
            session.kill()
    hop.process = _start_sshd(  # type: ignore[attr-defined]
        ["ip", "netns", "exec", hop.netns],  # type: ignore[attr-defined]
        hop.config,  # type: ignore[attr-defined]
        hop.log,  # type: ignore[attr-defined]
    )


@pytest.fixture
def own_chain(tmp_path: Path) -> Iterator[JumpChain]:
    """A one-jump chain of this test's own (its target's sshd is restarted)."""
    with jump_chain(tmp_path / "chain", 1) as chain:
        yield chain


def test_proxycommand_with_openssh_reconnects_through_a_new_proxy(
    env: Env, own_chain: JumpChain
) -> None:
    chain, jump, target = own_chain, own_chain.jumps[0], own_chain.target
    _append_config(
        env,
        _hop_block("bastion-pc", jump.address, jump.port, chain.client_key)
        + _hop_block(
            "gpu-pc",
            target.address,
            target.port,
            chain.client_key,
            "  ProxyCommand ssh -W %h:%p bastion-pc\n",
        ),
    )
    env.known_hosts.write_text(env.known_hosts.read_text() + chain.known_hosts_text())
    env.write_profile("pc", host="gpu-pc", activate=ACTIVATE, workdir="~", keepalive=2)
    with pytest.raises(OSError):  # the laptop cannot reach the target directly
        import socket

        socket.create_connection((target.address, target.port), timeout=2).close()

    tunnel = _up(env, "pc")
    port, token = tunnel["local_port"], _token(tunnel)
    report = run_probe(f"http://127.0.0.1:{port}/", token)
    assert report.ok, report.to_dict()
    kernel = Kernel(port, token)
    kernel.run("x = 41")
    (old,) = _proxies_of(tunnel["keeper_pid"])
    keeper = psutil.Process(tunnel["keeper_pid"])
    fds_before = keeper.num_fds()

    _restart_sshd_dropping_sessions(target)

    def reconnected() -> bool:
        proxies = _proxies_of(tunnel["keeper_pid"])
        return bool(proxies) and proxies[0].pid != old.pid and _answers(port, token)

    wait_for(reconnected, timeout=60, interval=0.2)
    assert kernel.run("print(x + 1)").strip() == "42"  # the same kernel, a new websocket
    status = json.loads(env.run("status", "pc", "--json", check=True).stdout)["tunnels"][0]
    assert status["url"] == tunnel["url"] and status["health"] == "ok"
    assert not psutil.pid_exists(old.pid), "the old proxy was not reaped"
    assert keeper.num_fds() <= fds_before + 2
    env.run("down", "pc", check=True)
    assert not leftover_processes(env)


def test_route_only_in_a_match_originalhost_block(env: Env) -> None:
    assert env.sshd is not None
    _append_config(
        env,
        "Match originalhost gpu-m\n"
        + "".join(
            f"  {line}\n"
            for line in (
                "HostName 127.0.0.1",
                f"Port {env.sshd.port}",
                "User root",
                f"IdentityFile {env.sshd.client_key}",
                "IdentitiesOnly yes",
            )
        ),
    )
    env.write_profile("match", host="gpu-m", activate=ACTIVATE)
    tunnel = _up(env, "match")
    assert run_probe(f"http://127.0.0.1:{tunnel['local_port']}/", _token(tunnel)).ok
    env.run("down", "match", check=True)


def test_two_hop_chain_from_the_hops_own_proxyjump_lines(env: Env, jump_chain_2: JumpChain) -> None:
    chain = jump_chain_2
    first, second = chain.jumps
    _append_config(
        env,
        _hop_block("outer-hop", first.address, first.port, chain.client_key)
        + _hop_block(
            "inner-hop", second.address, second.port, chain.client_key, "  ProxyJump outer-hop\n"
        )
        + _hop_block(
            "gpu-chain",
            chain.target.address,
            chain.target.port,
            chain.client_key,
            "  ProxyJump inner-hop\n",
        ),
    )
    env.write_profile("chain", host="gpu-chain", activate=ACTIVATE, workdir="~")
    shown = env.run("profiles", "show", "chain", check=True).stdout
    assert "laptop → outer-hop → inner-hop → gpu-chain" in shown
    # trust walks the chain ssh_config builds: three unknown keys, each asked about in turn
    trusted = env.run("trust", "chain", "--yes", check=True).stdout
    for hop in chain.hops:
        assert f"added [{hop.address}]:{hop.port}" in trusted or f"added {hop.address}" in trusted
    tunnel = _up(env, "chain")
    assert run_probe(f"http://127.0.0.1:{tunnel['local_port']}/", _token(tunnel)).ok
    env.run("down", "chain", check=True)


def _system_include_dir() -> Path:
    config = Path("/etc/ssh/ssh_config")
    if "Include /etc/ssh/ssh_config.d/*.conf" not in config.read_text(errors="replace"):
        required_areas.skip("machine", "its /etc/ssh/ssh_config does not include ssh_config.d")
    return Path("/etc/ssh/ssh_config.d")


@pytest.mark.parametrize("resolver", ["ssh -G", "built-in"])
def test_settings_from_the_system_wide_config(
    env: Env, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/etc/ssh/ssh_config includes ssh_config.d/*.conf: a drop-in there (as admins and packages
    write them) gives the only route to the host; the user's own config never names it."""
    require_root("writing a drop-in to /etc/ssh/ssh_config.d")
    assert env.sshd is not None
    alias = f"ct-system-{os.getpid()}"
    drop_in = _system_include_dir() / f"{alias}.conf"
    drop_in.write_text(
        _hop_block(alias, "127.0.0.1", env.sshd.port, env.sshd.client_key)
        + "  UserKnownHostsFile ~/.ssh/known_hosts\n"
    )
    try:
        env.write_profile("system", host=alias, activate=ACTIVATE)
        if resolver == "built-in":
            # no OpenSSH client on PATH: the built-in reader must find the same settings
            monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
            assert shutil.which("ssh") is None
        shown = json.loads(env.run("profiles", "show", "system", "--json", check=True).stdout)
        assert shown["profile"]["ssh"]["resolver"] == resolver
        assert shown["profile"]["ssh"]["port"] == env.sshd.port
        tunnel = _up(env, "system")
        assert _answers(tunnel["local_port"], _token(tunnel))
        env.run("down", "system", check=True)
    finally:
        drop_in.unlink()


@pytest.fixture
def ca_sshd(tmp_path: Path) -> Iterator[tuple[Sshd, Path]]:
    """An sshd that trusts a user CA and has no authorized key for anyone."""
    ca = tmp_path / "ca"
    keygen(ca)
    with running_sshd(
        tmp_path / "ca-sshd",
        extra=f"TrustedUserCAKeys {ca}.pub\nLogLevel DEBUG1\n",
        authorize_client_key=False,
    ) as server:
        yield server, ca


def _certify(ca: Path, key: Path, certificate: Path | None = None) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "colabtunnel-test", "-n", "root", f"{key}.pub"],
        check=True,
    )
    made = Path(f"{key}-cert.pub")
    if certificate is not None:
        made.rename(certificate)
        return certificate
    return made


def test_user_certificate_with_identities_only(
    env: Env, ca_sshd: tuple[Sshd, Path], tmp_path: Path
) -> None:
    server, ca = ca_sshd
    assert (server.client_key.parent / "authorized_keys").read_text() == ""
    key = tmp_path / "keys" / "id_cert"
    key.parent.mkdir()
    keygen(key)
    _certify(ca, key)  # id_cert-cert.pub beside the key, as ssh-keygen writes it
    env.known_hosts.write_text(env.known_hosts.read_text() + server.known_hosts_line())
    _append_config(
        env,
        _hop_block("gpu-cert", "127.0.0.1", server.port, key)
        + "Host gpu-certfile\n  HostName 127.0.0.1\n"
        + f"  Port {server.port}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
        + f"  CertificateFile {tmp_path / 'elsewhere-cert.pub'}\n",
    )
    env.write_profile("cert", host="gpu-cert", activate=ACTIVATE)
    tunnel = _up(env, "cert")
    assert _answers(tunnel["local_port"], _token(tunnel))
    env.run("down", "cert", check=True)
    # the same, with the certificate only where CertificateFile says
    Path(f"{key}-cert.pub").rename(tmp_path / "elsewhere-cert.pub")
    env.write_profile("certfile", host="gpu-certfile", activate=ACTIVATE)
    doctor = env.run("doctor", "certfile", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["auth"]["status"] == "pass", checks["auth"]
    # and without any certificate: the plain key is refused
    (tmp_path / "elsewhere-cert.pub").unlink()
    doctor = env.run("doctor", "certfile", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["auth"]["status"] == "fail"


def _nothing_running_with(marker: str) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            if marker in " ".join(proc.info["cmdline"] or []):
                return False
    return True


def test_failing_proxycommand_is_one_clear_error(env: Env, tmp_path: Path) -> None:
    marker = f"ct-proxy-fails-{os.getpid()}"
    _append_config(
        env,
        f"Host gpu-broken\n  ProxyCommand sh -c 'echo {marker} no route to bastion >&2; exit 3'\n",
    )
    env.write_profile("broken", host="gpu-broken", activate=ACTIVATE)
    started = time.monotonic()
    done = env.run("up", "broken")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert "ProxyCommand" in lines[0] and "exited with status 3" in lines[0]
    assert f"{marker} no route to bastion" in lines[0]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 15
    assert _nothing_running_with(marker) and not leftover_processes(env)


def test_hanging_proxycommand_gives_up_within_connect_timeout(env: Env) -> None:
    marker = f"ct-proxy-hangs-{os.getpid()}"
    _append_config(
        env,
        "Host gpu-hangs\n  ConnectTimeout 3\n"
        f"  ProxyCommand sh -c 'echo {marker} waiting for approval >&2; exec sleep 300'\n",
    )
    env.write_profile("hangs", host="gpu-hangs", activate=ACTIVATE)
    started = time.monotonic()
    done = env.run("up", "hangs")
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "did not produce an SSH banner within 3 s" in done.stderr
    assert f"{marker} waiting for approval" in done.stderr
    assert took < 12, took
    wait_for(lambda: _nothing_running_with("sleep 300"), timeout=5)
    assert not leftover_processes(env)


def test_proxy_that_wants_a_sign_in_makes_a_reconnect_needs_login(env: Env, tmp_path: Path) -> None:
    """A proxy that worked, then (its credentials expired) asks for a browser sign-in: the keeper
    says needs-login instead of retrying forever; after signing in, `up` brings the same URL."""
    assert env.sshd is not None
    expired = tmp_path / "expired"
    _append_config(
        env,
        _hop_block("loop-bastion", "127.0.0.1", env.sshd.port, env.sshd.client_key)
        + _hop_block(
            "gpu-signin",
            "127.0.0.1",
            env.sshd.port,
            env.sshd.client_key,
            f"  ProxyCommand sh -c 'if [ -e {expired} ]; then echo Please sign in at "
            "https://login.example/device >&2; exit 1; fi; exec ssh -W %h:%p loop-bastion'\n",
        ),
    )
    env.write_profile("signin", host="gpu-signin", activate=ACTIVATE, keepalive=2)
    # A first port from outside 8888 upward, where the suite's other `up`s pick theirs: the old
    # keeper's port is then still free when the new keeper takes it over.
    tunnel = _up(env, "signin", "--local-port", str(free_port()))
    expired.touch()
    for proxy in _proxies_of(tunnel["keeper_pid"]):
        proxy.kill()  # the link drops
    wait_for(
        lambda: (
            (json.loads(env.run("status", "signin", "--json").stdout)["tunnels"] or [{}])[0]
            .get("health", "")
            .startswith("needs-login")
        ),
        timeout=60,
        interval=0.5,
    )
    expired.unlink()
    again = _up(env, "signin")
    assert again["url"] == tunnel["url"]
    assert _answers(again["local_port"], _token(again))
    env.run("down", "signin", check=True)


def test_up_asks_ssh_once_and_status_never(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolution costs a direct host one short `ssh -G`; `status` and `url` run none."""
    real = shutil.which("ssh")
    assert real is not None
    calls = tmp_path / "ssh-calls"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    (wrappers / "ssh").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    (wrappers / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrappers}:{os.environ['PATH']}")
    _up(env, "gpu")
    assert calls.read_text().splitlines() == ["-G -- gpu-test"], calls.read_text()
    env.run("status", check=True)
    env.run("url", "gpu", check=True)
    assert len(calls.read_text().splitlines()) == 1
