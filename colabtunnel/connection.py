"""One authenticated SSH connection per profile: socket, host-key check, auth, keepalive, commands.

The same paramiko Transport carries the remote commands and every forwarded connection, so a user is
asked for a secret (or a one-time code) once per connection, never twice.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from colabtunnel import hostkeys
from colabtunnel.errors import ColabtunnelError
from colabtunnel.redact import mask

if TYPE_CHECKING:
    import paramiko

    from colabtunnel.sshconfig import SSHTarget

log = logging.getLogger("colabtunnel")

CONNECT_TIMEOUT = 15.0
DEFAULT_KEY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass(frozen=True)
class RunResult:
    code: int
    stdout: str
    stderr: str


class Connection:
    """An authenticated transport to one host."""

    def __init__(self, transport: paramiko.Transport, target: SSHTarget) -> None:
        self.transport = transport
        self.target = target

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    def run(self, command: str, stdin: bytes = b"", timeout: float = 60.0) -> RunResult:
        """Run `command` on the host (through the login shell), feed `stdin`, collect output.

        Secrets go in `stdin`, never in `command`: the command is visible in the host's `ps`.
        """
        channel = self.transport.open_session(timeout=CONNECT_TIMEOUT)
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = _drain(channel, timeout)
            code = channel.recv_exit_status()
        except TimeoutError as exc:
            raise ColabtunnelError(
                f"remote command did not finish within {timeout:.0f} s on {self.target.alias}",
                hint="the host may be overloaded or the connection stalled; try again",
            ) from exc
        finally:
            channel.close()
        return RunResult(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def stream(self, command: str, stdin: bytes, sink: Callable[[bytes], None]) -> int:
        """Run `command`, passing its stdout to `sink` as it arrives (for `logs -f`)."""
        channel = self.transport.open_session(timeout=CONNECT_TIMEOUT)
        try:
            channel.exec_command(command)
            channel.sendall(stdin)
            channel.shutdown_write()
            while chunk := channel.recv(65536):
                sink(chunk)
            return channel.recv_exit_status()
        finally:
            channel.close()

    def open_forward(self, port: int, origin: tuple[str, int]) -> paramiko.Channel:
        """A direct-tcpip channel to 127.0.0.1:`port` on the host."""
        return self.transport.open_channel(
            "direct-tcpip", ("127.0.0.1", port), origin, timeout=CONNECT_TIMEOUT
        )

    def close(self) -> None:
        self.transport.close()


def _drain(channel: paramiko.Channel, timeout: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr to EOF (stderr on a helper thread so neither pipe can fill and block)."""
    err = bytearray()

    def read_stderr() -> None:
        while chunk := channel.recv_stderr(65536):
            err.extend(chunk)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    out = bytearray()
    while chunk := channel.recv(65536):
        out += chunk
    reader.join(timeout)
    return bytes(out), bytes(err)


def connect(
    target: SSHTarget, profile: str, *, accept_new: bool = False, keepalive: int = 15
) -> Connection:
    """Open, verify and authenticate a connection to `target`. Raise ColabtunnelError with the fix."""
    transport = handshake(target)
    try:
        check_host_key(transport, target, profile, accept_new=accept_new)
        authenticate(transport, target)
        transport.set_keepalive(keepalive)
    except BaseException:
        transport.close()
        raise
    log.info("connected to %s@%s:%d", target.user, target.hostname, target.port)
    return Connection(transport, target)


def handshake(target: SSHTarget) -> paramiko.Transport:
    """TCP connect and SSH key exchange; nothing verified or authenticated yet."""
    import paramiko

    if target.proxy_jump:
        # Connecting directly would silently bypass the bastion the user configured.
        raise ColabtunnelError(
            f"{target.alias} needs ProxyJump {target.proxy_jump!r}, which this version cannot use yet",
            hint='set jump = "none" in the profile if the host is reachable directly',
        )
    transport = paramiko.Transport(_open_socket(target))
    try:
        transport.start_client(timeout=CONNECT_TIMEOUT)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        raise ColabtunnelError(
            f"SSH handshake with {target.hostname}:{target.port} failed: {exc}",
            hint="is that port an SSH server? try `ssh -v` with the same host and port",
        ) from exc
    return transport


def _open_socket(target: SSHTarget) -> socket.socket:
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=CONNECT_TIMEOUT)
    except socket.gaierror as exc:
        raise ColabtunnelError(
            f"cannot resolve host name {target.hostname!r}: {exc.strerror}",
            hint="check `host` in the profile (or HostName in ~/.ssh/config) and your DNS/VPN",
        ) from exc
    except ConnectionRefusedError as exc:
        raise ColabtunnelError(
            f"connection to {target.hostname}:{target.port} refused",
            hint="is sshd running there, and is the port right (profile `port` or ssh_config Port)?",
        ) from exc
    except TimeoutError as exc:
        raise ColabtunnelError(
            f"connection to {target.hostname}:{target.port} timed out after {CONNECT_TIMEOUT:.0f} s",
            hint="the host is unreachable from here: check VPN, firewall, or whether you need `jump`",
        ) from exc
    except OSError as exc:
        raise ColabtunnelError(
            f"cannot connect to {target.hostname}:{target.port}: {exc.strerror or exc}",
            hint="check the host name, port and your network",
        ) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


def key_entry_name(target: SSHTarget) -> str:
    return hostkeys.host_entry_name(target.host_key_alias or target.hostname, target.port)


def check_host_key(
    transport: paramiko.Transport, target: SSHTarget, profile: str, *, accept_new: bool
) -> None:
    key = transport.get_remote_server_key()
    name = key_entry_name(target)
    known = hostkeys.load(target.known_hosts_files)
    try:
        hostkeys.verify(known, name, key, profile)
    except hostkeys.UnknownHostKey:
        policy = (target.strict_host_key_checking or "").lower()
        if not (accept_new or policy == "accept-new"):
            raise
        hostkeys.append(Path(target.known_hosts_files[0]), name, key)
        log.warning(
            "added %s %s to %s", name, hostkeys.fingerprint(key), target.known_hosts_files[0]
        )


def fetch_host_key(target: SSHTarget) -> paramiko.PKey:
    """Handshake only, to learn the key `trust` will show. Nothing is authenticated."""
    transport = handshake(target)
    try:
        return transport.get_remote_server_key()
    finally:
        transport.close()


def authenticate(transport: paramiko.Transport, target: SSHTarget) -> None:
    """Try each method in OpenSSH's order until one is accepted.

    Methods are a list so passphrase-protected keys, passwords and keyboard-interactive slot in here.
    """
    import paramiko

    tried: list[str] = []
    for label, key in _candidate_keys(target):
        tried.append(label)
        try:
            transport.auth_publickey(target.user, key)
        except paramiko.AuthenticationException:
            continue
        except paramiko.SSHException as exc:
            raise ColabtunnelError(f"authentication failed: {mask(str(exc))}") from exc
        if transport.is_authenticated():
            log.info("authenticated as %s with %s", target.user, label)
            return
    what = ", ".join(tried) if tried else "no agent keys and no identity files"
    raise ColabtunnelError(
        f"{target.user}@{target.hostname} refused every key (tried: {what})",
        hint="set `identity_file` in the profile, load the key into ssh-agent, or check "
        "~/.ssh/authorized_keys on the host",
    )


def _candidate_keys(target: SSHTarget) -> list[tuple[str, paramiko.PKey]]:
    import paramiko

    keys: list[tuple[str, paramiko.PKey]] = []
    if not target.identities_only:
        try:
            for agent_key in paramiko.Agent().get_keys():
                keys.append((f"agent key {hostkeys.fingerprint(agent_key)}", agent_key))
        except paramiko.SSHException as exc:
            log.debug("ssh-agent unavailable: %s", exc)
    files = list(target.identity_files) or [
        str(Path(p).expanduser()) for p in DEFAULT_KEY_FILES if Path(p).expanduser().exists()
    ]
    for name in files:
        keys.append((name, _load_key_file(Path(name).expanduser())))
    return keys


def _load_key_file(path: Path) -> paramiko.PKey:
    import paramiko

    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError as exc:
        raise ColabtunnelError(
            f"identity file {path} does not exist",
            hint="fix `identity_file` in the profile (or IdentityFile in ~/.ssh/config)",
        ) from exc
    except PermissionError as exc:
        raise ColabtunnelError(
            f"identity file {path} is not readable", hint="check its permissions"
        ) from exc
    except paramiko.PasswordRequiredException as exc:
        raise ColabtunnelError(
            f"identity file {path} is encrypted and no passphrase is available",
            hint="load it into ssh-agent (`ssh-add`), or store the passphrase with "
            "`colabtunnel secret set PROFILE --passphrase`",
        ) from exc
    except (paramiko.SSHException, ValueError) as exc:
        raise ColabtunnelError(
            f"cannot read identity file {path}: {exc}",
            hint="is it an OpenSSH private key (not the .pub)?",
        ) from exc
