"""Sanity tests of the auth test servers in tests/auth_servers.py (not of colabtunnel)."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from tests.auth_servers import (
    EncryptedKey,
    JumpChain,
    PasswordSshd,
    TtyTimeout,
    cleanup_stale_jump_chains,
    cleanup_stale_password_users,
    encrypted_client_key,
    encrypted_key,
    jump_chain,
    jump_chain_1,
    jump_chain_2,
    netns_connect,
    password_server,
    password_server_uid0,
    password_sshd,
    require_root,
    tty_run,
)
from tests.conftest import wait_for
from tests.otp_sshd import OTP_INSTRUCTIONS, OTP_PROMPT, OtpSshd, otp_server
from tests.sshd import Sshd

__all__ = [  # fixtures used by name
    "encrypted_client_key",
    "jump_chain_1",
    "jump_chain_2",
    "otp_server",
    "password_server",
    "password_server_uid0",
]


def connect(host: str, port: int, host_key_pub: str, sock: object = None) -> paramiko.Transport:
    transport = paramiko.Transport(sock if sock is not None else (host, port))
    transport.start_client(timeout=10)
    key = transport.get_remote_server_key()
    assert f"{key.get_name()} {key.get_base64()}" == host_key_pub
    return transport


def run(transport: paramiko.Transport, command: str, stdin: bytes = b"") -> tuple[int, str, str]:
    chan = transport.open_session(timeout=10)
    chan.settimeout(20)
    chan.exec_command(command)
    if stdin:
        chan.sendall(stdin)
    chan.shutdown_write()
    out = chan.makefile("rb").read()
    err = chan.makefile_stderr("rb").read()
    code = chan.recv_exit_status()
    chan.close()
    return code, out.decode(), err.decode()


# -- password sshd


def test_password_sshd_accepts_only_its_password(password_server: PasswordSshd) -> None:
    srv = password_server
    transport = connect("127.0.0.1", srv.port, srv.host_key_pub)
    try:
        with pytest.raises(paramiko.BadAuthenticationType) as info:
            transport.auth_none(srv.user)
        assert info.value.allowed_types == ["password"]
        before = srv.failed_passwords
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_password(srv.user, "not-" + srv.password)
        assert srv.failed_passwords == before + 1
        assert transport.auth_password(srv.user, srv.password) == []
        code, out, _ = run(transport, "id -un; echo $HOME")
        assert (code, out) == (0, f"{srv.user}\n{srv.home}\n")
    finally:
        transport.close()


def test_password_sshd_uid0_alias_can_run_this_venv(password_server_uid0: PasswordSshd) -> None:
    srv = password_server_uid0
    transport = connect("127.0.0.1", srv.port, srv.host_key_pub)
    try:
        transport.auth_password(srv.user, srv.password)
        code, out, err = run(transport, f"id -u; echo $HOME; {sys.executable} -c 'print(42)'")
        assert (code, out) == (0, f"0\n{srv.home}\n42\n"), err
    finally:
        transport.close()


def test_password_sshd_removes_its_user(tmp_path: Path) -> None:
    with password_sshd(tmp_path) as srv:
        assert pwd.getpwnam(srv.user).pw_dir == str(srv.home)
        user, home, process = srv.user, srv.home, srv.process
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    assert not home.exists()
    assert process.poll() is not None


# -- encrypted key


def test_encrypted_key_needs_passphrase_then_logs_in(
    encrypted_client_key: EncryptedKey, sshd: Sshd
) -> None:
    key = encrypted_client_key
    assert "ENCRYPTED" in key.path.read_text() or "bcrypt" in _openssh_key_kdf(key.path)
    # (PKey.from_path raises TypeError here instead, and wants the passphrase as bytes)
    with pytest.raises(paramiko.PasswordRequiredException):
        paramiko.Ed25519Key.from_private_key_file(str(key.path))
    with pytest.raises(paramiko.SSHException):
        paramiko.Ed25519Key.from_private_key_file(str(key.path), password="wrong")
    pkey = paramiko.Ed25519Key.from_private_key_file(str(key.path), password=key.passphrase)
    assert key.public_line.startswith(f"{pkey.get_name()} {pkey.get_base64()}")
    transport = connect("127.0.0.1", sshd.port, sshd.host_key_pub)
    try:
        assert transport.auth_publickey("root", pkey) == []
        assert run(transport, "echo hi")[:2] == (0, "hi\n")
    finally:
        transport.close()


def _openssh_key_kdf(path: Path) -> str:
    import base64

    body = "".join(line for line in path.read_text().splitlines() if "-----" not in line)
    return base64.b64decode(body)[:64].decode(errors="replace")


def test_encrypted_rsa_pem_key(tmp_path: Path) -> None:
    key = encrypted_key(tmp_path / "id_rsa", key_type="rsa", pem=True)
    assert "Proc-Type: 4,ENCRYPTED" in key.path.read_text()
    with pytest.raises(paramiko.PasswordRequiredException):
        paramiko.RSAKey.from_private_key_file(str(key.path))
    assert paramiko.RSAKey.from_private_key_file(str(key.path), password=key.passphrase)


# -- the one-time-code sshd (tests/otp_sshd.py): OpenSSH, PAM, HOTP


def _kbd_login(server: OtpSshd, answer: str, seen: list[tuple[str, str, list]]):  # type: ignore[no-untyped-def]
    transport = connect("127.0.0.1", server.port, server.host_key_pub)

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        seen.append((title, instructions, prompts))
        return [answer] * len(prompts)

    try:
        transport.auth_interactive("root", handler)
    except BaseException:
        transport.close()
        raise
    return transport


def test_otp_sshd_asks_once_with_its_instructions_and_serves_exec(otp_server: OtpSshd) -> None:
    transport = connect("127.0.0.1", otp_server.port, otp_server.host_key_pub)
    with pytest.raises(paramiko.BadAuthenticationType) as info:
        transport.auth_none("root")
    assert info.value.allowed_types == ["keyboard-interactive"]
    transport.close()

    seen: list[tuple[str, str, list]] = []
    transport = _kbd_login(otp_server, otp_server.code, seen)
    try:
        questions = [(i, p) for _, i, p in seen if p]  # OpenSSH ends with an empty round
        # OpenSSH puts PAM's info message in front of the question, in the prompt itself
        assert questions == [("", [(f"{OTP_INSTRUCTIONS}\n{OTP_PROMPT}", False)])], seen
        wait_for(lambda: otp_server.logins == 1, timeout=10)  # sshd logs it just after
        assert run(transport, "echo $HOME") == (0, f"{otp_server.remote_home}\n", "")
    finally:
        transport.close()


def test_otp_sshd_rejects_a_wrong_code(otp_server: OtpSshd) -> None:
    right = otp_server.code
    with pytest.raises(paramiko.AuthenticationException):
        _kbd_login(otp_server, "000000" if right != "000000" else "111111", [])
    wait_for(lambda: otp_server.failed_attempts == 1, timeout=10)
    assert otp_server.logins == 0


def test_otp_sshd_codes_work_once_and_drop_ends_sessions(otp_server: OtpSshd) -> None:
    first = otp_server.code
    transport = _kbd_login(otp_server, first, [])
    with pytest.raises(paramiko.AuthenticationException):
        _kbd_login(otp_server, first, [])  # used: refused
    second = _kbd_login(otp_server, otp_server.new_code(), [])
    # before the drop: killing the session's sshd may cut its "Accepted" line short
    wait_for(lambda: otp_server.logins == 2, timeout=10)
    otp_server.drop_connections()
    wait_for(lambda: not transport.is_active() and not second.is_active(), timeout=10)


def test_openssh_client_under_tty_answers_kbd_prompt(otp_server: OtpSshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(otp_server.known_hosts_line())
    argv = [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(otp_server.port),
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "PreferredAuthentications=keyboard-interactive",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=1",
        "root@127.0.0.1",
        "echo hi-from-otp",
    ]
    code = otp_server.code
    result = tty_run(argv, os.environ, {OTP_PROMPT: code}, timeout=30)
    assert result.returncode == 0, result.transcript
    assert OTP_PROMPT in result.transcript and OTP_INSTRUCTIONS in result.transcript
    assert "hi-from-otp" in result.transcript
    assert code not in result.transcript  # echo was off
    assert result.transcript.count(OTP_PROMPT) == 1


# -- tty_run


GETPASS_SCRIPT = (
    "import getpass, sys\n"
    "print('tty:', sys.stdin.isatty(), sys.stdout.isatty(), flush=True)\n"
    "code = getpass.getpass('Verification code: ')\n"
    "again = getpass.getpass('Verification code: ')\n"
    "print('got:' + code + ',' + again)\n"
    "sys.exit(7)\n"
)


def test_tty_run_answers_getpass(tmp_path: Path) -> None:
    result = tty_run(
        [sys.executable, "-c", GETPASS_SCRIPT],
        os.environ,
        {"Verification code: ": ["123456", "654321"]},
        timeout=20,
    )
    assert result.returncode == 7, result.transcript
    assert "tty: True True" in result.transcript
    assert result.count("Verification code: ") == 2
    assert "got:123456,654321" in result.transcript
    assert result.count("123456") == 1  # not echoed
    assert result.answered == ["Verification code: "] * 2


def test_tty_run_times_out_when_nobody_answers() -> None:
    started = time.monotonic()
    with pytest.raises(TtyTimeout) as info:
        tty_run([sys.executable, "-c", GETPASS_SCRIPT], os.environ, {}, timeout=1.5)
    assert "Verification code: " in info.value.transcript
    assert time.monotonic() - started < 10


# -- jump chains


def _ssh_through(
    chain: JumpChain, tmp_path: Path, known_hosts_text: str
) -> subprocess.CompletedProcess[str]:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_text)
    return subprocess.run(
        chain.openssh_argv(known_hosts, "echo ok; echo $HOME"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _unreachable_from_root(address: str, port: int) -> None:
    started = time.monotonic()
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=3).close()
    assert time.monotonic() - started < 2  # refused by the route at once, not a slow timeout


def test_jump_chain_1_target_only_through_the_jump(jump_chain_1: JumpChain, tmp_path: Path) -> None:
    chain = jump_chain_1
    jump, target = chain.jumps[0], chain.target
    assert len({hop.host_key_pub for hop in chain.hops}) == 2
    with socket.create_connection((jump.address, jump.port), 5) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-OpenSSH")
    _unreachable_from_root(target.address, target.port)
    done = _ssh_through(chain, tmp_path, chain.known_hosts_text())
    assert (done.returncode, done.stdout) == (0, f"ok\n{target.remote_home}\n"), done.stderr
    # the target's host key is checked too
    done = _ssh_through(chain, tmp_path, jump.known_hosts_line())
    assert done.returncode != 0
    assert "Host key verification failed" in done.stderr


def test_jump_chain_1_with_paramiko_direct_tcpip(jump_chain_1: JumpChain) -> None:
    chain = jump_chain_1
    jump, target = chain.jumps[0], chain.target
    pkey = paramiko.PKey.from_path(chain.client_key)
    outer = connect(jump.address, jump.port, jump.host_key_pub)
    try:
        outer.auth_publickey("root", pkey)
        chan = outer.open_channel(
            "direct-tcpip", (target.address, target.port), ("127.0.0.1", 0), timeout=10
        )
        inner = connect(target.address, target.port, target.host_key_pub, sock=chan)
        try:
            inner.auth_publickey("root", pkey)
            assert run(inner, "echo ok")[:2] == (0, "ok\n")
        finally:
            inner.close()
    finally:
        outer.close()


def test_jump_chain_2_hops(jump_chain_2: JumpChain, tmp_path: Path) -> None:
    chain = jump_chain_2
    first, second = chain.jumps
    target = chain.target
    assert len({hop.host_key_pub for hop in chain.hops}) == 3
    _unreachable_from_root(target.address, target.port)
    _unreachable_from_root(second.address, second.port)
    assert not netns_connect(first.netns, target.address, target.port)
    assert netns_connect(second.netns, target.address, target.port)
    done = _ssh_through(chain, tmp_path, chain.known_hosts_text())
    assert (done.returncode, done.stdout) == (0, f"ok\n{target.remote_home}\n"), done.stderr


def _netns_names() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_jump_chain_cleans_up(tmp_path: Path) -> None:
    with jump_chain(tmp_path, 1, ports=[2022, 2222]) as chain:
        names = [hop.netns for hop in chain.hops]
        processes = [hop.process for hop in chain.hops]
        block = chain.target.address.rsplit(".", 1)[0]
        assert chain.jumps[0].known_hosts_line().startswith(f"[{chain.jumps[0].address}]:2022 ")
        assert all(name in _netns_names() for name in names)
    assert not any(name in _netns_names() for name in names)
    assert all(process.poll() is not None for process in processes)
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert f"{block}." not in routes + addrs


def test_stale_jump_namespaces_are_removed() -> None:
    require_root("the stale-namespace clean-up")
    stale = "ctj-fffffff0-0"  # owner pid 0xfffffff cannot exist (above any pid_max)
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        cleanup_stale_jump_chains()
        assert stale not in _netns_names()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


def test_stale_password_users_are_removed() -> None:
    require_root("the stale-user clean-up")
    stale = "ctpw_fffffff_000000"  # owner pid 0xfffffff cannot exist
    subprocess.run(["useradd", "-m", stale], check=True, capture_output=True)
    try:
        cleanup_stale_password_users()
        with pytest.raises(KeyError):
            pwd.getpwnam(stale)
        assert not Path("/home", stale).exists()
    finally:
        subprocess.run(["userdel", "-f", "-r", stale], capture_output=True)
