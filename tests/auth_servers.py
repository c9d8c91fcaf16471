"""Real servers for the authentication tests (issue 4): each a context manager that cleans up after itself.

- `password_sshd`: an OpenSSH sshd that accepts only passwords, for a system user it creates (root only).
- `encrypted_key` / `authorize_key`: a passphrase-protected client key, authorised on the normal test sshd.
- `kbd_interactive_server`: a paramiko SSH server that logs in only by a one-time code (keyboard-interactive)
  and then serves `exec` and `direct-tcpip` like a real host.
- `jump_chain`: OpenSSH sshds in network namespaces, the target reachable only through 1..n jump hosts.
- `tty_run`: run a command under a pseudo-terminal and answer its prompts.

At the end: ready-made pytest fixtures using them (`password_server`, `password_server_uid0`,
`encrypted_client_key`, `otp_server`, `jump_chain_1`, `jump_chain_2`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import psutil
import pytest

from tests import required_areas
from tests.sshd import SSHD, Sshd, config_text, keygen, manage_users, server_environ

# --------------------------------------------------------------------------------------------------
# shared helpers


def require_root(what: str, area: str = "root") -> None:
    if os.geteuid() != 0:
        required_areas.skip(
            area, f"{what} needs root (it creates system users / network namespaces)"
        )


def _poll(predicate, timeout: float, what: str, interval: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@functools.cache
def _openssh_version() -> tuple[int, int]:
    done = subprocess.run([SSHD, "-V"], capture_output=True, text=True)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stderr + done.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _common_sshd_options() -> str:
    # OpenSSH >= 9.8 penalises sources that fail auth (PerSourcePenalties); every test comes from
    # 127.0.0.1 / the same veth, so a wrong-password test would lock out the following ones.
    return "PerSourcePenalties no\n" if _openssh_version() >= (9, 8) else ""


def _pub_of(path: Path) -> str:
    kind, b64 = path.read_text().split()[:2]
    return f"{kind} {b64}"


def known_hosts_entry(host: str, port: int, host_key_pub: str) -> str:
    """One known_hosts line in OpenSSH's format (`host` alone on port 22, else `[host]:port`)."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {host_key_pub}\n"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start_sshd(
    argv_prefix: Sequence[str], config: Path, log: Path, timeout: float = 20
) -> subprocess.Popen[bytes]:
    """Start `sshd -D -e -f config` and wait until it logs that it listens (works inside a netns,
    where the test process cannot connect to check the banner)."""
    with open(log, "ab") as log_fh:
        start = log_fh.tell()
        process = subprocess.Popen(
            [*argv_prefix, SSHD, "-D", "-e", "-f", str(config)],
            stdout=log_fh,
            stderr=log_fh,
            stdin=subprocess.DEVNULL,
            env=server_environ(),
        )

    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited ({process.returncode}): {log.read_text()}")
        with open(log, "rb") as fh:
            fh.seek(start)
            return b"Server listening on" in fh.read()

    try:
        _poll(listening, timeout, f"sshd ({config}) to listen")
    except BaseException:
        _stop(process)
        raise
    return process


# --------------------------------------------------------------------------------------------------
# 1. password-only sshd


@dataclass
class PasswordSshd:
    port: int
    user: str
    password: str
    host_key_pub: str  # "ssh-ed25519 AAAA..."
    home: Path  # the user's home (its HOME in sessions), removed at the end
    uid0: bool
    process: subprocess.Popen[bytes]
    config: Path
    log: Path
    host: str = "127.0.0.1"

    def known_hosts_line(self, host: str = "127.0.0.1") -> str:
        return known_hosts_entry(host, self.port, self.host_key_pub)

    def log_count(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)

    @property
    def failed_passwords(self) -> int:
        """Password attempts sshd refused so far (to check there is no retry storm)."""
        return self.log_count("Failed password for")

    @property
    def accepted_passwords(self) -> int:
        return self.log_count("Accepted password for")


def _kill_user_processes(user: str, home: Path, uid0: bool) -> None:
    """Processes the test user's sessions left behind: by owner, or for a uid-0 alias by HOME."""
    victims = []
    for proc in psutil.process_iter(["pid", "username"]):
        if proc.pid == os.getpid():
            continue
        try:
            if uid0:
                if proc.environ().get("HOME", "").startswith(str(home)):
                    victims.append(proc)
            elif proc.info["username"] == user:
                victims.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(victims, timeout=10)


USER_PREFIX = "ctpw_"  # ctpw_<owner pid hex>_<random hex>


def cleanup_stale_password_users() -> None:
    """Delete test users left by a password_sshd whose process is gone (a crash)."""
    for entry in pwd.getpwall():
        match = re.fullmatch(rf"{USER_PREFIX}([0-9a-f]+)_[0-9a-f]+", entry.pw_name)
        if match and not psutil.pid_exists(int(match.group(1), 16)):
            home = Path(entry.pw_dir)
            _kill_user_processes(entry.pw_name, home, entry.pw_uid == 0)
            manage_users(["userdel", "-f", "-r", entry.pw_name])
            if home.parent == Path("/home") and home.name == entry.pw_name:
                shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def password_sshd(root: Path, *, uid0: bool = False) -> Iterator[PasswordSshd]:
    """An OpenSSH sshd on a free loopback port that accepts ONLY password auth, for a fresh user.

    The user `ctpw_<pid hex>_<hex>` is created with `useradd -m` and a random password (set through
    chpasswd's stdin) and deleted with `userdel -r` at the end, with anything its sessions left.

    uid0=True makes the user a uid-0 alias (`useradd -o -u 0`, own name, password and home) and sets
    `PermitRootLogin yes`: the venv under /root is not readable by an ordinary user, so a test that
    must run the remote Jupyter from this venv needs it. Skips the test when not root.
    """
    require_root("password_sshd")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    cleanup_stale_password_users()
    user = f"{USER_PREFIX}{os.getpid():x}_{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    home = Path("/home") / user
    with contextlib.ExitStack() as stack:
        useradd = ["useradd", "-m", "-d", str(home), "-s", "/bin/bash", "-c", "colabtunnel test"]
        if uid0:
            useradd += ["-o", "-u", "0", "-g", "0"]
        # user management reads the real password database, not a test's (server_environ)
        manage_users([*useradd, user], check=True)

        def remove_user() -> None:
            _kill_user_processes(user, home, uid0)
            # -f: a uid-0 alias always "has running processes" (ours); the name is what goes
            manage_users(["userdel", "-f", "-r", user])
            if home.exists():
                shutil.rmtree(home, ignore_errors=True)

        stack.callback(remove_user)
        manage_users(["chpasswd"], input=f"{user}:{password}\n", check=True)
        host_key = root / "host_ed25519"
        if not host_key.exists():
            keygen(host_key)
        Path("/run/sshd").mkdir(exist_ok=True)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        sock.close()
        config = root / "sshd_config"
        config.write_text(
            f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile none
StrictModes no
PasswordAuthentication yes
PermitEmptyPasswords no
PubkeyAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
PermitRootLogin {"yes" if uid0 else "no"}
AllowUsers {user}
MaxAuthTries 6
PidFile none
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
ClientAliveInterval 0
{_common_sshd_options()}"""
        )
        log = root / "sshd.log"
        process = _start_sshd([], config, log)
        stack.callback(_stop, process)
        yield PasswordSshd(
            port,
            user,
            password,
            _pub_of(host_key.with_suffix(".pub")),
            home,
            uid0,
            process,
            config,
            log,
        )


# --------------------------------------------------------------------------------------------------
# 2. passphrase-protected client key


@dataclass
class EncryptedKey:
    path: Path  # private key file, encrypted
    passphrase: str
    public_line: str  # "ssh-ed25519 AAAA... comment": append to authorized_keys

    @property
    def pub_path(self) -> Path:
        return self.path.with_name(self.path.name + ".pub")


def encrypted_key(
    path: Path, passphrase: str | None = None, *, key_type: str = "ed25519", pem: bool = False
) -> EncryptedKey:
    """`ssh-keygen -N passphrase`: an encrypted key at `path` (+ `.pub`).

    key_type "ed25519" or "rsa"; pem=True writes the legacy PEM format (RSA only), which paramiko
    decrypts by another code path than the OpenSSH format. The passphrase reaches ssh-keygen on its
    argv (fine for a throwaway test key, not for a real secret).
    """
    passphrase = passphrase or f"pp-{secrets.token_hex(8)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", "colabtunnel-enc"]
    argv += ["-b", "2048"] if key_type == "rsa" else []
    argv += ["-m", "PEM"] if pem else []
    subprocess.run([*argv, "-f", str(path)], check=True)
    os.chmod(path, 0o600)
    return EncryptedKey(path, passphrase, path.with_name(path.name + ".pub").read_text().strip())


def authorized_keys_of(server: Sshd) -> Path:
    """The authorized_keys file the tests/sshd.py server reads (root's keys)."""
    return server.config.parent / "authorized_keys"


@contextlib.contextmanager
def authorize_key(server: Sshd, public_line: str) -> Iterator[None]:
    """Append `public_line` to the test sshd's authorized_keys; remove it again at the end."""
    keys = authorized_keys_of(server)
    line = public_line.strip() + "\n"
    with open(keys, "a") as fh:
        fh.write(line)
    try:
        yield
    finally:
        lines = keys.read_text().splitlines(keepends=True)
        with contextlib.suppress(ValueError):
            lines.remove(line)
        keys.write_text("".join(lines))


# --------------------------------------------------------------------------------------------------
# 3. keyboard-interactive (one-time code) server, paramiko's server side

OTP_PROMPT = "Verification code (from your authenticator app): "
OTP_NAME = "colabtunnel test 2FA"
OTP_INSTRUCTIONS = "Enter the 6-digit code your authenticator app shows."
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


@dataclass
class KbdServer:
    """A paramiko SSH server: keyboard-interactive only, then exec + direct-tcpip like a real host."""

    root: Path
    remote_home: Path
    host_key: paramiko.PKey
    code: str  # the code accepted now; set it (or call new_code()) to change it
    single_use: bool = False  # True: a code works for one login, then needs new_code()
    prompt: str = OTP_PROMPT
    host: str = "127.0.0.1"
    port: int = 0
    prompts_asked: int = 0  # how many times the question was sent (one `up` should ask once)
    logins: int = 0  # successful keyboard-interactive logins
    failed_attempts: int = 0  # wrong answers
    usernames: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # exec'd commands, in order
    errors: list[str] = field(default_factory=list)  # server-side exceptions, for debugging
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _transports: list[paramiko.Transport] = field(default_factory=list, repr=False)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _used: set[str] = field(default_factory=set, repr=False)

    @property
    def host_key_pub(self) -> str:
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    def known_hosts_line(self, host: str = "127.0.0.1") -> str:
        return known_hosts_entry(host, self.port, self.host_key_pub)

    def new_code(self) -> str:
        """Choose a fresh code (the old one stops working) and return it."""
        with self._lock:
            self.code = _new_code()
            return self.code

    @property
    def active_connections(self) -> int:
        with self._lock:
            return sum(1 for t in self._transports if t.is_active())

    def drop_connections(self) -> None:
        """Close every client connection (as a network failure or a server restart would)."""
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.close()

    # -- called by the per-connection interface
    def _asked(self, username: str) -> None:
        with self._lock:
            self.prompts_asked += 1
            self.usernames.append(username)

    def _answer(self, answer: str) -> bool:
        with self._lock:
            ok = secrets.compare_digest(answer.encode(), self.code.encode()) and not (
                self.single_use and self.code in self._used
            )
            if ok:
                self.logins += 1
                self._used.add(self.code)
            else:
                self.failed_attempts += 1
            return ok

    def _session_env(self, peer: tuple[str, int], local: tuple[str, int]) -> dict[str, str]:
        entry = pwd.getpwuid(os.getuid())
        path = (
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            if os.getuid() == 0
            else "/usr/local/bin:/usr/bin:/bin:/usr/games"
        )
        return {  # what OpenSSH's sshd gives a session (no pty), with the test HOME
            "HOME": str(self.remote_home),
            "USER": entry.pw_name,
            "LOGNAME": entry.pw_name,
            "SHELL": entry.pw_shell or "/bin/bash",
            "PATH": path,
            "LANG": "C.UTF-8",
            "SSH_CLIENT": f"{peer[0]} {peer[1]} {local[1]}",
            "SSH_CONNECTION": f"{peer[0]} {peer[1]} {local[0]} {local[1]}",
        }


class _KbdInterface(paramiko.ServerInterface):
    def __init__(self, server: KbdServer, sock: socket.socket) -> None:
        self.server = server
        self.peer = sock.getpeername()[:2]
        self.local = sock.getsockname()[:2]
        self.pending: dict[int, socket.socket] = {}  # direct-tcpip chanid -> connected socket
        # Session channels until their exec/shell request: paramiko keeps channels by weak
        # reference, and one that nothing holds is closed (a client may open several at once).
        self.sessions: dict[int, paramiko.Channel] = {}
        # A session's pump, started once its exec/shell request is answered (answer_first)
        self.pumps: dict[int, threading.Thread] = {}

    # auth: keyboard-interactive only
    def get_allowed_auths(self, username: str) -> str:
        return "keyboard-interactive"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_interactive(self, username: str, submethods: str) -> paramiko.InteractiveQuery:
        self.server._asked(username)
        query = paramiko.InteractiveQuery(OTP_NAME, OTP_INSTRUCTIONS)
        query.add_prompt(self.server.prompt, echo=False)
        return query

    def check_auth_interactive_response(self, responses: Sequence[str]) -> int:
        if len(responses) == 1 and self.server._answer(responses[0]):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    # channels
    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        host, port = destination
        if host not in LOCAL_HOSTS:
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:
            sock = socket.create_connection(("127.0.0.1" if host == "localhost" else host, port), 5)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        sock.settimeout(None)
        self.pending[chanid] = sock
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        return self._start(channel, command.decode(errors="replace"))

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return self._start(channel, None)

    def check_channel_pty_request(self, *args: object) -> bool:
        return False  # no pty support (colabtunnel needs none)

    def check_channel_env_request(self, *args: object) -> bool:
        return False  # like sshd without AcceptEnv

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        return False  # keepalive@openssh.com etc.: a refusal is a valid answer

    def _start(self, channel: paramiko.Channel, command: str | None) -> bool:
        # Called on paramiko's transport thread: start the process, pump on threads of our own.
        self.sessions.pop(channel.get_id(), None)  # the pump threads hold it from here
        server = self.server
        shell = server._session_env(self.peer, self.local)["SHELL"]
        argv = [shell, "-c", command] if command is not None else [shell]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=server.remote_home,
                env=server._session_env(self.peer, self.local),
                start_new_session=True,  # like sshd's session child (setsid)
            )
        except OSError as exc:
            server.errors.append(f"exec {command!r}: {exc}")
            return False
        with server._lock:
            server.commands.append(command or "<shell>")
            server._processes.append(proc)
        self.pumps[channel.get_id()] = threading.Thread(
            target=_run_session, args=(server, channel, proc), daemon=True
        )
        return True

    def answer_first(self, transport: paramiko.Transport) -> None:
        """Start a session's pump only once paramiko has answered its request, as sshd does: a
        command that ends at once would otherwise close the channel before the answer, and the
        client would find its channel closed while it waits for that answer."""

        def handle_request(channel: paramiko.Channel, message: paramiko.Message) -> None:
            paramiko.Channel._handle_request(channel, message)  # type: ignore[attr-defined]
            pump = self.pumps.pop(channel.get_id(), None)
            if pump is not None:
                pump.start()

        transport._channel_handler_table = {  # type: ignore[attr-defined]  # this transport's only
            **transport._channel_handler_table,  # type: ignore[attr-defined]
            paramiko.common.MSG_CHANNEL_REQUEST: handle_request,
        }


def _run_session(server: KbdServer, chan: paramiko.Channel, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin and proc.stdout and proc.stderr
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr

    def feed_stdin() -> None:
        try:
            while data := chan.recv(32768):  # b"" on the client's EOF (shutdown_write) or close
                stdin.write(data)
                stdin.flush()
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    def pump(pipe, send) -> None:  # type: ignore[no-untyped-def]
        fd = pipe.fileno()
        try:
            while data := os.read(fd, 32768):
                send(data)
        except (OSError, EOFError):
            pass  # client went away: closing our end gives the process SIGPIPE, as with sshd
        finally:
            pipe.close()

    threading.Thread(target=feed_stdin, daemon=True).start()
    out = threading.Thread(target=pump, args=(stdout, chan.sendall), daemon=True)
    err = threading.Thread(target=pump, args=(stderr, chan.sendall_stderr), daemon=True)
    out.start()
    err.start()
    out.join()
    err.join()
    code = proc.wait()
    try:
        chan.send_exit_status(code if code >= 0 else 128 - code)
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass
    chan.close()


def _pump_tcp(chan: paramiko.Channel, sock: socket.socket) -> None:
    """Bytes both ways between a direct-tcpip channel and its socket, with half-close."""

    def chan_to_sock() -> None:
        try:
            while data := chan.recv(32768):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # the client's EOF reaches the service
        except OSError:
            pass

    def sock_to_chan() -> None:
        try:
            while not chan.closed:
                readable, _, _ = select.select([sock], [], [], 0.2)
                if not readable:
                    continue
                data = sock.recv(32768)
                if not data:
                    chan.shutdown_write()  # the service's EOF reaches the client
                    return
                chan.sendall(data)
        except (OSError, EOFError, ValueError):
            pass

    up = threading.Thread(target=chan_to_sock, daemon=True)
    up.start()
    sock_to_chan()
    up.join()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    chan.close()


def _serve_connection(server: KbdServer, sock: socket.socket) -> None:
    transport = paramiko.Transport(sock)
    with server._lock:
        server._transports.append(transport)
    try:
        transport.add_server_key(server.host_key)
        iface = _KbdInterface(server, sock)
        iface.answer_first(transport)
        try:
            transport.start_server(server=iface)
        except (paramiko.SSHException, EOFError, OSError):
            return
        while transport.is_active() and not server._stop.is_set():
            chan = transport.accept(0.2)
            if chan is None:
                continue
            tcp = iface.pending.pop(chan.get_id(), None)
            if tcp is not None:
                threading.Thread(target=_pump_tcp, args=(chan, tcp), daemon=True).start()
            else:
                # session channels: their exec request does the work (check_channel_exec_request);
                # held here until then (one whose request came first stays held, closed, till
                # the connection ends)
                iface.sessions[chan.get_id()] = chan
    except Exception as exc:  # keep the server alive, keep the reason
        server.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        transport.close()


@contextlib.contextmanager
def kbd_interactive_server(
    root: Path, *, code: str | None = None, single_use: bool = False, prompt: str = OTP_PROMPT
) -> Iterator[KbdServer]:
    """A paramiko SSH server on 127.0.0.1:<free port> that authenticates ONLY by keyboard-interactive.

    It asks one question, `prompt` (echo off), under the name OTP_NAME and OTP_INSTRUCTIONS, and
    accepts `server.code` (random 6 digits unless given). Any user name is accepted. Logged in, the
    client can `exec` (run with the current user's shell `-c`, HOME and cwd = `server.remote_home`,
    stdin/stdout/stderr piped, exit status sent) and open `direct-tcpip` channels to 127.0.0.1 /
    localhost / ::1 ports. Counts `prompts_asked`, `logins`, `failed_attempts`.
    """
    root.mkdir(parents=True, exist_ok=True)
    key_path = root / "kbd_host_ed25519"
    if not key_path.exists():
        keygen(key_path)
    remote_home = root / "remote-home"
    remote_home.mkdir(exist_ok=True)
    server = KbdServer(
        root,
        remote_home,
        paramiko.Ed25519Key(filename=str(key_path)),
        code or _new_code(),
        single_use=single_use,
        prompt=prompt,
    )
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    server.port = int(listener.getsockname()[1])
    threads: list[threading.Thread] = []

    def accept_loop() -> None:
        while not server._stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            thread = threading.Thread(target=_serve_connection, args=(server, sock), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept_loop, daemon=True, name="kbd-accept")
    acceptor.start()
    try:
        yield server
    finally:
        server._stop.set()
        acceptor.join(5)
        listener.close()
        server.drop_connections()
        for thread in threads:
            thread.join(5)
        for proc in server._processes:  # commands still running: their session (setsid) goes
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


# --------------------------------------------------------------------------------------------------
# 4. jump chains in network namespaces

NS_PREFIX = (
    "ctj-"  # network namespaces: ctj-<pid hex><seq>-<i>; root-side veths: ctj<pid hex><seq>0p
)
JUMP_NET = ipaddress.ip_network("10.201.0.0/16")
_LOCK_FILE = Path("/run/lock/colabtunnel-ctj.lock")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _kill_netns_processes(ns: str) -> None:
    pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
    psutil.wait_procs(procs, timeout=10)


def _owner_pid(tag: str) -> int | None:
    try:
        return int(tag[:-1], 16)  # tag = pid in hex + one seq digit
    except ValueError:
        return None


def cleanup_stale_jump_chains() -> None:
    """Remove namespaces, veths and routes left by a jump_chain whose process is gone (a crash)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if not ns.startswith(NS_PREFIX):
            continue
        pid = _owner_pid(ns[len(NS_PREFIX) :].rsplit("-", 1)[0])
        if pid is None or not psutil.pid_exists(pid):
            _kill_netns_processes(ns)
            _ip("netns", "del", ns, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        match = re.match(r"\d+: (ctj[0-9a-f]+)p[@:]", line)
        if match:
            name = match.group(1)
            pid = _owner_pid(name[3:-1])  # ctj + tag + hop digit (+ p, left out by the regex)
            if pid is None or not psutil.pid_exists(pid):
                _ip("link", "del", name + "p", check=False)
    used = _used_blocks(unreachable=False)
    for block in _used_blocks(unreachable=True) - used:
        _ip("route", "del", "unreachable", f"10.201.{block}.0/24", check=False)


def _used_blocks(unreachable: bool) -> set[int]:
    """Third octets of 10.201.X.* in use in the root namespace (addresses, or unreachable routes)."""
    if unreachable:
        text = _ip("-4", "route", "show", "type", "unreachable", check=False).stdout
    else:
        text = _ip("-4", "-o", "addr", "show", check=False).stdout
    return {int(m.group(1)) for m in re.finditer(r"\b10\.201\.(\d+)\.\d+", text)}


@dataclass
class Hop:
    """One sshd of a chain: a jump host or the target, in its own network namespace."""

    name: str  # "jump1", "jump2", ..., "target"
    netns: str
    address: str  # where the previous hop (or, for jump1, the root namespace) reaches it
    port: int
    host_key_pub: str  # "ssh-ed25519 AAAA..." (each hop its own key)
    remote_home: Path  # HOME of sessions on this hop (SetEnv)
    config: Path
    log: Path
    process: subprocess.Popen[bytes]
    user: str = "root"

    def known_hosts_line(self) -> str:
        return known_hosts_entry(self.address, self.port, self.host_key_pub)

    @property
    def spec(self) -> str:
        """user@host:port, as in ssh -J / ProxyJump."""
        return f"{self.user}@{self.address}:{self.port}"


@dataclass
class JumpChain:
    jumps: list[Hop]  # outermost first: jumps[0] is the one the root namespace reaches
    target: Hop
    client_key: Path  # accepted by every hop for root
    root: Path

    @property
    def hops(self) -> list[Hop]:
        return [*self.jumps, self.target]

    def known_hosts_text(self) -> str:
        return "".join(hop.known_hosts_line() for hop in self.hops)

    @property
    def proxy_jump(self) -> str:
        """The ProxyJump / ssh -J value: "root@10.201.x.2:2201,root@10.201.x.6:2202"."""
        return ",".join(hop.spec for hop in self.jumps)

    def ssh_config(self, alias: str, known_hosts: Path | None = None) -> str:
        """A ~/.ssh/config block for the target under `alias`, with ProxyJump through the jumps."""
        lines = [
            f"Host {alias}",
            f"  HostName {self.target.address}",
            f"  Port {self.target.port}",
            "  User root",
            f"  IdentityFile {self.client_key}",
            "  IdentitiesOnly yes",
            f"  ProxyJump {self.proxy_jump}",
        ]
        if known_hosts:
            lines.append(f"  UserKnownHostsFile {known_hosts}")
        return "\n".join(lines) + "\n"

    def openssh_argv(self, known_hosts: Path, *command: str) -> list[str]:
        """`ssh` through the chain with strict host-key checking. Options go in an -F file because
        ssh passes -F (not -o / -i) on to the `ssh -W` it runs for each jump."""
        cfg = self.root / "ssh_client_config"
        cfg.write_text(
            "Host *\n"
            "  User root\n"
            f"  IdentityFile {self.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 10\n"
            "  LogLevel ERROR\n"
        )
        return [
            "ssh",
            "-F",
            str(cfg),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(self.client_key),
            "-J",
            self.proxy_jump,
            "-p",
            str(self.target.port),
            f"root@{self.target.address}",
            *command,
        ]


@contextlib.contextmanager
def jump_chain(
    root: Path, hops: int = 1, *, ports: Sequence[int] | None = None
) -> Iterator[JumpChain]:
    """OpenSSH sshds in network namespaces: root ↔ jump1 [↔ jump2 …] ↔ target, one veth pair a link.

    Only jump1 is reachable from the root namespace (10.201.X.2); each hop reaches only its
    neighbours; the root namespace gets an `unreachable` route for 10.201.X.0/24, so a direct
    connection to the target fails at once (EHOSTUNREACH). Every sshd has its own host key, takes
    the same client key for root, allows TCP forwarding and gives sessions HOME=<its remote-home>.
    `ports`: one per jump then the target's (default 2201, 2202, … and 22 for the target).
    Skips when not root. Cleans up namespaces, veths, route and processes; stale ones from a
    crashed run first.
    """
    require_root("jump_chain")
    if not 1 <= hops <= 8:
        raise ValueError("1..8 jump hops")
    if not shutil.which("ip"):
        raise RuntimeError("`ip` (iproute2) is missing: run `python -m tests.setup_host`")
    ports = list(ports) if ports else [2201 + i for i in range(hops)] + [22]
    if len(ports) != hops + 1:
        raise ValueError("ports: one per jump host plus the target's")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    client_key = root / "client_ed25519"
    if not client_key.exists():
        keygen(client_key)
    (root / "authorized_keys").write_text(
        client_key.with_name(client_key.name + ".pub").read_text()
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        _LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        with open(_LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # address choice + creation, one chain at a time
            cleanup_stale_jump_chains()
            taken = _used_blocks(False) | _used_blocks(True)
            block = next(b for b in range(1, 255) if b not in taken)
            existing = _ip("netns", "list").stdout
            # tag: owner pid (for the stale clean-up) + a digit free among this process's chains
            tags = [f"{os.getpid():x}{seq:x}" for seq in range(16)]
            free = [tag for tag in tags if f"{NS_PREFIX}{tag}-" not in existing]
            if not free:
                raise RuntimeError("more than 16 jump chains at once in one process")
            tag = free[0]
            names = [f"{NS_PREFIX}{tag}-{i}" for i in range(hops + 1)]  # jump1.., last = target
            for ns in names:
                _ip("netns", "add", ns)
                stack.callback(_ip, "netns", "del", ns, check=False)
                stack.callback(_kill_netns_processes, ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            # link k joins node k-1 (the root namespace for k = 0) and node k: 10.201.B.4k/30,
            # left side .4k+1, right side (node k, where its sshd listens) .4k+2
            for k, ns in enumerate(names):
                left, right = f"ctj{tag}{k}p", f"ctj{tag}{k}q"
                left_ip, right_ip = f"10.201.{block}.{4 * k + 1}", f"10.201.{block}.{4 * k + 2}"
                if k == 0:
                    _ip("link", "add", left, "type", "veth", "peer", "name", right, "netns", ns)
                    stack.callback(_ip, "link", "del", left, check=False)
                    _ip("addr", "add", f"{left_ip}/30", "dev", left)
                    _ip("link", "set", left, "up")
                else:
                    prev = names[k - 1]
                    _ip(
                        *f"-n {prev} link add {left} type veth peer name {right} netns {ns}".split()
                    )
                    _ip("-n", prev, "addr", "add", f"{left_ip}/30", "dev", left)
                    _ip("-n", prev, "link", "set", left, "up")
                _ip("-n", ns, "addr", "add", f"{right_ip}/30", "dev", right)
                _ip("-n", ns, "link", "set", right, "up")
            _ip("route", "add", "unreachable", f"10.201.{block}.0/24")
            stack.callback(_ip, "route", "del", "unreachable", f"10.201.{block}.0/24", check=False)

        built: list[Hop] = []
        for k, ns in enumerate(names):
            name = "target" if k == hops else f"jump{k + 1}"
            node_dir = root / name
            node_dir.mkdir(exist_ok=True)
            host_key = node_dir / "host_ed25519"
            if not host_key.exists():
                keygen(host_key)
            remote_home = node_dir / "remote-home"
            remote_home.mkdir(exist_ok=True)
            address = f"10.201.{block}.{4 * k + 2}"
            config = node_dir / "sshd_config"
            config.write_text(
                config_text(
                    ports[k],
                    root,
                    host_key,
                    remote_home,
                    extra="UseDNS no\nPermitOpen any\nAllowAgentForwarding yes\n"
                    + _common_sshd_options(),
                    address=address,
                    forwarding="yes",
                )
            )
            log = node_dir / "sshd.log"
            process = _start_sshd(["ip", "netns", "exec", ns], config, log)
            stack.callback(_stop, process)
            built.append(
                Hop(
                    name,
                    ns,
                    address,
                    ports[k],
                    _pub_of(host_key.with_suffix(".pub")),
                    remote_home,
                    config,
                    log,
                    process,
                )
            )
        yield JumpChain(built[:-1], built[-1], client_key, root)


def netns_connect(netns: str, host: str, port: int, timeout: float = 2) -> bool:
    """Can a TCP connection to host:port be made from inside `netns`? (bash's /dev/tcp)"""
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "timeout",
            str(timeout),
            "bash",
            "-c",
            f"exec 3<>/dev/tcp/{host}/{port}",
        ],
        capture_output=True,
    )
    return done.returncode == 0


# --------------------------------------------------------------------------------------------------
# 5. run under a pseudo-terminal, answering prompts

_CTTY_SHIM = (
    "import fcntl, os, sys, termios\n"
    "os.setsid()\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


@dataclass
class TtyResult:
    returncode: int
    transcript: str  # everything the terminal showed, "\r\n" turned into "\n"
    answered: list[str]  # the prompts answered, in order

    def count(self, text: str) -> int:
        return self.transcript.count(text)


class TtyTimeout(AssertionError):
    def __init__(self, argv: Sequence[str], timeout: float, transcript: str) -> None:
        super().__init__(
            f"{' '.join(argv)} did not finish within {timeout} s under a pty; transcript:\n"
            f"{transcript}"
        )
        self.transcript = transcript


def tty_run(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    answers: Mapping[str, str | Sequence[str]] | None = None,
    timeout: float = 60,
    cwd: Path | str | None = None,
) -> TtyResult:
    """Run `argv` with a pseudo-terminal as stdin/stdout/stderr AND controlling terminal (so
    getpass and `ssh` prompt on it, and isatty() is true), answering prompts as they appear.

    Each new appearance of a key of `answers` in the output gets the answer + "\\n" (a list value:
    its items in turn, then no more answers). Returns once the process exits (a daemon it left
    holding the terminal does not block). On timeout the process group is killed and TtyTimeout
    (with the transcript) raised. Pitfall: an answer typed before the program turned echo off
    shows up in the transcript; getpass turns echo off before it writes the prompt.
    """
    answers = dict(answers or {})
    queues = {p: [a] if isinstance(a, str) else list(a) for p, a in answers.items()}
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CTTY_SHIM, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            close_fds=True,
        )
    finally:
        os.close(slave)
    buffer = b""
    scanned = 0  # prompts are looked for in transcript[scanned:]
    answered: list[str] = []
    deadline = time.monotonic() + timeout

    def read_available(wait: float) -> bool:
        nonlocal buffer
        readable, _, _ = select.select([master], [], [], wait)
        if not readable:
            return False
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every slave fd is closed
            return False
        buffer += chunk
        return bool(chunk)

    def answer_prompts() -> None:
        nonlocal scanned
        while True:
            text = buffer.decode(errors="replace")
            hits = [(text.find(p, scanned), p) for p in queues if queues[p]]
            hits = [(i, p) for i, p in hits if i >= 0]
            if not hits:
                return
            index, prompt = min(hits)
            scanned = index + len(prompt)
            os.write(master, (queues[prompt].pop(0) + "\n").encode())
            answered.append(prompt)

    try:
        while True:
            got = read_available(0.05)
            answer_prompts()
            if proc.poll() is not None and not got:
                while read_available(0):  # drain what it wrote before exiting
                    pass
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise TtyTimeout(argv, timeout, _clean(buffer))
    finally:
        os.close(master)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return TtyResult(proc.returncode, _clean(buffer), answered)


def _clean(raw: bytes) -> str:
    return raw.decode(errors="replace").replace("\r\n", "\n")


# --------------------------------------------------------------------------------------------------
# pytest fixtures (import these names into conftest.py)


@pytest.fixture(scope="session")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordSshd]:
    """Password-only sshd for an ordinary user `ctpw_<hex>` (skipped when not root)."""
    with password_sshd(tmp_path_factory.mktemp("pwsshd")) as server:
        yield server


@pytest.fixture(scope="session")
def password_server_uid0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordSshd]:
    """Password-only sshd for a uid-0 alias user: it can run this venv's Jupyter (under /root)."""
    with password_sshd(tmp_path_factory.mktemp("pwsshd0"), uid0=True) as server:
        yield server


@pytest.fixture
def encrypted_client_key(tmp_path: Path, sshd: Sshd) -> Iterator[EncryptedKey]:
    """A passphrase-protected ed25519 key authorised on the session `sshd` for this test."""
    key = encrypted_key(tmp_path / "keys" / "id_enc_ed25519")
    with authorize_key(sshd, key.public_line):
        yield key


@pytest.fixture
def otp_server(tmp_path: Path) -> Iterator[KbdServer]:
    """Keyboard-interactive (one-time code) SSH server, fresh counters per test."""
    with kbd_interactive_server(tmp_path / "otp") as server:
        yield server


@pytest.fixture(scope="session")
def jump_chain_1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JumpChain]:
    with jump_chain(tmp_path_factory.mktemp("jump1"), 1) as chain:
        yield chain


@pytest.fixture(scope="session")
def jump_chain_2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JumpChain]:
    with jump_chain(tmp_path_factory.mktemp("jump2"), 2) as chain:
        yield chain
