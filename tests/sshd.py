"""A real OpenSSH server for tests: /usr/sbin/sshd in the foreground on a free loopback port.

Throwaway host and client keys; sshd's SetEnv gives remote sessions a HOME of their own so nothing
the "remote" side writes lands in the real home directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# Set per test (tests/conftest.py) so ssh on "the laptop" reads the test's home; a server plays
# another machine and must not inherit it.
NSS_WRAPPER_VARS = ("LD_PRELOAD", "NSS_WRAPPER_PASSWD", "NSS_WRAPPER_GROUP")


NSS_WRAPPER = next(iter(sorted(Path("/usr/lib").glob("*/libnss_wrapper.so*"))), None)


def server_environ() -> dict[str, str]:
    """This process's environment without the per-test password-database home."""
    return {k: v for k, v in os.environ.items() if k not in NSS_WRAPPER_VARS}


PASSWD_LOCK = Path("/run/lock/colabtunnel-passwd.lock")


def manage_users(
    argv: list[str], *, check: bool = False, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """useradd, userdel or chpasswd on the real password database, one at a time on this machine:
    the suite's workers run side by side (pytest-xdist) and shadow's tools refuse to run while
    another holds /etc/passwd's lock."""
    PASSWD_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(PASSWD_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(
            argv, check=check, input=input, text=True, capture_output=True, env=server_environ()
        )


def passwd_home_environ(home: Path, scratch: Path) -> dict[str, str]:
    """Environment variables under which the password database says this user's home is `home`
    (nss_wrapper, an LD_PRELOAD library made for this), for the processes that play the laptop:
    OpenSSH takes ~ from there, not from $HOME. Linux only; {} elsewhere."""
    if sys.platform != "linux":
        return {}
    if NSS_WRAPPER is None:
        raise RuntimeError("libnss-wrapper is not installed: run `python -m tests.setup_host`")
    passwd = scratch / "nss-passwd"
    uid = str(os.getuid())
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[2] == uid:
            fields[5] = str(home)
        lines.append(":".join(fields))
    passwd.write_text("\n".join(lines) + "\n")
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(NSS_WRAPPER)]))
    return {
        "LD_PRELOAD": preload,
        "NSS_WRAPPER_PASSWD": str(passwd),
        "NSS_WRAPPER_GROUP": "/etc/group",
    }


@dataclass
class Sshd:
    port: int
    host_key_pub: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    remote_home: Path
    process: subprocess.Popen[bytes]
    config: Path
    log: Path

    def known_hosts_line(self, host: str = "127.0.0.1") -> str:
        return f"[{host}]:{self.port} {self.host_key_pub}\n"


def config_text(
    port: int,
    root: Path,
    host_key: Path,
    remote_home: Path,
    extra: str = "",
    address: str = "127.0.0.1",
    forwarding: str = "local",
) -> str:
    """sshd_config for a test host: key login for root, `forwarding` (AllowTcpForwarding), its
    own HOME; on loopback unless `address` says otherwise."""
    return f"""Port {port}
ListenAddress {address}
HostKey {host_key}
AuthorizedKeysFile {root}/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
PidFile none
AllowTcpForwarding {forwarding}
X11Forwarding no
PrintMotd no
ClientAliveInterval 0
SetEnv HOME={remote_home}
{extra}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "colabtunnel-test", "-f", str(path)],
        check=True,
    )


def _wait_banner(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited ({process.returncode}): {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(2)
            if s.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on port {port}: {log.read_text()}")


@contextlib.contextmanager
def running_sshd(
    root: Path,
    port: int | None = None,
    extra: str = "",
    authorize_client_key: bool = True,
    forwarding: str = "local",
) -> Iterator[Sshd]:
    """sshd on a free loopback port; `extra` lines go into its sshd_config; without
    `authorize_client_key`, authorized_keys stays empty (for certificate logins);
    `forwarding`: its AllowTcpForwarding."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    if not host_key.exists():
        keygen(host_key)
        keygen(client_key)
    authorized = (root / "client_ed25519.pub").read_text() if authorize_client_key else ""
    (root / "authorized_keys").write_text(authorized)
    remote_home = root / "remote-home"
    remote_home.mkdir(exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
    port = port or free_port()
    config = root / "sshd_config"
    config.write_text(
        config_text(port, root, host_key, remote_home, extra=extra, forwarding=forwarding)
    )
    log = root / "sshd.log"
    with sshd_process(Path(SSHD), config, port, log) as process:
        pub = (root / "host_ed25519.pub").read_text().split()
        yield Sshd(port, f"{pub[0]} {pub[1]}", client_key, remote_home, process, config, log)


@contextlib.contextmanager
def sshd_process(
    program: Path, config: Path, port: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`program -D -e -f config`, its output in `log`, once its banner answers on `port`;
    stopped (TERM, then KILL) when the block ends."""
    with open(log, "ab") as log_fh:
        process = subprocess.Popen(
            [str(program), "-D", "-e", "-f", str(config)],
            stdout=log_fh,
            stderr=log_fh,
            env=server_environ(),
        )
    try:
        _wait_banner(port, process, log)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """TERM, then KILL after 10 s: a server the tests started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
