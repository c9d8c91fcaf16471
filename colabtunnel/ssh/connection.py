"""One authenticated SSH connection per profile: sockets, jump hosts, host keys, commands, pings.

The same paramiko Transport carries the remote commands and every forwarded connection, so a user is
asked for a secret (or a one-time code) once per connection, never twice.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colabtunnel.errors import ColabtunnelError
from colabtunnel.ssh import hostkeys, sessions
from colabtunnel.ssh.auth import LoginNeeded
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.sessions import SessionsAhead
from colabtunnel.ssh.window import TunedChannel

if TYPE_CHECKING:
    import paramiko

    from colabtunnel.ssh.sshtarget import SSHTarget

log = logging.getLogger("colabtunnel")

CONNECT_TIMEOUT = 15.0


@dataclass(frozen=True)
class RunResult:
    code: int
    stdout: str
    stderr: str


class Connection:
    """An authenticated transport to one host."""

    def __init__(
        self,
        transport: paramiko.Transport,
        target: SSHTarget,
        hops: list[paramiko.Transport] | None = None,
    ) -> None:
        self.transport = transport
        self.target = target
        self.hops = hops or []  # jump hosts' transports, outermost first
        self.rtt_s = float("inf")  # measured by ping(); the forwarder sizes windows with it
        self.sessions = SessionsAhead(transport, CONNECT_TIMEOUT)

    @property
    def alive(self) -> bool:
        return self.transport.is_active() and all(t.is_active() for t in self.hops)

    def run(self, command: str, stdin: bytes = b"", timeout: float = 60.0) -> RunResult:
        """Run `command` on the host (through the login shell), feed `stdin`, collect output.

        Secrets go in `stdin`, never in `command`: the command is visible in the host's `ps`.
        """
        channel, running = self.sessions.take(command)
        try:
            channel.settimeout(timeout)
            sessions.start(channel, command, stdin, running=running)
            out, err = _drain(channel, timeout)
            code = channel.recv_exit_status()
            if sessions.refused(channel):
                raise _refused(command)
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
        channel, running = self.sessions.take(command)
        try:
            sessions.start(channel, command, stdin, running=running)
            while chunk := channel.recv(65536):
                sink(chunk)
            code = channel.recv_exit_status()
            if sessions.refused(channel):
                raise _refused(command)
            return code
        finally:
            channel.close()

    def open_forward(self, endpoint: tuple[str, int], origin: tuple[str, int]) -> paramiko.Channel:
        """A direct-tcpip channel to `endpoint` as the host sees it (127.0.0.1:port for a
        Jupyter on the host itself)."""
        return self.transport.open_channel(
            "direct-tcpip", endpoint, origin, timeout=CONNECT_TIMEOUT
        )

    def open_tuned_forward(
        self, endpoint: tuple[str, int], origin: tuple[str, int]
    ) -> TunedChannel:
        """The same, with a window that grows to the link's bandwidth-delay product."""
        return TunedChannel(self.open_forward(endpoint, origin), self.link_rtt)

    def link_rtt(self) -> float:
        """The smallest keepalive round trip seen (0 before any): the link's own latency."""
        return self.rtt_s if self.rtt_s != float("inf") else 0.0

    def ping(self, timeout: float) -> bool:
        """Send a keepalive and wait for the answer (any answer) at most `timeout` seconds.

        Each answer also measures the round-trip time; the smallest seen is the link's own.
        """
        if not self.alive:
            return False
        answered = threading.Event()

        def ask() -> None:
            with contextlib.suppress(Exception):
                sent = time.monotonic()
                self.transport.global_request("keepalive@openssh.com", wait=True)
                if self.transport.is_active():
                    self.rtt_s = min(self.rtt_s, time.monotonic() - sent)
                    answered.set()

        threading.Thread(target=ask, name="heartbeat", daemon=True).start()
        return answered.wait(timeout) and self.alive

    def close(self) -> None:
        self.sessions.release()
        for transport in [self.transport, *reversed(self.hops)]:
            transport.close()


def _refused(command: str) -> Exception:
    """What paramiko's exec_command() raised for a refused request."""
    import paramiko

    return paramiko.SSHException(f"the host refused to run {command!r} (channel closed)")


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


class Unreachable(ColabtunnelError):
    """No SSH session could be set up with a hop: DNS, refused, timeout, not SSH."""


class Deadline:
    """One budget for a whole connection attempt, every step of every hop.

    A reconnect has no person to wait for, and a silent link (packets dropped, sockets open) would
    otherwise hold each step for its own full timeout. `at` is a time.monotonic() value; None means
    only the per-step CONNECT_TIMEOUT applies (a first `up`, where a person may be typing a code).
    """

    def __init__(self, at: float | None) -> None:
        self.at = at

    def left(self, waiting_for: str, step: float | None = None) -> float:
        """Seconds the next step may take (at most `step`, ssh_config's ConnectTimeout, else
        CONNECT_TIMEOUT); Unreachable once the budget is spent."""
        step = step or CONNECT_TIMEOUT
        if self.at is None:
            return step
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.expired(waiting_for)
        return min(left, step)

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def expired(self, waiting_for: str) -> Unreachable:
        return Unreachable(
            f"gave up waiting for {waiting_for}: the connection attempt ran out of time",
            hint="the link may be down or silent; colabtunnel keeps retrying with backoff",
        )


HostKeyCheck = Callable[["paramiko.Transport", "SSHTarget", bool], None]


def connect(
    target: SSHTarget,
    profile: str,
    *,
    accept_new: bool = False,
    creds: Credentials | None = None,
    deadline: float | None = None,
    hops: list[SSHTarget] | None = None,
) -> Connection:
    """Open, verify and authenticate a connection to `target`, through its jump hosts if any.

    Each hop is its own SSH session over a direct-tcpip channel of the previous one, with its own
    host-key check and login. Errors name the hop that failed. `deadline` (time.monotonic()) bounds
    the whole attempt: TCP connect, banner, key exchange and login of every hop. `hops`: the
    route (sshtarget.route), when the caller has already built it.
    """
    creds = creds or Credentials(profile)
    clock = Deadline(deadline)

    def verify(transport: paramiko.Transport, hop: SSHTarget, is_target: bool) -> None:
        check_host_key(transport, hop, profile, accept_new=accept_new)

    made: list[Connection] = []  # the jump hosts' channels size their windows by its RTT

    def link_rtt() -> float:
        return made[0].link_rtt() if made else 0.0

    transports = walk(
        target,
        profile,
        verify,
        creds,
        login_target=True,
        deadline=clock,
        hops=hops,
        link_rtt=link_rtt,
    )
    log.info("connected to %s@%s:%d", target.user, target.hostname, target.port)
    connection = Connection(transports[-1], target, transports[:-1])
    made.append(connection)
    # First RTTs for window sizing, before any heartbeat; the smaller of two is less skewed by a
    # server still busy with the login. A reconnect also proves with them, by its deadline, that
    # the new connection answers; a first `up` lets them run beside its first steps (nothing it
    # forwards before the probe needs a window sized yet), which saves two round trips.
    if deadline is None:
        threading.Thread(target=_first_pings, args=(connection,), daemon=True).start()
        return connection
    for _ in range(2):
        if not connection.ping(clock.left("the first keepalive answer")):
            connection.close()
            raise clock.expired("the first keepalive answer")
    return connection


def _first_pings(connection: Connection) -> None:
    for _ in range(2):
        if not connection.ping(CONNECT_TIMEOUT):
            return


def walk(
    target: SSHTarget,
    profile: str,
    verify: HostKeyCheck,
    creds: Credentials,
    *,
    login_target: bool,
    deadline: Deadline | None = None,
    hops: list[SSHTarget] | None = None,
    link_rtt: Callable[[], float] | None = None,
) -> list[paramiko.Transport]:
    """Handshake, verify (and log in to) each hop in turn; return their transports, target last.

    The first hop's bytes come from a TCP connection or its ProxyCommand; each later hop's from a
    direct-tcpip channel of the one before (sshtarget.route builds the list as OpenSSH does).
    With `link_rtt` (the round trip to the target, once known), those channels' windows grow as
    the forwarded ones do: everything the target sends crosses them.
    """
    from colabtunnel.ssh import sshtarget

    clock = deadline or Deadline(None)
    hops = hops or sshtarget.route(target)
    transports: list[paramiko.Transport] = []
    try:
        for index, hop in enumerate(hops):
            is_target = index == len(hops) - 1
            label = "" if is_target else f"jump host {index + 1} ({hop.label}): "
            try:
                first = _first_bytes(hop, transports, clock, link_rtt)
                transports.append(_start(first, hop, clock))
                verify(transports[-1], hop, is_target)
                if is_target and not login_target:
                    break
                _login(transports[-1], hop, creds, clock)
            except ColabtunnelError as exc:
                exc.message = label + exc.message
                exc.args = (exc.message,)
                raise
    except BaseException:
        for transport in reversed(transports):
            transport.close()
        raise
    return transports


def _login(
    transport: paramiko.Transport, hop: SSHTarget, creds: Credentials, clock: Deadline
) -> None:
    from colabtunnel.ssh.auth import authenticate

    if clock.at is not None:  # else paramiko's own 30 s, which a person typing a code needs
        transport.auth_timeout = clock.left(f"the login to {hop.hostname}:{hop.port}")
    try:
        authenticate(transport, hop, creds)
    except ColabtunnelError:
        # paramiko reports a server that stopped answering mid-login as a refused login
        if clock.passed():
            raise clock.expired(f"the login to {hop.hostname}:{hop.port}") from None
        raise


def _first_bytes(
    hop: SSHTarget,
    transports: list[paramiko.Transport],
    clock: Deadline,
    link_rtt: Callable[[], float] | None = None,
) -> Any:
    """Where `hop`'s byte stream comes from: a channel of the previous hop (window tuned when
    `link_rtt` is given), its ProxyCommand, or a TCP connection."""
    from colabtunnel.ssh import proxycommand

    where = f"{hop.hostname}:{hop.port}"
    if transports:
        channel = _hop_socket(transports[-1], hop, clock.left(f"a channel to {where}"))
        return channel if link_rtt is None else TunedChannel(channel, link_rtt)
    if hop.proxy_command:
        clock.left(f"the ProxyCommand for {where}")  # a spent budget starts no process
        return proxycommand.start(hop.proxy_command)
    return _open_socket(hop, clock.left(f"a TCP connection to {where}", hop.connect_timeout))


def _start(sock: Any, target: SSHTarget, clock: Deadline) -> paramiko.Transport:
    import paramiko

    waiting_for = f"the SSH banner and key exchange of {target.hostname}:{target.port}"
    try:
        budget = clock.left(waiting_for, target.connect_timeout)
    except Unreachable:
        sock.close()
        raise
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.handshake_timeout = budget
    options = transport.get_security_options()
    # AES-GCM first: authenticated encryption in one pass, the cheapest strong cipher paramiko has
    # (measured 20-25% less CPU per GB here than its default aes128-ctr + hmac-sha2-256).
    preferred = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    options.ciphers = (*preferred, *(c for c in options.ciphers if c not in preferred))
    try:
        transport.start_client(timeout=budget)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        failure = _proxy_error(sock, f"an SSH banner within {budget:.0f} s")
        transport.close()
        sock.close()  # paramiko leaves it to its thread once the session is dead
        if failure is not None:
            raise failure from exc
        if clock.passed():
            raise clock.expired(waiting_for) from exc
        raise Unreachable(
            f"SSH handshake with {target.hostname}:{target.port} failed: {exc}",
            hint="is that port an SSH server? try `ssh -v` with the same host and port",
        ) from exc
    if not transport.initial_kex_done:  # start_client's timeout returns without raising
        failure = _proxy_error(sock, f"an SSH banner within {budget:.0f} s")
        transport.close()
        sock.close()
        if failure is not None:
            raise failure
        raise (
            clock.expired(waiting_for)
            if clock.at is not None
            else Unreachable(
                f"{target.hostname}:{target.port} did not complete the SSH key exchange "
                f"within {budget:.0f} s",
                hint="is that port an SSH server, and is the link up? try `ssh -v` with the same host",
            )
        )
    return transport


class ProxyLoginNeeded(LoginNeeded):
    """The ProxyCommand waits for a person (a browser sign-in, an expired token)."""


def _proxy_error(sock: Any, waited_for: str) -> ColabtunnelError | None:
    """Why a ProxyCommand gave no session (read before it is stopped); None for other sockets."""
    from colabtunnel.ssh import proxycommand

    if not isinstance(sock, proxycommand.ProxySocket):
        return None
    failure = sock.failure(waited_for)
    kind = ProxyLoginNeeded if failure.needs_person else Unreachable
    return kind(failure.message, hint=failure.hint)


def _hop_socket(via: paramiko.Transport, hop: SSHTarget, timeout: float) -> paramiko.Channel:
    import paramiko

    try:
        return via.open_channel(
            "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=timeout
        )
    except (paramiko.ChannelException, paramiko.SSHException, EOFError) as exc:
        raise Unreachable(
            f"the previous jump host could not connect to {hop.hostname}:{hop.port} ({exc})",
            hint="check that host name and port from the jump host (`ssh -J` with the same chain)",
        ) from exc


def _open_socket(target: SSHTarget, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
    except socket.gaierror as exc:
        raise Unreachable(
            f"cannot resolve host name {target.hostname!r}: {exc.strerror}",
            hint="check `host` in the profile (or HostName in ~/.ssh/config) and your DNS/VPN",
        ) from exc
    except ConnectionRefusedError as exc:
        raise Unreachable(
            f"connection to {target.hostname}:{target.port} refused",
            hint="is sshd running there, and is the port right (profile `port` or ssh_config Port)?",
        ) from exc
    except TimeoutError as exc:
        raise Unreachable(
            f"connection to {target.hostname}:{target.port} timed out after {timeout:.0f} s",
            hint="the host is unreachable from here: check VPN, firewall, or whether you need `jump`",
        ) from exc
    except OSError as exc:
        raise Unreachable(
            f"cannot connect to {target.hostname}:{target.port}: {exc.strerror or exc}",
            hint="check the host name, port and your network",
        ) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


def key_entry_name(target: SSHTarget) -> str:
    return hostkeys.host_entry_name(target.host_key_alias or target.hostname, target.port)


def known_hosts_files(target: SSHTarget) -> tuple[str, ...]:
    """Every file ssh checks a host key against: UserKnownHostsFile, then GlobalKnownHostsFile."""
    return (*target.known_hosts_files, *target.global_known_hosts_files)


def trust_file(target: SSHTarget) -> Path:
    """Where a newly trusted key goes: the first UserKnownHostsFile, as ssh writes it."""
    if not target.known_hosts_files:
        raise ColabtunnelError(
            f"UserKnownHostsFile is none for {target.alias}: there is no file to add a key to",
            hint="set UserKnownHostsFile in ~/.ssh/config to a file, then trust the host",
        )
    return Path(target.known_hosts_files[0])


def check_host_key(
    transport: paramiko.Transport, target: SSHTarget, profile: str, *, accept_new: bool
) -> None:
    key = transport.get_remote_server_key()
    name = key_entry_name(target)
    known = hostkeys.load(known_hosts_files(target))
    try:
        hostkeys.verify(known, name, key, profile)
    except hostkeys.UnknownHostKey:
        policy = (target.strict_host_key_checking or "").lower()
        if not (accept_new or policy == "accept-new"):
            raise
        path = trust_file(target)
        hostkeys.append(path, name, key, hashed=target.hash_known_hosts)
        log.warning("added %s %s to %s", name, hostkeys.fingerprint(key), path)
