"""The container launcher against rootless Podman through the test sshd (issue 22): `up` starts
Jupyter inside a container of an image built here, the Colab probe passes through the tunnel,
`status` shows the container, `down` leaves nothing on either end; the token is in no
`podman inspect`, no process's arguments and no file outside the run directory; a dead keeper's
container is re-attached; missing images and images without Jupyter are one clear error; a
missing image is pulled from a local registry with progress shown, and a Ctrl-C during a slow
pull leaves nothing; an image that starts its own Jupyter (start = "image") gives up its token
on the host only; and Docker's engine (rootful dockerd) does what Podman does."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psutil
import pytest
import requests

from colabtunnel.jupyter.probe import run_probe
from tests.conftest import Env, _teardown, leftover_processes, ours_listening, wait_for
from tests.container_host import (
    BARE_IMAGE,
    IMAGE,
    ContainerHost,
    DockerEngine,
    SlowLink,
    running_container_host,
    running_docker,
    running_registry,
)
from tests.load_helpers import KernelSocket, Up

pytestmark = pytest.mark.linux

ALIAS = "gpu-containers"
PROFILE = "box"


@pytest.fixture(scope="session")
def container_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerHost]:
    with running_container_host(tmp_path_factory.mktemp("container-sshd")) as host:
        yield host


@pytest.fixture
def box(isolated_home: Path, tmp_path: Path, container_host: ContainerHost) -> Iterator[Env]:
    """ssh_config alias and known_hosts for the container host's sshd; no profile yet."""
    sshd = container_host.sshd
    ssh_dir = isolated_home / ".ssh"
    (ssh_dir / "config").write_text(
        f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {container_host.user}\n"
        f"  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n"
    )
    (ssh_dir / "known_hosts").write_text(sshd.known_hosts_line())
    world = Env(isolated_home, tmp_path / "ct", sshd)
    yield world
    _teardown(world)
    for cid in container_host.containers(PROFILE):
        container_host.podman("rm", "-f", "-t", "0", cid, check=False)


def write_container_profile(
    env: Env, image: str, idle_timeout: str | None = None, **keys: object
) -> None:
    table: dict[str, object] = {
        "image": image,
        "engine": "podman",
        "gpus": "none",
        "pull": "never",
        **keys,
    }
    text = f'[profiles.{PROFILE}]\nhost = "{ALIAS}"\nlauncher = "container"\nkeepalive = 5\n'
    text += f'idle_timeout = "{idle_timeout}"\n' if idle_timeout else ""
    text += f"[profiles.{PROFILE}.container]\n"
    text += "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())
    env.ct_home.mkdir(parents=True, exist_ok=True)
    env.profiles.write_text(text)


def _up(env: Env) -> Up:
    done = env.run("up", PROFILE, "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    tunnel = json.loads(done.stdout)["tunnel"]
    token = tunnel["url"].split("token=", 1)[1]
    return Up(
        int(tunnel["local_port"]), int(tunnel["remote_port"]), int(tunnel["keeper_pid"]), token
    )


def _listeners(port: int) -> list[str]:
    """Local addresses listening on `port` on this machine (the host and the laptop are one)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if line.split()[3].endswith(f":{port}")]


def _files_holding(token: str, *roots: Path) -> list[str]:
    """Files under `roots` that hold `token`; the laptop's side (pytest's own temp dirs, where
    the state record keeps it) is not the host's."""
    found = subprocess.run(
        ["grep", "-rlsF", "--exclude-dir=pytest-of-*", "--", token, *map(str, roots)],
        capture_output=True,
        text=True,
    ).stdout
    return found.split()


class Engine(Protocol):
    def containers(self, profile: str) -> list[str]: ...
    def inspect(self, container: str) -> str: ...


def _up_and_checked(box: Env, engine: Engine) -> tuple[Up, str]:
    """`up`, then: the Colab probe passes through the tunnel, there is one container, its port
    is published on the host's 127.0.0.1 only, and the token is in no `inspect` of it."""
    up = _up(box)
    assert run_probe(f"http://127.0.0.1:{up.local_port}/", up.token).ok
    (cid,) = engine.containers(PROFILE)
    assert _listeners(up.remote_port) == [f"127.0.0.1:{up.remote_port}"]
    inspected = engine.inspect(cid)
    assert up.token not in inspected and "JUPYTER_TOKEN" not in inspected
    return up, cid


def test_up_probe_status_down_and_the_token_stays_in_the_run_directory(
    box: Env, container_host: ContainerHost
) -> None:
    write_container_profile(box, IMAGE)
    up, cid = _up_and_checked(box, container_host)
    # The token: in no process's arguments, no file but the run directory's
    for proc in psutil.process_iter(["cmdline"]):
        assert up.token not in " ".join(proc.info["cmdline"] or []), proc.info["cmdline"]
    run_dir = container_host.run_dir(PROFILE)
    holding = _files_holding(
        up.token, container_host.home, Path("/tmp"), Path("/var/tmp"), container_host.runtime_dir
    )
    assert holding == [str(run_dir / "token")], holding
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((run_dir / "token").stat().st_mode & 0o777) == "0o600"

    shown = json.loads(box.run("status", "--json", check=True).stdout)["tunnels"][0]
    assert shown["job"]["container"] == cid[:12] and shown["job"]["image"] == IMAGE, shown
    human = box.run("status", check=True).stdout
    assert f"container {cid[:12]}" in human and IMAGE in human, human
    doctor = box.run("doctor", PROFILE).stdout
    for needed in ("podman", IMAGE, "127.0.0.1"):
        assert needed in doctor, doctor

    logs = box.run("logs", PROFILE, check=True)
    assert "Jupyter" in logs.stdout and up.token not in logs.stdout

    down = box.run("down", PROFILE, check=True)
    assert "stopped" in down.stderr, down.stderr
    assert container_host.containers(PROFILE) == []
    assert not run_dir.exists()
    assert _listeners(up.remote_port) == []
    # the laptop's port (8888 and up) is another worker's to take once ours is free
    assert ours_listening(box, up.local_port) == []


def test_a_dead_keepers_container_is_re_attached_with_its_kernel(
    box: Env, container_host: ContainerHost
) -> None:
    write_container_profile(box, IMAGE)
    first = _up(box)
    s = requests.Session()
    s.trust_env = False
    kernel = s.post(f"{first.base}/api/kernels", params=first.params, json={}, timeout=60).json()
    channel = KernelSocket(first, kernel["id"])
    channel.run("x = 6 * 7")
    channel.close()
    psutil.Process(first.keeper_pid).kill()
    wait_for(lambda: not psutil.pid_exists(first.keeper_pid), timeout=10)

    second = _up(box)
    assert second.token == first.token and second.remote_port == first.remote_port
    assert len(container_host.containers(PROFILE)) == 1
    again = KernelSocket(second, kernel["id"])
    assert again.run("print(x)").strip() == "42"
    again.close()


def test_an_idle_container_ends_with_its_jupyter_and_status_says_idle(
    box: Env, container_host: ContainerHost
) -> None:
    """idle_timeout in a container (issue 23): Jupyter ends itself, the container with it; the
    keeper tells that from a crash, removes the container and the run directory, and exits."""
    write_container_profile(box, IMAGE, idle_timeout="20s")
    up = _up(box)
    began = time.monotonic()

    def ended() -> dict | None:
        shown = json.loads(box.run("status", "--json", "--no-gpu", check=True).stdout)
        return next((n for n in shown["ended"] if n["profile"] == PROFILE), None)

    # the server's own no-activity check comes once a minute (tests/test_idle.py)
    note = wait_for(ended, timeout=20 + 60 + 30, interval=2)
    print(f"ended {time.monotonic() - began:.0f} s after `up`")
    assert note["why"] == "idle" and note["text"] == "ended: idle for 20s", note
    wait_for(lambda: not psutil.pid_exists(up.keeper_pid), timeout=30)  # exited, not hung
    assert container_host.containers(PROFILE) == []
    assert not container_host.run_dir(PROFILE).exists()
    assert _listeners(up.remote_port) == []


def test_the_command_given_to_stop_it_by_hand_removes_the_container_and_its_token(
    box: Env, container_host: ContainerHost
) -> None:
    """What `down` and an interrupted `up` print when the host cannot be reached ("Stop it
    with: ssh ..."), run once the host answers: for a container, the engine's `rm -f` of the
    profile's container and the run directory, not a Jupyter PID that is not on the host."""
    from colabtunnel.keeper import manual_stop

    write_container_profile(box, IMAGE)
    _up(box)
    assert container_host.containers(PROFILE)
    command = manual_stop.command(PROFILE)
    assert command.startswith("ssh "), command
    # OpenSSH finds ~ in the password database, not $HOME: point it at the test's files.
    here = f"ssh -F {box.home / '.ssh' / 'config'} -o UserKnownHostsFile={box.known_hosts} "
    ran = subprocess.run(
        ["bash", "-c", here + "-o BatchMode=yes " + command.removeprefix("ssh ")],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert ran.returncode == 0, ran.stderr
    assert container_host.containers(PROFILE) == []
    assert not container_host.run_dir(PROFILE).exists()
    box.run("down", PROFILE, check=True)  # the local side: the keeper and its record


OWN_START = "localhost/ct-own-start:test"
OWN_START_FILE = f"""FROM {IMAGE}
CMD ["jupyter", "server", "--allow-root", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=8080", \
     "--ServerApp.allow_origin=https://colab.research.google.com", \
     "--ServerApp.allow_credentials=True", \
     "--ServerApp.tornado_settings={{\\"headers\\": {{\\"Access-Control-Allow-Private-Network\\": \\"true\\"}}}}"]
"""


def test_an_image_that_starts_its_own_jupyter_gives_up_its_token_on_the_host_only(
    box: Env, container_host: ContainerHost
) -> None:
    """start = "image", as Colab's runtime image: the image's own start-up serves on 8080 with a
    token it makes up and prints; `up` reads it from the log into the run directory's 0600 file,
    and the probe passes with it."""
    build = container_host.home / "own-start"  # the user's to read (pytest's tmp is root's)
    build.mkdir(exist_ok=True)
    (build / "Containerfile").write_text(OWN_START_FILE)
    for path in (build, build / "Containerfile"):
        shutil.chown(path, container_host.user)
    container_host.podman("build", "-q", "-t", OWN_START, str(build), timeout=300)
    try:
        write_container_profile(box, OWN_START, start="image", port=8080)
        up = _up(box)
        assert run_probe(f"http://127.0.0.1:{up.local_port}/", up.token).ok
        (cid,) = container_host.containers(PROFILE)
        said = container_host.podman("logs", cid).stderr
        assert f"token={up.token}" in said, said  # the image's own token, not one we gave it
        assert "JUPYTER_TOKEN" not in container_host.podman("inspect", cid).stdout
        token_file = container_host.run_dir(PROFILE) / "token"
        assert token_file.read_text() == up.token
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        box.run("down", PROFILE, check=True)
        assert container_host.containers(PROFILE) == []
        assert not container_host.run_dir(PROFILE).exists()
    finally:
        container_host.podman("rmi", "-f", OWN_START, check=False)


@pytest.fixture(scope="session")
def docker_engine(container_host: ContainerHost) -> Iterator[DockerEngine]:
    with running_docker(container_host) as engine:
        yield engine


def test_docker_as_the_engine_up_probe_status_re_attach_and_down(
    box: Env, container_host: ContainerHost, docker_engine: DockerEngine
) -> None:
    """The same launcher with Docker's engine (rootful dockerd, the user in its socket's group):
    the flags colabtunnel gives `run` are Docker's too, the port is docker-proxy's on 127.0.0.1
    only, the token is in no `docker inspect`, and a dead keeper's container is re-attached."""
    write_container_profile(box, IMAGE, engine=docker_engine.command)
    try:
        up, cid = _up_and_checked(box, docker_engine)
        shown = json.loads(box.run("status", "--json", check=True).stdout)["tunnels"][0]
        assert shown["job"]["container"] == cid[:12], shown
        assert "docker" in box.run("doctor", PROFILE).stdout

        psutil.Process(up.keeper_pid).kill()
        wait_for(lambda: not psutil.pid_exists(up.keeper_pid), timeout=10)
        again = _up(box)
        assert again.token == up.token and docker_engine.containers(PROFILE) == [cid]

        box.run("down", PROFILE, check=True)
        assert docker_engine.containers(PROFILE) == []
        assert not container_host.run_dir(PROFILE).exists()
        assert _listeners(up.remote_port) == []
    finally:
        for left in docker_engine.containers(PROFILE):
            docker_engine.docker("rm", "-f", left, check=False)


def test_pull_never_with_a_missing_image_is_one_error_and_leaves_nothing(
    box: Env, container_host: ContainerHost
) -> None:
    write_container_profile(box, "localhost/ct-absent:none")
    done = box.run("up", PROFILE)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "localhost/ct-absent:none" in errors[0], done.stderr
    assert (
        'pull = "missing"' in done.stderr and "podman pull localhost/ct-absent:none" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert container_host.containers(PROFILE) == []
    assert not container_host.run_dir(PROFILE).exists()


def test_an_image_without_jupyter_says_so_and_names_the_jupyter_key(
    box: Env, container_host: ContainerHost
) -> None:
    write_container_profile(box, BARE_IMAGE)
    done = box.run("up", PROFILE)
    assert done.returncode == 1, done.stderr
    assert f"the image {BARE_IMAGE} has no 'jupyter'" in done.stderr, done.stderr
    assert "set jupyter = " in done.stderr and f"[profiles.{PROFILE}.container]" in done.stderr
    assert container_host.containers(PROFILE) == []
    assert not container_host.run_dir(PROFILE).exists()


def test_a_missing_engine_is_named(box: Env, container_host: ContainerHost) -> None:
    write_container_profile(box, IMAGE, engine="no-such-engine")
    done = box.run("up", PROFILE)
    assert done.returncode == 1, done.stderr
    assert "'no-such-engine' is not installed" in done.stderr, done.stderr


@pytest.fixture
def registry(container_host: ContainerHost, tmp_path: Path) -> Iterator[int]:
    """The test image in a local registry (pushed from the user's storage)."""
    with running_registry(tmp_path / "registry") as port:
        yield port


def _push(container_host: ContainerHost, port: int, name: str) -> str:
    ref = f"127.0.0.1:{port}/{name}"
    container_host.podman("push", "--tls-verify=false", IMAGE, ref, timeout=600)
    return ref


def test_a_missing_image_is_pulled_with_progress(
    box: Env, container_host: ContainerHost, registry: int
) -> None:
    ref = _push(container_host, registry, "ct-pulled:test")
    container_host.write_registries([f"127.0.0.1:{registry}"])
    try:
        write_container_profile(box, ref, pull="missing")
        done = box.run("up", PROFILE, timeout=600)
        assert done.returncode == 0, done.stderr
        assert f"pulling {ref}" in done.stderr and f"pulled {ref}" in done.stderr, done.stderr
        assert container_host.podman("image", "exists", ref, check=False).returncode == 0
    finally:
        box.run("down", PROFILE)
        container_host.podman("rmi", "-f", ref, check=False)
        container_host.write_registries([])


def _noise_image(container_host: ContainerHost, tmp_path: Path, ref: str, size: int) -> None:
    """Push an image of one layer of `size` random bytes (gzip cannot shrink it) to `ref`, then
    remove it from the user's storage, so that pulling `ref` has every byte to fetch."""
    noise = tmp_path / "noise.tar"
    with tarfile.open(noise, "w") as tar:
        member = tarfile.TarInfo("noise")
        member.size = size
        tar.addfile(member, io.BytesIO(os.urandom(size)))
    local = "localhost/ct-noise:test"
    container_host.podman("import", "-q", "-", local, input=noise.read_bytes(), timeout=300)
    container_host.podman("push", "--tls-verify=false", local, ref, timeout=600)
    container_host.podman("rmi", "-f", local, ref, timeout=120)
    assert container_host.podman("image", "exists", ref, check=False).returncode == 1


def _pulls(container_host: ContainerHost) -> list[psutil.Process]:
    """The user's live `podman pull` processes (a zombie has no command line to read)."""
    found = []
    for proc in container_host.processes():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and "pull" in proc.cmdline()[1:3]:
                found.append(proc)
    return found


def test_ctrl_c_during_a_slow_pull_leaves_no_pull_no_image_no_container_and_no_file(
    box: Env, container_host: ContainerHost, registry: int, tmp_path: Path
) -> None:
    link = SlowLink(registry, rate=2_000_000)  # 40 MB: a pull of about 20 s
    ref = f"127.0.0.1:{link.port}/ct-noise:test"
    container_host.write_registries([f"127.0.0.1:{link.port}"])
    try:
        _noise_image(container_host, tmp_path, ref, 40_000_000)
        write_container_profile(box, ref, pull="missing")
        proc = box.popen("up", PROFILE)
        assert proc.stderr is not None
        seen = ""
        for line in proc.stderr:
            seen += line
            if f"pulling {ref}: " in line:
                break
        wait_for(lambda: _pulls(container_host), timeout=30, why="no pull on the host")
        time.sleep(2)  # bytes on their way
        assert _pulls(container_host), "the pull was over before the Ctrl-C"
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
        assert proc.returncode == 130, seen + rest
        assert "Traceback" not in rest, rest
        assert not _pulls(container_host)
        assert container_host.podman("image", "exists", ref, check=False).returncode == 1
        assert not container_host.containers(PROFILE)
        assert not container_host.run_dir(PROFILE).exists()
        assert not leftover_processes(box)
    finally:
        link.close()
        container_host.podman("rmi", "-f", ref, check=False)
        container_host.write_registries([])
