"""Where keys come from, as ssh takes them: IdentityAgent (a socket path, or none) and
IdentitiesOnly (no agent key that the config does not list). A real ssh-agent and a real sshd
that allows one authentication attempt, so offering a wrong key first fails the login."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import Profile
from colabtunnel.ssh import connection, sshtarget
from colabtunnel.ssh.auth import LoginFailed
from colabtunnel.ssh.credentials import Credentials
from tests.conftest import Env
from tests.sshd import Sshd, keygen, running_sshd, server_environ


@pytest.fixture
def strict_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """One authentication attempt per connection: the first key offered must be the right one."""
    with running_sshd(tmp_path / "strict-sshd", extra="MaxAuthTries 1\n") as server:
        yield server


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    """A real ssh-agent on a socket of its own (not SSH_AUTH_SOCK)."""
    socket_path = tmp_path / "agent.sock"
    process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server_environ(),
    )
    try:
        for _ in range(100):
            if socket_path.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        yield socket_path
    finally:
        process.terminate()
        process.wait(10)


def _add(agent: Path, key: Path) -> None:
    subprocess.run(
        ["ssh-add", "-q", str(key)],
        env={**server_environ(), "SSH_AUTH_SOCK": str(agent)},
        check=True,
        capture_output=True,
    )


def _profile(env: Env, server: Sshd, alias: str, lines: str) -> sshtarget.SSHTarget:
    env.known_hosts.write_text(env.known_hosts.read_text() + server.known_hosts_line())
    config = env.home / ".ssh" / "config"
    config.write_text(
        config.read_text()
        + f"Host {alias}\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n{lines}"
    )
    return sshtarget.resolve(Profile(alias, host=alias))


def test_identity_agent_socket_and_identities_only(
    env: Env, strict_sshd: Sshd, agent: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    keygen(other)
    _add(agent, other)  # offered first by an agent that is not filtered
    _add(agent, strict_sshd.client_key)
    # only the public half on disk: IdentityFile selects which agent key to use, as in ssh
    listed = tmp_path / "listed" / "id_gpu"
    listed.parent.mkdir()
    shutil.copy(f"{strict_sshd.client_key}.pub", f"{listed}.pub")

    target = _profile(
        env,
        strict_sshd,
        "agent-only",
        f"  IdentityAgent {agent}\n  IdentityFile {listed}\n  IdentitiesOnly yes\n",
    )
    assert target.identity_agent == str(agent)
    connection.connect(target, "agent-only", creds=Credentials("agent-only")).close()

    # without IdentitiesOnly, the unlisted agent key goes first and uses the only attempt: the
    # server hangs up (a control: it shows that the filtering above is what made it work)
    unfiltered = _profile(
        env, strict_sshd, "agent-all", f"  IdentityAgent {agent}\n  IdentityFile {listed}\n"
    )
    with pytest.raises(ColabtunnelError, match="authentication failed"):
        connection.connect(unfiltered, "agent-all", creds=Credentials("agent-all"))

    # IdentityAgent none: the agent is not asked at all
    no_agent = _profile(
        env, strict_sshd, "agent-none", f"  IdentityAgent none\n  IdentityFile {listed}\n"
    )
    assert no_agent.identity_agent is None
    with pytest.raises(LoginFailed, match="no usable ssh-agent key"):
        connection.connect(no_agent, "agent-none", creds=Credentials("agent-none"))
