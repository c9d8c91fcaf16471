"""Real servers for the authentication tests (issue 4): each a context manager that cleans up after itself.

- `password_sshd`: an OpenSSH sshd that accepts only passwords, for a system user it creates (root only).
- `encrypted_key` / `authorize_key`: a passphrase-protected client key, authorised on the normal test sshd.
- `jump_chain`: OpenSSH sshds in network namespaces, the target reachable only through 1..n jump hosts.
- `tty_run`: run a command under a pseudo-terminal and answer its prompts.

At the end: ready-made pytest fixtures using them (`password_server`, `password_server_uid0`,
`encrypted_client_key`, `jump_chain_1`, `jump_chain_2`).
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
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests import required_areas
from tests.sshd import SSHD, Sshd, config_text, keygen, manage_users, server_environ, stop

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
        stop(process)
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
        stack.callback(stop, process)
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
            stack.callback(stop, process)
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


@pytest.fixture(scope="session")
def jump_chain_1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JumpChain]:
    with jump_chain(tmp_path_factory.mktemp("jump1"), 1) as chain:
        yield chain


@pytest.fixture(scope="session")
def jump_chain_2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JumpChain]:
    with jump_chain(tmp_path_factory.mktemp("jump2"), 2) as chain:
        yield chain
