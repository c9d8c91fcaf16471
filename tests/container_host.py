"""A GPU host set up for containers, for the container launcher's tests (issue 22): rootless
Podman from Debian's packages, run by an unprivileged user who logs in through a real sshd.

No registry is reachable from this machine, so the images are built here: a Debian root
filesystem from debootstrap (python3 only), and the same with the Jupyter the tests use
pip-installed into /opt/jupyter. Both are kept as tar files in CACHE between runs (a build takes
minutes; an import seconds) and imported into the user's own storage (`podman import`).

The machine's settings (../shared/CONTAINER-NOTES.md): crun fails on this kernel's hybrid
cgroups, so runc; the default ulimits ask for more than the hard limits allow, so none; the
user gets /etc/subuid and /etc/subgid ranges from useradd and an XDG_RUNTIME_DIR of its own
(sshd's SetEnv, as pam_systemd would on a real host); overlay storage, where Podman would pick
vfs (a full copy of the image per container). A GPU host needs none of this.

The user is `ctpod_<pid hex>` and is removed with everything it ran at the end; one left by a
session that died (its pid gone) is removed first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from tests.sshd import Sshd, manage_users, running_sshd, server_environ, stop
from tests.tcp_servers import TcpServer

CACHE = Path("/var/cache/colabtunnel-tests")
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
IMAGE = "localhost/ct-jupyter:test"
BARE_IMAGE = "localhost/ct-python:test"  # Python, no Jupyter
USER_PREFIX = "ctpod_"
BUILD_VERSION = "1"  # raise when the build below changes: a new cache key
CONTAINERS_CONF = """[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
# Without this, rootless Podman 4.3 picks vfs here, which copies the whole 400 MB image for every
# `run`: 8 s on an idle machine, past a 60 s remote-command bound with four test workers running.
# This kernel (6.x, ext4) mounts overlay for an unprivileged user: 0.3 s per `run`.
STORAGE_CONF = """[storage]
driver = "overlay"
"""
PACKAGES = ("jupyter_server", "ipykernel")


def _key() -> str:
    versions = [f"{name}=={metadata.version(name)}" for name in PACKAGES]
    return hashlib.sha256(" ".join([BUILD_VERSION, SUITE, *versions]).encode()).hexdigest()[:12]


def _chroot(root: Path, *argv: str) -> None:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    done = subprocess.run(["chroot", str(root), *argv], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in the image's root failed: {done.stderr[-2000:]}")


def rootfs_tars() -> tuple[Path, Path]:
    """(python only, with Jupyter): root filesystem tars for `podman import`, built once per
    machine and cache key, one builder at a time."""
    key = _key()
    bare, full = CACHE / f"rootfs-python-{key}.tar", CACHE / f"rootfs-jupyter-{key}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if bare.exists() and full.exists():
            return bare, full
        work = CACHE / f"build-{key}"
        shutil.rmtree(work, ignore_errors=True)
        bare.unlink(missing_ok=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                SUITE,
                str(work),
                MIRROR,
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(["tar", "-C", str(work), "-cf", f"{bare}.part", "."], check=True)
        os.replace(f"{bare}.part", bare)
        shutil.copy("/etc/resolv.conf", work / "etc" / "resolv.conf")
        # this machine's CA bundle, which its network's TLS needs (removed again below)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", work / "tmp" / "build-ca.crt")
        _chroot(work, "python3", "-m", "venv", "/opt/jupyter")
        wanted = [f"{name}=={metadata.version(name)}" for name in PACKAGES]
        pip = ["/opt/jupyter/bin/pip", "install", "-q", "--no-cache-dir", "--cert"]
        _chroot(work, *pip, "/tmp/build-ca.crt", *wanted)
        (work / "tmp" / "build-ca.crt").unlink()
        (work / "usr" / "local" / "bin" / "jupyter").symlink_to("/opt/jupyter/bin/jupyter")
        subprocess.run(["tar", "-C", str(work), "-cf", f"{full}.part", "."], check=True)
        os.replace(f"{full}.part", full)
        shutil.rmtree(work, ignore_errors=True)
        return bare, full


def engine_run(argv: list[str], check: bool, **options: Any) -> subprocess.CompletedProcess[str]:
    """An engine command, its output as text; with `check`, a failure is the test's."""
    done = subprocess.run(argv, capture_output=True, **options)
    result = subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {done.returncode}: {result.stderr}")
    return result


@dataclass
class ContainerHost:
    """The user, its home and runtime directory, and the sshd it logs in through."""

    user: str
    uid: int
    home: Path
    runtime_dir: Path
    sshd: Sshd

    def environ(self) -> dict[str, str]:
        return {
            **{k: v for k, v in server_environ().items() if not k.startswith(("XDG_", "PIP"))},
            "HOME": str(self.home),
            "USER": self.user,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
        }

    def podman(
        self, *args: str, check: bool = True, timeout: float = 300, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`podman ARGS` as the user, in its home."""
        argv = ["runuser", "-u", self.user, "--", "podman", *args]
        return engine_run(
            argv, check, timeout=timeout, env=self.environ(), cwd=self.home, input=input
        )

    def containers(self, profile: str) -> list[str]:
        """IDs of the profile's containers, running or not."""
        out = self.podman("ps", "-aq", "--filter", f"label=colabtunnel.profile={profile}").stdout
        return out.split()

    def inspect(self, container: str) -> str:
        return self.podman("inspect", container).stdout

    def run_dir(self, profile: str) -> Path:
        return self.home / ".local" / "state" / "colabtunnel" / profile

    def processes(self) -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real == self.uid]

    def write_registries(self, insecure: list[str]) -> None:
        """registries.conf: these local registries over plain HTTP (no TLS on loopback)."""
        lines = [f'[[registry]]\nlocation = "{where}"\ninsecure = true\n' for where in insecure]
        path = self.home / ".config" / "containers" / "registries.conf"
        path.write_text("\n".join(lines))
        shutil.chown(path, self.user, self.user)


def _remove_user(name: str) -> None:
    with contextlib.suppress(KeyError):
        uid = pwd.getpwnam(name).pw_uid
        for proc in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["uids"].real == uid:
                    proc.kill()
        time.sleep(0.2)
        manage_users(["userdel", "-r", "-f", name])
        shutil.rmtree(f"/run/user/{uid}", ignore_errors=True)
        # what rootless containers wrote as the user's sub-uids, which userdel -r leaves
        shutil.rmtree(f"/home/{name}", ignore_errors=True)


def _remove_leftovers() -> None:
    """Users of sessions that died: their pid (the hex in the name) is gone."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(USER_PREFIX):
            with contextlib.suppress(ValueError):
                if not psutil.pid_exists(int(entry.pw_name[len(USER_PREFIX) :], 16)):
                    _remove_user(entry.pw_name)


@contextlib.contextmanager
def running_container_host(root: Path) -> Iterator[ContainerHost]:
    bare, full = rootfs_tars()
    _remove_leftovers()
    name = f"{USER_PREFIX}{os.getpid():x}"
    _remove_user(name)
    manage_users(["useradd", "-m", "-p", "*", "-s", "/bin/bash", name], check=True)
    try:
        entry = pwd.getpwnam(name)
        home = Path(entry.pw_dir)
        for table in ("/etc/subuid", "/etc/subgid"):
            if f"{name}:" not in Path(table).read_text():
                flag = "--add-subuids" if table.endswith("uid") else "--add-subgids"
                start = 200000 + (entry.pw_uid % 1000) * 65536
                manage_users(["usermod", flag, f"{start}-{start + 65535}", name], check=True)
        runtime = Path(f"/run/user/{entry.pw_uid}")
        runtime.mkdir(parents=True, exist_ok=True)
        os.chown(runtime, entry.pw_uid, entry.pw_gid)
        os.chmod(runtime, 0o700)
        conf = home / ".config" / "containers"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "containers.conf").write_text(CONTAINERS_CONF)
        (conf / "storage.conf").write_text(STORAGE_CONF)
        subprocess.run(["chown", "-R", f"{name}:{name}", str(home / ".config")], check=True)
        # sshd reads authorized_keys as the user: the test's own temp dir is root's, so the
        # client key goes to the user's ~/.ssh as well
        extra = (
            f"Match User {name}\n  AuthorizedKeysFile .ssh/authorized_keys\n"
            f"  SetEnv HOME={home} XDG_RUNTIME_DIR={runtime}\n"
        )
        with running_sshd(root, extra=extra) as server:
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            (ssh_dir / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
            subprocess.run(["chown", "-R", f"{name}:{name}", str(ssh_dir)], check=True)
            host = ContainerHost(name, entry.pw_uid, home, runtime, server)
            host.write_registries([])
            for tar, image in ((full, IMAGE), (bare, BARE_IMAGE)):
                with open(tar, "rb") as fh:
                    subprocess.run(
                        ["runuser", "-u", name, "--", "podman", "import", "-q", "-", image],
                        stdin=fh,
                        check=True,
                        capture_output=True,
                        env=host.environ(),
                        cwd=home,
                        timeout=600,
                    )
            yield host
            host.podman("rm", "-af", "-t", "0", check=False, timeout=120)
    finally:
        _remove_user(name)


# -- a registry to pull from, and a slow link to it ---------------------------------------------


@contextlib.contextmanager
def running_registry(root: Path) -> Iterator[int]:
    """Debian's docker-registry (the distribution registry) on a free 127.0.0.1 port."""
    from tests.sshd import free_port

    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(root / "registry.log", "ab") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry did not start: {(root / 'registry.log').read_text()}"
                )
            time.sleep(0.1)
        yield port
    finally:
        stop(process)


# -- Docker's engine, rootful as on most GPU hosts ------------------------------------------------


@dataclass
class DockerEngine:
    """A dockerd of the test's own; `command` is the profile's `engine`, which reaches it."""

    socket: Path

    @property
    def command(self) -> str:
        return f"docker --host unix://{self.socket}"

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` as root, through this engine's socket."""
        return engine_run(["docker", "--host", f"unix://{self.socket}", *args], check, timeout=300)

    def containers(self, profile: str) -> list[str]:
        out = self.docker("ps", "-aq", "--filter", f"label=colabtunnel.profile={profile}").stdout
        return out.split()

    def inspect(self, container: str) -> str:
        return self.docker("inspect", container).stdout


@contextlib.contextmanager
def running_docker(host: ContainerHost) -> Iterator[DockerEngine]:
    """Debian's dockerd as root, with its own data root and a socket in the group of the host's
    user (what the `docker` group gives on a real host), and the Jupyter image imported.

    --iptables=false: this machine's kernel has no usable iptables here; a port published on
    127.0.0.1 then goes through docker-proxy, which is what `ss` shows listening. The docker0
    bridge dockerd creates outlives it: removed again, if it was not there before."""
    _, full = rootfs_tars()
    base = Path(f"/run/ctdocker-{os.getpid():x}")  # short: containerd's socket path lives in it
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755, parents=True)
    had_bridge = Path("/sys/class/net/docker0").exists()
    engine = DockerEngine(base / "docker.sock")
    with open(base / "dockerd.log", "ab") as log:
        process = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                f"--data-root={base / 'data'}",
                f"--exec-root={base / 'exec'}",
                f"--pidfile={base / 'dockerd.pid'}",
                f"--host=unix://{engine.socket}",
                f"--group={host.user}",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while engine.docker("version", check=False).returncode != 0:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"dockerd did not start: {(base / 'dockerd.log').read_text()}")
            time.sleep(0.2)
        with open(full, "rb") as fh:
            subprocess.run(
                ["docker", "--host", f"unix://{engine.socket}", "import", "-", IMAGE],
                stdin=fh,
                check=True,
                capture_output=True,
                timeout=600,
            )
        yield engine
    finally:
        with contextlib.suppress(Exception):
            ids = engine.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                engine.docker("rm", "-f", *ids, check=False)
        stop(process)
        for proc in psutil.process_iter(["cmdline"]):  # containerd and shims, if dockerd was killed
            with contextlib.suppress(psutil.Error):
                if str(base) in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
        if not had_bridge:
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True)
        subprocess.run(["umount", "-R", str(base / "data")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


class SlowLink:
    """A TCP relay to 127.0.0.1:`target` that passes at most `rate` bytes a second toward the
    client: a registry behind a slow link, so that a pull takes a while."""

    def __init__(self, target: int, rate: int) -> None:
        self.target, self.rate = target, rate
        self.server = TcpServer(self._relay)
        self.port = self.server.port

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))

        def upward() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    upstream.sendall(data)
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

        threading.Thread(target=upward, daemon=True).start()
        chunk = max(self.rate // 10, 1)
        with contextlib.suppress(OSError), upstream:
            while data := upstream.recv(chunk):
                client.sendall(data)
                time.sleep(len(data) / self.rate)

    def close(self) -> None:
        self.server.close()
