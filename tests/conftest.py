"""Shared fixtures: no test touches the real home; a real sshd plays the GPU host."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.required_areas import pytest_runtest_makereport  # noqa: F401  (a skip is no pass)
from tests.sshd import Sshd, passwd_home_environ, running_sshd
from tests.worker_times import pytest_configure  # noqa: F401  (where the time went, at the end)

TESTS = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
PROFILE = "gpu"
HOST_ALIAS = "gpu-test"


def point_passwd_home_at(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the password database say our home is `home`, for this process's colabtunnel code
    and for every process a test starts (colabtunnel, its keeper, `ssh -G`, a ProxyCommand's
    `ssh`): OpenSSH takes ~ from there, not from $HOME, and both sides must read the same files.

    Child processes get it through nss_wrapper (tests/sshd.passwd_home_environ); this process's
    lookups go through colabtunnel.ssh.local_account.user_home, patched here."""
    from colabtunnel.ssh import local_account

    monkeypatch.setattr(local_account, "user_home", lambda: home)
    try:
        variables = passwd_home_environ(home, tmp_path)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own HOME (also as the password database's home, which ssh reads),
    COLABTUNNEL_HOME and a keyring of its own (tests/keyring_backend.py)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    os.chmod(home / ".ssh", 0o700)
    monkeypatch.setenv("HOME", str(home))
    point_passwd_home_at(home, tmp_path, monkeypatch)
    monkeypatch.setenv("COLABTUNNEL_HOME", str(tmp_path / "ct"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring_backend.TestKeyring")
    monkeypatch.setenv("COLABTUNNEL_TEST_KEYRING", str(tmp_path / "keyring.json"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(TESTS.parent)]))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
        pytest.fail("OpenSSH server not installed: run the README's test command (it installs it)")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@dataclass
class Env:
    """A test's world: the CLI to run, the profile pointing at the sshd, the files involved."""

    home: Path
    ct_home: Path
    sshd: Sshd | None

    def run(
        self, *args: str, timeout: float = 180, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "colabtunnel", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"colabtunnel {' '.join(args)} -> {done.returncode}\n{done.stderr}"
            )
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "colabtunnel", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    @property
    def profiles(self) -> Path:
        return self.ct_home / "profiles.toml"

    @property
    def known_hosts(self) -> Path:
        return self.home / ".ssh" / "known_hosts"

    def write_profile(self, name: str = PROFILE, **keys: object) -> None:
        lines = [f"[profiles.{name}]"]
        for key, value in keys.items():
            lines.append(f"{key} = {_toml(value)}")
        self.ct_home.mkdir(parents=True, exist_ok=True)
        with open(self.profiles, "a") as fh:
            fh.write("\n".join(lines) + "\n\n")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


ACTIVATE = f"source {VENV_BIN / 'activate'}"


@pytest.fixture
def env(isolated_home: Path, tmp_path: Path, sshd: Sshd) -> Iterator[Env]:
    """ssh_config alias + known_hosts + profile `gpu` for the test sshd; everything stopped after."""
    ssh_dir = isolated_home / ".ssh"
    (ssh_dir / "config").write_text(
        f"Host {HOST_ALIAS}\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n"
    )
    (ssh_dir / "known_hosts").write_text(sshd.known_hosts_line())
    world = Env(isolated_home, tmp_path / "ct", sshd)
    world.write_profile(PROFILE, host=HOST_ALIAS, activate=ACTIVATE, workdir="~", keepalive=5)
    yield world
    _teardown(world)


@pytest.fixture
def local_env(isolated_home: Path, tmp_path: Path) -> Iterator[Env]:
    world = Env(isolated_home, tmp_path / "ct", None)
    yield world
    _teardown(world)


def _teardown(world: Env) -> None:
    """`down` everything; then make sure nothing this test started is still running."""
    world.run("down", timeout=120)
    leftovers = leftover_processes(world)
    for proc in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    assert not leftovers, (
        f"processes left running after `down`: {[command_of(p) for p in leftovers]}"
    )


def jupyters_under(home: Path, kernels: bool = True) -> list[psutil.Process]:
    """Jupyter processes whose HOME is `home`; without their kernels when `kernels` is False (the
    probe kernel `up` deletes after printing the URL may still be exiting). Zombies and processes
    that end while being looked at are skipped."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "jupyter" not in cmdline or (not kernels and "ipykernel" in cmdline):
                continue
            if proc.environ().get("HOME") == str(home):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def leftover_processes(world: Env) -> list[psutil.Process]:
    """Keepers of this test (by COLABTUNNEL_HOME) and Jupyters whose HOME is this test's or the sshd's."""
    markers = {str(world.ct_home), str(world.home)}
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == me:
            continue
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if (
                "colabtunnel" not in cmdline
                and "jupyter" not in cmdline
                and "ipykernel" not in cmdline
            ):
                continue
            environ = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if (
            environ.get("COLABTUNNEL_HOME") in markers
            or environ.get("HOME") in markers
            or (world.sshd and environ.get("HOME") == str(world.sshd.remote_home))
        ):
            found.append(proc)
    return found


def ours_listening(world: Env, port: int) -> list[psutil.Process]:
    """This test's processes (leftover_processes) listening on `port`. Another worker's tunnel may
    take a port the moment `down` frees it (pick_local_port starts at 8888 for everyone), so
    "the port answers" is not "our forwarder is still there"."""
    listeners = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }
    return [p for p in leftover_processes(world) if p.pid in listeners]


def command_of(proc: psutil.Process) -> str:
    """The command line as process_iter() read it: asking the process again may meet a zombie (a
    process that ended since, not yet reaped), which psutil answers with an error."""
    return " ".join(proc.info.get("cmdline") or [])


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, why=None):  # type: ignore[no-untyped-def]
    """predicate()'s first true value within `timeout`; else AssertionError, with what `why()`
    says about the failure when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = f"\n{why()}" if why is not None else ""
    raise AssertionError(f"condition not met within {timeout} s{detail}")


# Servers for authentication tests (tests/auth_servers.py): password-only, one-time code, jump chains.
from tests.auth_servers import (  # noqa: E402
    encrypted_client_key,
    jump_chain_1,
    jump_chain_2,
    password_server,
    password_server_uid0,
)
from tests.otp_sshd import otp_server  # noqa: E402  (OpenSSH, PAM, a real one-time code)

# The Slurm test cluster (tests/slurm_cluster.py): login node here, compute node in a namespace.
from tests.slurm_cluster import slurm_cluster  # noqa: E402

__all__ = [
    "encrypted_client_key",
    "jump_chain_1",
    "jump_chain_2",
    "otp_server",
    "password_server",
    "password_server_uid0",
    "slurm_cluster",
]


# Resources there is one of on this machine: every test that uses one runs on the same xdist
# worker (--dist loadgroup), one after another, while the other workers take the rest.
MACHINE_WIDE = {"slurm_cluster": "slurm", "container_host": "containers"}


# The platform markers (pyproject.toml): what a test needs, and whether this OS has it.
PLATFORM_MARKERS = {
    "posix": (os.name == "posix", "needs a POSIX OS"),
    "linux": (sys.platform.startswith("linux"), "needs Linux"),
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    grouped = set()
    for item in items:
        for marker, (here, needs) in PLATFORM_MARKERS.items():
            if item.get_closest_marker(marker) is not None and not here:
                item.add_marker(pytest.mark.skip(reason=f"platform: {needs}, not {sys.platform}"))
        for fixture, group in MACHINE_WIDE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
                grouped.add(item.nodeid)
    # A group is one long unit of work on one worker: started first, it ends with the rest
    # instead of after it. (The same order on every worker, as xdist requires.)
    items.sort(key=lambda item: item.nodeid not in grouped)
