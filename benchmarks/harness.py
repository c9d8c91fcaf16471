"""The benchmark's machinery: child processes (that never outlive the harness), the throwaway sshd
and the HOME it is reached from, the load generator, CPU and memory sampling."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.server import recv_exact
from tests.sshd import config_text, passwd_home_environ

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SETPRIV = shutil.which("setpriv")
BLOCK = 1 << 20
PAYLOAD = memoryview(bytes(range(256)) * (BLOCK // 256))


def die_with_me(argv: list[str]) -> list[str]:
    """Prefix a non-Python child so the kernel sends it SIGTERM if the harness dies (even SIGKILL)."""
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv] if SETPRIV else argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid


class Children:
    """Every process the harness starts, stopped in reverse order by `close()` (also on errors)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.live: list[Child] = []

    def python(
        self, name: str, module: str, *args: str, env: dict[str, str] | None = None
    ) -> Child:
        """A `python -m benchmarks.X` child: it announces itself with one JSON line on stdout and
        exits when its stdin (held here) closes."""
        child = self._spawn(name, [PYTHON, "-m", module, *args], env, announces=True)
        child.info = self._announcement(child, timeout=60)
        return child

    def command(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        return self._spawn(name, die_with_me(argv), env, announces=False)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None, announces: bool
    ) -> Child:
        """Start `argv` in a session of its own, stderr to logs/NAME.log. An announcing child
        (benchmarks.*) gets a stdin pipe as its lifeline and a stdout pipe to announce on; a
        command logs both streams and lives by die_with_me()."""
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if announces else subprocess.DEVNULL,
            stdout=subprocess.PIPE if announces else log,
            stderr=log,
            cwd=REPO if announces else None,
            env=env,
            start_new_session=True,
        )
        log.close()
        child = Child(name, popen)
        self.live.append(child)
        return child

    def _announcement(self, child: Child, timeout: float) -> dict[str, Any]:
        assert child.popen.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(child.popen.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"{child.name} did not start: {self.log_tail(child.name)}")
        line = child.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"{child.name} exited: {self.log_tail(child.name)}")
        return json.loads(line)

    def log_tail(self, name: str, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(
                (self.logdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""

    def stop(self, child: Child, timeout: float = 10) -> None:
        if child in self.live:
            self.live.remove(child)
        popen = child.popen
        if popen.stdin is not None:
            with contextlib.suppress(OSError):
                popen.stdin.close()  # python children exit on their own
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout)
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()

    def close(self) -> None:
        for child in reversed(list(self.live)):
            with contextlib.suppress(Exception):
                self.stop(child, timeout=5)


def wait_port(port: int, child: Child | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.popen.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(10)
            if s.recv(1) == b"H":  # the test server's hello: the whole path is up
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers through 127.0.0.1:{port}")


# -- the "GPU host": sshd with throwaway keys ----------------------------------------------------


@dataclass
class Sshd:
    port: int
    host_key_pub: str
    client_key: Path
    remote_home: Path
    child: Child
    log: Path


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ctbench", "-f", str(path)],
        check=True,
    )


def start_sshd(
    children: Children, root: Path, name: str = "sshd", client_key: Path | None = None
) -> Sshd:
    """/usr/sbin/sshd -D on a free loopback port (the set-up of tests/sshd.py), logging every
    connection it accepts; `client_key`: the key it lets in (default: one made for it)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    host_key = root / "host_ed25519"
    keygen(host_key)
    if client_key is None:
        client_key = root / "client_ed25519"
        keygen(client_key)
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    remote_home = root / "remote-home"
    remote_home.mkdir()
    Path("/run/sshd").mkdir(exist_ok=True)
    port = free_port()
    config = root / "sshd_config"
    extra = "MaxStartups 100\nLogLevel VERBOSE\n"  # VERBOSE: "Connection from" per connection
    config.write_text(config_text(port, root, host_key, remote_home, extra=extra))
    child = children.command(name, [SSHD, "-D", "-e", "-f", str(config)])
    deadline = time.monotonic() + 20
    while True:
        if child.popen.poll() is not None:
            raise RuntimeError(f"sshd exited: {children.log_tail(name)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(2)
            if s.recv(64).startswith(b"SSH-"):
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not answer: {children.log_tail(name)}")
        time.sleep(0.05)
    pub = (root / "host_ed25519.pub").read_text().split()
    return Sshd(
        port, f"{pub[0]} {pub[1]}", client_key, remote_home, child, children.logdir / f"{name}.log"
    )


def connections_accepted(sshd: Sshd) -> int:
    """How many TCP connections this sshd has accepted so far (its log says each)."""
    with contextlib.suppress(OSError):
        return sshd.log.read_text(errors="replace").count("Connection from")
    return 0


@dataclass(frozen=True)
class Route:
    """One way from the laptop to the host: an ssh_config alias (and colabtunnel profile of the
    same name), the port the SSH client dials, and the jump host's port when there is one."""

    alias: str
    port: int  # what the client connects to (sshd, a delay proxy in front of it, or of the jump)
    jump_port: int | None = None  # the jump host as the client reaches it; then `port` is sshd's


@dataclass
class World:
    """A HOME and COLABTUNNEL_HOME of the benchmark's own, pointing at the sshd (directly, through
    delay proxies, through a jump host), so nothing touches the user's files."""

    root: Path
    home: Path
    ct_home: Path
    sshd: Sshd
    known_hosts: Path
    ssh_client_config: Path  # for OpenSSH's own client: the same key, strict host keys
    routes: dict[str, Route]
    env: dict[str, str]

    def profile_for(self, link: str) -> str:
        return self.routes[link].alias


def make_world(
    root: Path,
    sshd: Sshd,
    links: dict[str, int],
    jump: Sshd | None = None,
    jump_links: dict[str, int] | None = None,
) -> World:
    """`links`: link name -> port the client dials for the sshd (itself on loopback, or a delay
    proxy); `jump_links`: link name -> port that reaches the jump host, for routes through it."""
    home = root / "home"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True)
    os.chmod(ssh_dir, 0o700)
    routes = {
        link: Route(f"bench-{link}" if link != "loopback" else "bench", port)
        for link, port in links.items()
    }
    keys = [(port, sshd.host_key_pub) for port in links.values()]
    config = [f"Host {r.alias}\n  HostName 127.0.0.1\n  Port {r.port}\n" for r in routes.values()]
    for link, port in (jump_links or {}).items():
        assert jump is not None
        route = Route(f"bench-{link}", sshd.port, jump_port=port)
        routes[link] = route
        keys.append((port, jump.host_key_pub))
        config.append(
            f"Host jumphost-{link}\n  HostName 127.0.0.1\n  Port {port}\n"
            f"Host {route.alias}\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
            f"  ProxyJump jumphost-{link}\n"
        )
    known_hosts = ssh_dir / "known_hosts"
    known_hosts.write_text(
        "".join(
            f"[127.0.0.1]:{port} {key}\n" for port, key in [(sshd.port, sshd.host_key_pub), *keys]
        )
    )
    common = f"Host *\n  User root\n  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n"
    (ssh_dir / "config").write_text("".join(config) + common)
    # OpenSSH's client (the `ssh -L` path) reads a file of its own, passed to every jump too.
    client_config = root / "ssh_client_config"
    client_config.write_text(
        f"{common}  IdentityAgent none\n  BatchMode yes\n  StrictHostKeyChecking yes\n"
        f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        "  UpdateHostKeys no\n  ControlMaster no\n  ControlPath none\n"
    )
    ct_home = root / "ct"
    ct_home.mkdir()
    activate = f"source {VENV_BIN / 'activate'}"
    (ct_home / "profiles.toml").write_text(
        "".join(
            f'[profiles.{r.alias}]\nhost = "{r.alias}"\nactivate = "{activate}"\nworkdir = "~"\n\n'
            for r in routes.values()
        )
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SSH_AUTH_SOCK", "JUPYTER_TOKEN", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR")
        and not key.startswith("BENCH_")
    }
    env.update(
        # ssh (colabtunnel's `ssh -G` too) reads ~ from the password database, not HOME
        **passwd_home_environ(home, root),
        HOME=str(home),
        COLABTUNNEL_HOME=str(ct_home),
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return World(root, home, ct_home, sshd, known_hosts, client_config, routes, env)


def ssh_forward_argv(world: World, link: str, local_port: int, remote_port: int) -> list[str]:
    """The OpenSSH client exactly as a user would forward: -N -L (and -J through a jump host),
    strict host keys, batch mode."""
    route = world.routes[link]
    jump = ["-J", f"root@127.0.0.1:{route.jump_port}"] if route.jump_port else []
    return [
        SSH,
        "-F",
        str(world.ssh_client_config),
        "-v",
        "-N",
        "-L",
        f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}",
        *jump,
        "-p",
        str(route.port),
        "root@127.0.0.1",
    ]


def ssh_cipher(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines():
        if "kex: server->client cipher:" in line:
            parts = line.split()
            cipher = parts[parts.index("cipher:") + 1]
            mac = parts[parts.index("MAC:") + 1]
            return cipher if mac == "<implicit>" else f"{cipher} + {mac}"
    return "?"


# -- load generator ------------------------------------------------------------------------------


def _open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if recv_exact(sock, 1) != b"H":
        raise RuntimeError("unexpected hello")
    return sock


def download(port: int, n: int) -> float:
    """Seconds to receive n bytes, from the request being sent (the path is already set up)."""
    with _open(port) as sock:
        buf = memoryview(bytearray(BLOCK))
        start = time.perf_counter()
        sock.sendall(b"D" + struct.pack("!Q", n))
        got = 0
        while got < n:
            k = sock.recv_into(buf)
            if not k:
                raise EOFError(f"download ended after {got} of {n} bytes")
            got += k
        return time.perf_counter() - start


def upload(port: int, n: int) -> float:
    """Seconds from the first byte sent to the server's acknowledgement of the n-th."""
    with _open(port) as sock:
        start = time.perf_counter()
        sock.sendall(b"U" + struct.pack("!Q", n))
        left = n
        while left > 0:
            k = min(left, BLOCK)
            sock.sendall(PAYLOAD[:k])
            left -= k
        if recv_exact(sock, 1) != b"K":
            raise RuntimeError("no upload acknowledgement")
        return time.perf_counter() - start


def pingpong(port: int, count: int, size: int = 64, warmup: int = 10) -> float:
    """Median seconds per round trip of `size`-byte request/response messages."""
    with _open(port) as sock:
        sock.sendall(b"P" + struct.pack("!I", size))
        message = os.urandom(size)
        times = []
        for i in range(count + warmup):
            start = time.perf_counter()
            sock.sendall(message)
            recv_exact(sock, size)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return statistics.median(times)


# -- what the processes cost ---------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by these processes (all their threads, live or ended), in seconds.
    Linux's per-process CPU clock has ns resolution; /proc's utime+stime only 10 ms."""
    total = 0.0
    for pid in pids:
        try:
            total += time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
        except OSError:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
    return total


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, now."""
    with contextlib.suppress(psutil.Error):
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    return [pid]


def sshd_sessions(sshd: Sshd) -> list[int]:
    with contextlib.suppress(psutil.Error):
        return [p.pid for p in psutil.Process(sshd.child.pid).children(recursive=True)]
    return []


def proc_status_kb(pid: int, field_name: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Samples VmRSS of a process every `interval` s; `peak_mb` is max(samples, VmHWM)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(proc_status_kb(self.pid, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm_kb = proc_status_kb(self.pid, "VmHWM")

    @property
    def peak_mb(self) -> float:
        return max([*self.samples, self.hwm_kb]) / 1024
