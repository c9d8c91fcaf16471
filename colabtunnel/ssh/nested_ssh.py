"""A second SSH session reached through an open one: how a tunnel gets onto a compute node.

Jupyter inside a Slurm job listens on the node's own 127.0.0.1, which the login node cannot
reach. Two ways in, both ending in a paramiko Transport on the node whose direct-tcpip channels
reach that loopback:

- over a command's stdio (`srun --jobid=J --overlap … sshd -i …`): a private sshd for this
  session only, started inside the job, with a host key and an authorized key made for the
  session (SessionKeys). Its host key is pinned, not trusted on first use.
- over a direct-tcpip channel from the login node to the node's own sshd, logged in to with the
  user's own keys; its host key checked against the cluster's known-hosts files.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from colabtunnel.errors import ColabtunnelError
from colabtunnel.ssh import auth_requests, hostkeys
from colabtunnel.ssh.connection import (
    CONNECT_TIMEOUT,
    Deadline,
    Unreachable,
    _hop_socket,
    _login,
    _start,
)
from colabtunnel.ssh.credentials import Credentials

if TYPE_CHECKING:
    import paramiko

    from colabtunnel.ssh.sshtarget import SSHTarget

log = logging.getLogger("colabtunnel")


@dataclass(frozen=True)
class SessionKeys:
    """A host key for the session's sshd and a key to log in to it, made here, never reused."""

    host_private: str  # OpenSSH private key format
    host_public: str  # "ssh-ed25519 AAAA..."
    client_private: str
    client_public: str

    @classmethod
    def generate(cls) -> SessionKeys:
        host_private, host_public = _ed25519()
        client_private, client_public = _ed25519()
        return cls(host_private, host_public, client_private, client_public)

    def client_key(self) -> paramiko.PKey:
        import paramiko

        return paramiko.Ed25519Key.from_private_key(io.StringIO(self.client_private))


def _ed25519() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


def over_command(
    via: paramiko.Transport,
    command: str,
    keys: SessionKeys,
    user: str,
    timeout: float = CONNECT_TIMEOUT,
) -> paramiko.Transport:
    """An SSH session to the sshd that `command` runs on its stdin/stdout (`sshd -i`)."""
    import paramiko

    channel = via.open_session(timeout=timeout)
    channel.exec_command(command)
    transport = paramiko.Transport(channel)
    transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
    try:
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise Unreachable(
                f"the session's sshd on the node did not start: {_stderr(channel) or exc}",
                hint="is OpenSSH's sshd installed on the compute nodes? "
                'otherwise set access = "node-ssh" in the profile\'s slurm table',
            ) from exc
        if not transport.initial_kex_done:
            raise Unreachable(
                f"the session's sshd on the node did not answer within {timeout:.0f} s: "
                f"{_stderr(channel) or 'no message'}",
                hint="the job step may not have started; `colabtunnel logs` shows the job's output",
            )
        presented = transport.get_remote_server_key()
        if f"{presented.get_name()} {presented.get_base64()}" != " ".join(
            keys.host_public.split()[:2]
        ):
            raise ColabtunnelError(
                "the sshd on the node presented a host key other than the one made for this "
                f"session ({hostkeys.fingerprint(presented)}); refusing to log in",
                hint="something else answered the job step; run `colabtunnel down` and `up` again",
            )
        try:
            auth_requests.publickey(transport, user, keys.client_key())
        except paramiko.AuthenticationException as exc:
            raise ColabtunnelError(
                f"the session's sshd on the node refused the session key: {exc}",
                hint="the session directory may not be shared with the node (session_root)",
            ) from exc
    except BaseException:
        transport.close()
        channel.close()
        raise
    return transport


def _stderr(channel: paramiko.Channel) -> str:
    if not channel.recv_stderr_ready():
        return ""
    text = channel.recv_stderr(65536).decode(errors="replace").strip()
    return text.splitlines()[-1] if text else ""


def over_channel(
    via: paramiko.Transport,
    node: SSHTarget,
    known: hostkeys.KnownHosts,
    creds: Credentials,
    profile: str,
    deadline: float | None = None,
) -> paramiko.Transport:
    """An SSH session to `node`'s own sshd through a channel of `via` (the login node), its host
    key checked against `known` (the cluster's known-hosts files), logged in as the user."""
    clock = Deadline(deadline)
    sock = _hop_socket(via, node, clock.left(f"a channel to {node.hostname}:{node.port}"))
    transport = _start(sock, node, clock)
    try:
        key = transport.get_remote_server_key()
        name = hostkeys.host_entry_name(node.host_key_alias or node.hostname, node.port)
        hostkeys.verify(known, name, key, profile)
        _login(transport, node, creds, clock)
    except BaseException:
        transport.close()
        raise
    return transport


Opener = Callable[[tuple[str, int]], "paramiko.Channel"]
