"""Start-up: `colabtunnel up` to URL, step by step, against Jupyter's own start-up on the host;
`--help`, `status` and `down` wall time; the keeper's resident memory once it is up."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil

from benchmarks.harness import VENV_BIN, World, die_with_me, free_port, proc_status_kb

CLI = [str(VENV_BIN / "colabtunnel")] if (VENV_BIN / "colabtunnel").exists() else None
PORT_RE = re.compile(r"port (\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIN_STEP = 0.001  # a step shorter than the clocks can tell

# The progress lines `up` prints, in order, and the step each one starts.
STEP_LINES = (
    ("connecting", "· connecting to"),
    ("inspecting", "· inspecting"),
    ("starting", "· starting"),
    ("checking", "· checking"),
)


def cli(*args: str) -> list[str]:
    if CLI is not None:
        return [*CLI, *args]
    import sys

    return [sys.executable, "-m", "colabtunnel", *args]


def boottime() -> float:
    """The clock /proc/PID/stat's start time counts in (seconds since boot)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float | None:
    """When process `pid` was created, on the boottime() clock (10 ms resolution)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19]) / CLK_TCK
    return None


def api_answers(port: int) -> bool:
    """Jupyter's /api (no token needed) answers 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.settimeout(2)
            sock.sendall(b"GET /api HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head = sock.recv(64)
            return head.startswith(b"HTTP/1.") and head[9:12] == b"200"
    except OSError:
        return False


class ApiWatcher:
    """Polls 127.0.0.1:PORT/api every 10 ms from a thread; `answered` is the boottime() it first
    answered."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if api_answers(self.port):
                self.answered = boottime()
                return
            self._stop.wait(0.01)

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        return self.answered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class UpRun:
    total: float  # launch of `colabtunnel up` to the URL on stdout
    steps: dict[str, float] = field(default_factory=dict)
    # (step, start, end) on the boottime() clock, launch to URL
    bounds: list[tuple[str, float, float]] = field(default_factory=list)
    port: int | None = None
    url: str | None = None
    keeper_rss_mb: float | None = None
    exit_code: int = 0


def run_up(world: World, profile: str, timeout: float = 180) -> UpRun:
    """`colabtunnel up PROFILE`, each stderr line timestamped as it arrives, the remote Jupyter's
    creation (from /proc) and its first answer on /api (polled here) placed on the same clock."""
    marks: dict[str, float] = {}
    watcher: ApiWatcher | None = None
    remote_port: list[int] = []
    lines: list[str] = []
    t0 = boottime()
    proc = subprocess.Popen(
        cli("up", profile),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=world.env,
        text=True,
    )

    def read_stderr() -> None:
        nonlocal watcher
        assert proc.stderr is not None
        for line in proc.stderr:
            now = boottime()
            lines.append(line.rstrip())
            for step, prefix in STEP_LINES:
                if line.startswith(prefix) and step not in marks:
                    marks[step] = now
                    if step == "starting" and (match := PORT_RE.search(line)):
                        remote_port.append(int(match.group(1)))
                        watcher = ApiWatcher(remote_port[0])

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    url_at = None
    url = None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("http://"):
                url_at = boottime()
                url = line.strip()
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    if url_at is None or proc.returncode != 0:
        if watcher is not None:
            watcher.stop()
        raise RuntimeError(
            f"`colabtunnel up {profile}` failed ({proc.returncode}): " + "\n".join(lines)
        )
    missing = [step for step, _ in STEP_LINES if step not in marks]
    if missing:
        raise RuntimeError(f"`up` printed no {missing} step; output: " + "\n".join(lines))
    assert watcher is not None
    api_at = watcher.wait(5) or url_at
    watcher.stop()
    port = remote_port[0]
    created = jupyter_created(world, port)
    run = UpRun(total=url_at - t0, port=port, url=url)
    # The steps, each from one observed event to the next. Jupyter's creation time has the kernel's
    # tick resolution (10 ms, floored: centre it), /api is polled every 10 ms: where that inverts
    # two events, the later one is put 1 ms after the earlier (a step "shorter than we can see").
    if created is not None:
        created += 0.5 / CLK_TCK
    points = [
        ("launch", t0),  # process start, imports, keeper spawn: until the first progress line
        ("connect", marks["connecting"]),  # TCP, SSH handshake, host key, login
        ("detect", marks["inspecting"]),  # one remote script: versions, ports, hazards
        ("start", marks["starting"]),  # START script: activate, launch Jupyter (until its exec)
        ("ready", created or marks["starting"]),  # Jupyter's own start-up, until /api answers
        ("confirm", api_at),  # the host's readiness/token checks, the answer back here
        ("probe", marks["checking"]),  # the Colab-style check through the tunnel
        ("end", url_at),
    ]
    for i in range(1, len(points) - 1):  # the first and last are exact
        name, at = points[i]
        points[i] = (name, min(max(at, points[i - 1][1] + MIN_STEP), url_at - MIN_STEP))
    for (name, at), (_, nxt) in itertools.pairwise(points):
        run.steps[name] = nxt - at
        run.bounds.append((name, at, nxt))
    run.keeper_rss_mb = keeper_rss_mb(world, profile)
    return run


def up_again(world: World, profile: str) -> tuple[float, str]:
    """`colabtunnel up PROFILE` while its tunnel is up: seconds to exit, and the URL it printed."""
    took, done = timed(world, "up", profile, timeout=60)
    if done.returncode != 0 or "already up" not in done.stderr:
        raise RuntimeError(f"`up {profile}` again -> {done.returncode}: {done.stderr}")
    return took, done.stdout.strip().splitlines()[0]


def jupyter_created(world: World, port: int) -> float | None:
    needle = f"port={port}"
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "jupyter" in cmdline and needle in cmdline:
            return started_at(proc.info["pid"])
    return None


def keeper_rss_mb(world: World, profile: str) -> float | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        record = json.loads((world.ct_home / "state" / f"{profile}.json").read_text())
        kb = proc_status_kb(int(record["keeper_pid"]), "VmRSS")
        return kb / 1024 if kb else None
    return None


def timed(
    world: World, *args: str, timeout: float = 180
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """`colabtunnel ARGS`, its output captured: seconds to exit, and how it ended."""
    start = time.perf_counter()
    done = subprocess.run(
        cli(*args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=world.env,
        timeout=timeout,
    )
    return time.perf_counter() - start, done


def wall(world: World, *args: str, check: bool = True) -> float:
    took, done = timed(world, *args)
    if check and done.returncode != 0:
        raise RuntimeError(f"`colabtunnel {' '.join(args)}` -> {done.returncode}: {done.stderr}")
    return took


def complete(world: World, *words: str) -> float:
    """Wall time of one Tab press: `colabtunnel WORDS <Tab>` through the shell completion
    protocol, which reads the profile names from profiles.toml."""
    env = {
        **world.env,
        "_COLABTUNNEL_COMPLETE": "complete_bash",
        "COMP_WORDS": " ".join(("colabtunnel", *words, "")),
        "COMP_CWORD": str(len(words) + 1),
    }
    start = time.perf_counter()
    done = subprocess.run(cli(), capture_output=True, text=True, env=env, timeout=60)
    took = time.perf_counter() - start
    if done.returncode != 0 or "bench" not in done.stdout.split():
        raise RuntimeError(f"completion listed no profile: {done.stdout!r} {done.stderr!r}")
    return took


@dataclass
class OwnStartup:
    server: float  # launch to /api answering
    kernel: float  # then POST /api/kernels to the first code's result
    label: str


def jupyter_own_startup(world: World, timeout: float = 120) -> OwnStartup:
    """Jupyter's own start-up on this machine (the host), with colabtunnel's flags: seconds from
    starting `jupyter <flavour>` to /api answering, then for its first kernel to run a line of
    code (what `up` proves before it prints the URL)."""
    from colabtunnel.jupyter import flavours

    versions = {}
    for package in ("notebook", "jupyterlab", "jupyter_server", "ipykernel"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    flavour = flavours.choose("auto", versions)
    port = free_port()
    args = flavours.server_args(flavour, port, allow_root=os.getuid() == 0)
    home = world.root / "jupyter-own-home"
    home.mkdir(exist_ok=True)
    token = secrets.token_urlsafe(32)
    env = {**world.env, "HOME": str(home), "JUPYTER_TOKEN": token}
    log = open(world.root / "logs" / "jupyter-own.log", "ab")  # noqa: SIM115
    start = time.perf_counter()
    proc = subprocess.Popen(
        die_with_me([str(VENV_BIN / "jupyter"), *args]),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=env,
        cwd=home,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = start + timeout
        while not api_answers(port):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("Jupyter did not start; see logs/jupyter-own.log")
            time.sleep(0.01)
        server = time.perf_counter() - start
        started = time.perf_counter()
        first_kernel_runs(port, token, timeout)
        return OwnStartup(server, time.perf_counter() - started, flavour.label)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def first_kernel_runs(port: int, token: str, timeout: float) -> None:
    """Start a kernel and run print(6*7) in it, directly (no tunnel, no checks around it)."""
    import requests
    import websocket

    from colabtunnel.jupyter.colab_calls import execute_request

    base = f"http://127.0.0.1:{port}/api/kernels"
    kernel = requests.post(base, params={"token": token}, json={}, timeout=timeout).json()["id"]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel}/channels?token={token}", timeout=timeout
    )
    try:
        msg = execute_request("print(6*7)", secrets.token_hex(16))
        ws.send(json.dumps(msg))
        while True:
            frame = json.loads(ws.recv())
            parent = frame.get("parent_header", {}).get("msg_id")
            if parent == msg["header"]["msg_id"] and frame.get("msg_type") == "stream":
                return
    finally:
        ws.close()


def leftovers(world: World) -> list[psutil.Process]:
    """Keepers and Jupyters of this benchmark (by HOME / COLABTUNNEL_HOME), if any survived."""
    markers = {str(world.ct_home), str(world.home), str(world.sshd.remote_home)}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if not any(word in cmdline for word in ("colabtunnel", "jupyter", "ipykernel")):
                continue
            environ = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if environ.get("COLABTUNNEL_HOME") in markers or environ.get("HOME") in markers:
            found.append(proc)
    return found


def cleanup(world: World) -> None:
    """`colabtunnel down` (all of this world's tunnels), then kill what is left, by PID."""
    with contextlib.suppress(Exception):
        wall(world, "down", check=False)
    for proc in leftovers(world):
        with contextlib.suppress(psutil.Error):
            proc.kill()
