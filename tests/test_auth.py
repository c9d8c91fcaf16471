"""Logging in the ways real SSH users do: passwords, encrypted keys, one-time codes, jump hosts,
Include-d ssh_config, hashed known_hosts. Real servers throughout (tests/auth_servers.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from colabtunnel.jupyter.probe import run_probe
from tests.auth_servers import EncryptedKey, JumpChain, PasswordSshd, tty_run
from tests.conftest import ACTIVATE, Env, wait_for
from tests.otp_sshd import OTP_INSTRUCTIONS, OTP_PROMPT, OtpSshd
from tests.sshd import free_port

URL_RE = re.compile(r"http://localhost:(\d+)/\?token=([A-Za-z0-9_\-]{43,})")


def _up_ok(env: Env, name: str) -> tuple[int, str]:
    done = env.run("up", name, "--json")
    assert done.returncode == 0, done.stderr
    tunnel = json.loads(done.stdout)["tunnel"]
    return tunnel["local_port"], tunnel["url"].split("token=")[1]


def _set_secret(env: Env, name: str, value: str, *flags: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "colabtunnel", "secret", "set", name, *flags],
        input=value + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def _secret_nowhere(env: Env, secret: str) -> None:
    """Not in any file we write, not on any command line, not in the keeper's environment."""
    for root in (env.ct_home, env.home):
        for path in root.rglob("*"):
            if path.is_file() and path.name != "keyring.json":
                assert secret not in path.read_text(errors="replace"), f"secret in {path}"
    args = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert secret not in args
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "colabtunnel.keeper" in " ".join(proc.info["cmdline"] or []):
                assert secret not in " ".join(proc.cmdline())
                assert all(secret not in v for v in proc.environ().values())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


# -- passwords ----------------------------------------------------------------------------------


def _password_profile(env: Env, server: PasswordSshd, name: str = "pw") -> None:
    env.known_hosts.write_text(env.known_hosts.read_text() + server.known_hosts_line())
    env.write_profile(name, host="127.0.0.1", port=server.port, user=server.user, activate=ACTIVATE)


def test_password_from_the_keyring(env: Env, password_server_uid0: PasswordSshd) -> None:
    server = password_server_uid0
    _password_profile(env, server)
    _set_secret(env, "pw", server.password)
    accepted = server.accepted_passwords
    port, token = _up_ok(env, "pw")
    assert server.accepted_passwords == accepted + 1  # one login for commands and the forward
    assert run_probe(f"http://127.0.0.1:{port}/", token).ok
    _secret_nowhere(env, server.password)
    env.run("down", "pw", check=True)


def test_wrong_password_is_one_clear_error(env: Env, password_server: PasswordSshd) -> None:
    _password_profile(env, password_server)
    _set_secret(env, "pw", "not-the-password")
    failed = password_server.failed_passwords
    done = env.run("up", "pw")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "password: not accepted" in done.stderr
    assert "colabtunnel secret set pw" in done.stderr
    assert password_server.failed_passwords == failed + 1  # no retry storm


def test_no_password_and_no_terminal_names_the_fix(env: Env, password_server: PasswordSshd) -> None:
    _password_profile(env, password_server)
    done = env.run("up", "pw")
    assert done.returncode == 1
    assert "no terminal" in done.stderr and "colabtunnel secret set pw" in done.stderr


def test_password_prompted_on_a_terminal_and_saved_only_when_asked(
    env: Env, password_server_uid0: PasswordSshd
) -> None:
    server = password_server_uid0
    _password_profile(env, server)
    result = tty_run(
        [sys.executable, "-m", "colabtunnel", "up", "pw"],
        env=dict(os.environ),
        answers={"password: ": server.password, "to the keyring? [y/N]": "n"},
        timeout=120,
    )
    assert result.returncode == 0, result.transcript
    assert URL_RE.search(result.transcript)
    assert server.password not in result.transcript  # not echoed
    keyring_file = Path(os.environ["COLABTUNNEL_TEST_KEYRING"])
    assert not keyring_file.exists() or server.password not in keyring_file.read_text()
    env.run("down", "pw", check=True)


# -- encrypted keys -----------------------------------------------------------------------------


def _key_profile(env: Env, key: EncryptedKey, name: str = "enc") -> None:
    assert env.sshd is not None
    env.write_profile(
        name,
        host="127.0.0.1",
        port=env.sshd.port,
        user="root",
        identity_file=str(key.path),
        activate=ACTIVATE,
    )


def test_encrypted_key_passphrase_from_the_keyring(
    env: Env, encrypted_client_key: EncryptedKey
) -> None:
    _key_profile(env, encrypted_client_key)
    _set_secret(env, "enc", encrypted_client_key.passphrase, "--passphrase")
    port, token = _up_ok(env, "enc")
    assert run_probe(f"http://127.0.0.1:{port}/", token, execute=False).ok
    _secret_nowhere(env, encrypted_client_key.passphrase)
    env.run("down", "enc", check=True)


def test_encrypted_key_without_passphrase_or_terminal(
    env: Env, encrypted_client_key: EncryptedKey
) -> None:
    _key_profile(env, encrypted_client_key)
    done = env.run("up", "enc")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "colabtunnel secret set enc --passphrase" in done.stderr


def test_encrypted_key_prompted_then_saved_to_keyring(
    env: Env, encrypted_client_key: EncryptedKey
) -> None:
    _key_profile(env, encrypted_client_key)
    result = tty_run(
        [sys.executable, "-m", "colabtunnel", "up", "enc"],
        env=dict(os.environ),
        answers={
            "Enter passphrase for key": encrypted_client_key.passphrase,
            "to the keyring? [y/N]": "y",
        },
        timeout=120,
    )
    assert result.returncode == 0, result.transcript
    stored = json.loads(Path(os.environ["COLABTUNNEL_TEST_KEYRING"]).read_text())
    assert stored == {"colabtunnel/enc:passphrase": encrypted_client_key.passphrase}
    env.run("down", "enc", check=True)
    assert env.run("up", "enc").returncode == 0  # no terminal now: the keyring answers
    env.run("down", "enc", check=True)


# -- one-time codes -----------------------------------------------------------------------------


def _otp_profile(env: Env, server: OtpSshd, name: str = "otp") -> None:
    env.known_hosts.write_text(env.known_hosts.read_text() + server.known_hosts_line())
    env.write_profile(
        name, host="127.0.0.1", port=server.port, user="root", activate=ACTIVATE, keepalive=2
    )


def _tty_up(name: str, answers: dict[str, str], *args: str) -> str:
    result = tty_run(
        [sys.executable, "-m", "colabtunnel", "up", name, *args],
        env=dict(os.environ),
        answers=answers,
        timeout=120,
    )
    assert result.returncode == 0, result.transcript
    return result.transcript


def test_one_time_code_asked_once_as_worded_never_stored(env: Env, otp_server: OtpSshd) -> None:
    _otp_profile(env, otp_server)
    code = otp_server.code
    transcript = _tty_up("otp", {OTP_PROMPT: code})
    assert OTP_PROMPT.strip() in transcript and OTP_INSTRUCTIONS in transcript
    assert URL_RE.search(transcript)
    assert transcript.count(OTP_PROMPT.strip()) == 1
    wait_for(lambda: otp_server.logins == 1, timeout=10)  # sshd logs it just after the login
    keyring_file = Path(os.environ["COLABTUNNEL_TEST_KEYRING"])
    assert not keyring_file.exists() or code not in keyring_file.read_text()
    _secret_nowhere(env, code)
    env.run("down", "otp", check=True)


def test_one_time_code_without_terminal(env: Env, otp_server: OtpSshd) -> None:
    _otp_profile(env, otp_server)
    done = env.run("up", "otp")
    assert done.returncode == 1
    assert "Verification code" in done.stderr and "no terminal" in done.stderr


@pytest.mark.parametrize("handlers", ["signal-handlers", "no-signal-handlers"])
def test_reconnect_that_needs_a_new_code_is_needs_login_then_up_relogs(
    env: Env, otp_server: OtpSshd, handlers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if handlers == "no-signal-handlers":  # as on Windows: no SIGUSR1, the keeper handles none
        monkeypatch.setenv("COLABTUNNEL_TEST_NO_SIGNALS", "1")
    _otp_profile(env, otp_server)  # each code works once (HOTP)
    # A first port from outside 8888 upward, where the suite's other `up`s pick theirs: the old
    # keeper's port is then still free when the new keeper takes it over.
    first = _tty_up("otp", {OTP_PROMPT: otp_server.code}, "--local-port", str(free_port()))
    url = URL_RE.search(first).group(0)  # type: ignore[union-attr]
    otp_server.drop_connections()

    def health() -> str:
        (tunnel,) = json.loads(env.run("status", "otp", "--json").stdout)["tunnels"]
        return tunnel["health"]

    wait_for(lambda: health() == "needs-login", timeout=60)
    second = _tty_up("otp", {OTP_PROMPT: otp_server.new_code()})
    assert URL_RE.search(second).group(0) == url  # same token, same port: Colab keeps working
    log = (env.ct_home / "logs" / "otp.log").read_text()
    # Asked over the control channel; a keeper that does not answer within 3 s (a loaded
    # machine) gets SIGUSR1 instead, where there is one: a hand-over either way.
    handed = r"handing the tunnel to a new keeper \((asked: release|SIGUSR1)\); Jupyter stays up"
    assert re.search(handed, log), log
    shown = json.loads(env.run("status", "otp", "--json").stdout)["tunnels"]
    assert [t["health"] for t in shown] == ["ok"], (
        shown,
        (env.ct_home / "logs" / "otp.log").read_text(),
    )
    port, token = int(URL_RE.search(url).group(1)), URL_RE.search(url).group(2)  # type: ignore[union-attr]
    assert run_probe(f"http://127.0.0.1:{port}/", token).ok
    env.run("down", "otp", check=True)


# -- jump hosts ---------------------------------------------------------------------------------


def _jump_profile(env: Env, chain: JumpChain, name: str) -> None:
    """Target alias with ProxyJump; the jump hosts get their key from a wildcard block, as people
    write it (each hop is resolved through ssh_config on its own, like `ssh -J`)."""
    alias = f"{name}-target"
    config = env.home / ".ssh" / "config"
    config.write_text(
        config.read_text()
        + "\n"
        + chain.ssh_config(alias, env.known_hosts)
        + f"\n  IdentityFile {chain.client_key}\n"
        + f"Host 10.201.*\n  User root\n  IdentityFile {chain.client_key}\n"
    )
    env.known_hosts.write_text(env.known_hosts.read_text() + chain.known_hosts_text())
    env.write_profile(name, host=alias, activate=ACTIVATE, workdir="~")


@pytest.mark.parametrize("hops", [1, 2])
def test_proxyjump_chain(env: Env, hops: int, request: pytest.FixtureRequest) -> None:
    chain: JumpChain = request.getfixturevalue(f"jump_chain_{hops}")
    _jump_profile(env, chain, f"jump{hops}")
    port, token = _up_ok(env, f"jump{hops}")
    report = run_probe(f"http://127.0.0.1:{port}/", token)
    assert report.ok, report.to_dict()
    env.run("down", f"jump{hops}", check=True)


def test_each_hop_host_key_is_checked(env: Env, jump_chain_1: JumpChain) -> None:
    _jump_profile(env, jump_chain_1, "jumpkeys")
    jump = jump_chain_1.jumps[0]
    env.known_hosts.write_text(env.known_hosts.read_text().replace(jump.known_hosts_line(), ""))
    done = env.run("up", "jumpkeys")
    assert done.returncode == 1
    assert "jump host 1" in done.stderr and "SHA256:" in done.stderr
    trusted = env.run("trust", "jumpkeys", "--yes", check=True)
    assert f"added [{jump.address}]:{jump.port}" in trusted.stdout
    assert "already trusted" in trusted.stdout  # the target was known
    _up_ok(env, "jumpkeys")
    env.run("down", "jumpkeys", check=True)


# -- ssh_config and known_hosts as people write them -------------------------------------------


def test_include_and_wildcard_host_block(env: Env) -> None:
    assert env.sshd is not None
    conf_d = env.home / ".ssh" / "conf.d"
    conf_d.mkdir()
    (conf_d / "lab.conf").write_text(
        f"Host *.test-lab\n  User root\n  IdentityFile {env.sshd.client_key}\n"
        f"Host gpu.test-lab\n  HostName 127.0.0.1\n  Port {env.sshd.port}\n"
    )
    config = env.home / ".ssh" / "config"
    config.write_text("Include conf.d/*.conf\n" + config.read_text())
    env.write_profile("lab", host="gpu.test-lab", activate=ACTIVATE)
    _up_ok(env, "lab")
    env.run("down", "lab", check=True)


def test_hashed_and_bracketed_known_hosts_with_a_cert_authority_line(env: Env) -> None:
    assert env.sshd is not None
    line = env.sshd.known_hosts_line()
    env.known_hosts.write_text(
        "@cert-authority *.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ2w3gGzS2bT8Dum6m0N3a2ww7M2iKdf5ig7k0qBzm8X\n"
        + line
    )
    subprocess.run(
        ["ssh-keygen", "-H", "-f", str(env.known_hosts)], check=True, capture_output=True
    )
    assert "[127.0.0.1]" not in env.known_hosts.read_text()  # hashed now
    assert "@cert-authority" in env.known_hosts.read_text()
    _up_ok(env, "gpu")


def test_strict_host_key_checking_no_is_not_honoured(env: Env) -> None:
    config = env.home / ".ssh" / "config"
    config.write_text(config.read_text() + "  StrictHostKeyChecking no\n")
    env.known_hosts.write_text("")
    done = env.run("up", "gpu")
    assert done.returncode == 1
    assert "StrictHostKeyChecking=no" in done.stderr and "not honoured" in done.stderr
    assert "colabtunnel trust gpu" in done.stderr
