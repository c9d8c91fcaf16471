"""Start a real Jupyter server for tests: isolated dirs, a free 127.0.0.1 port, clean teardown.

The token goes in through the environment (JUPYTER_TOKEN), never on the command line, exactly as
colabtunnel hands it to a remote Jupyter. Everything Jupyter writes (config, data, runtime files,
IPython profile, its log) lives under the test's tmp_path.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

COLAB_ORIGIN = "https://colab.research.google.com"

COLAB_FLAGS: tuple[str, ...] = (
    f"--ServerApp.allow_origin={COLAB_ORIGIN}",
    "--ServerApp.allow_credentials=True",
    "--ServerApp.tornado_settings={'headers': {'Access-Control-Allow-Private-Network': 'true'}}",
)

START_DEADLINE = 60.0
STOP_GRACE = 10.0


@dataclass
class JupyterServer:
    """A running Jupyter: where it listens, its token, the process, and its log file."""

    port: int
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return tail.replace(self.token, "***") if self.token else tail


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    """True once anything HTTP answers on GET /api (any status counts as 'up').

    Something that is not HTTP on the port (another test's server that took it in the
    moment between free_port() and Jupyter's bind) is "not yet", not a crash: Jupyter
    then fails to bind and the caller retries on a new port.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2) as resp:
            resp.read()
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, urllib.error.URLError, http.client.HTTPException):
        return False


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a project dependency
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def stop_process_group(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """TERM the process group, wait `grace` seconds, then KILL it and any leftover kernels.

    Jupyter starts kernels in their own sessions, so they are collected first and killed
    explicitly if the server's own shutdown did not take them down.
    """
    kernels = _descendants(process.pid)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
    # The group may still hold stragglers even when the leader exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    _kill_pids(kernels)


def build_argv(
    app: str, port: int, root: Path, *, colab_flags: bool, extra_args: list[str] | None
) -> list[str]:
    if app not in ("server", "notebook", "lab"):
        raise ValueError(f"app must be server, notebook or lab, not {app!r}")
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    if colab_flags:
        argv.extend(COLAB_FLAGS)
    argv.extend(extra_args or [])
    return argv


def build_env(tmp_path: Path, token: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("JUPYTER_TOKEN", "JUPYTER_PASSWORD", "JUPYTER_CONFIG_PATH", "JUPYTER_PATH"):
        env.pop(name, None)
    if token:
        env["JUPYTER_TOKEN"] = token
    dirs = {
        "JUPYTER_CONFIG_DIR": config_dir(tmp_path),
        "JUPYTER_DATA_DIR": tmp_path / "jupyter-data",
        "JUPYTER_RUNTIME_DIR": tmp_path / "jupyter-runtime",
        "IPYTHONDIR": tmp_path / "ipython",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _listens(pid: int, port: int) -> bool:
    """True when process `pid` itself holds the listening socket on `port`.

    Guards against a race: another test's server grabbing our free port, answering our poll
    while our Jupyter fails to bind it.
    """
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


def _start(
    tmp_path: Path,
    app: str,
    token: str,
    colab_flags: bool,
    extra_args: list[str] | None,
    python: Path | None = None,
) -> JupyterServer:
    """Start Jupyter once and return it when it answers on its own port; raise on failure."""
    root = tmp_path / "notebooks"
    root.mkdir(parents=True, exist_ok=True)
    env = build_env(tmp_path, token)
    port = free_port()
    argv = build_argv(app, port, root, colab_flags=colab_flags, extra_args=extra_args)
    if python is not None:
        _use_python(argv, env, Path(python))
    log_path = tmp_path / f"jupyter-{app}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
        )
    server = JupyterServer(port=port, token=token, process=process, log_path=log_path, argv=argv)
    try:
        deadline = time.monotonic() + START_DEADLINE
        delay = 0.05
        while not (_answers(port) and _listens(process.pid, port)):
            if process.poll() is not None:
                tail = server.log_tail()
                if f"port {port} is already in use" in tail:
                    raise _PortTaken(tail)
                raise RuntimeError(
                    f"jupyter {app} exited with {process.returncode} before answering; "
                    f"log tail:\n{tail}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jupyter {app} did not answer on port {port} within {START_DEADLINE:.0f}s; "
                    f"log tail:\n{server.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
    except BaseException:
        stop_process_group(process)
        raise
    return server


def _use_python(argv: list[str], env: dict[str, str], python: Path) -> None:
    """Run Jupyter with another environment's `python` (e.g. a virtualenv's bin/python).

    Its bin directory goes first on PATH so `jupyter <app>` resolves that environment's
    `jupyter-<app>` (jupyter_core looks on PATH before its own scripts directory), and this
    project's PYTHONPATH is dropped so nothing of the test environment leaks into it.
    """
    argv[0] = str(python)
    env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", os.defpath)])
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)


class _PortTaken(RuntimeError):
    """Someone else bound the free port between our check and Jupyter's bind."""


@contextlib.contextmanager
def running_jupyter(
    tmp_path: Path,
    *,
    token: str,
    extra_args: list[str] | None = None,
    colab_flags: bool = True,
    app: str = "server",
    python: Path | None = None,
) -> Iterator[JupyterServer]:
    """Run `python -m jupyter <app>` until the block exits; yield a JupyterServer once /api answers.

    `token=""` leaves JUPYTER_TOKEN unset (pass e.g. `--IdentityProvider.token=` in extra_args to
    run without auth). Config files for the server go in `config_dir(tmp_path)`. Raises
    RuntimeError with the (token-masked) log tail when Jupyter does not come up. `python` runs the
    server with another environment's interpreter (a virtualenv's bin/python) instead of this one.
    """
    tmp_path = Path(tmp_path)
    for attempt in range(3):
        try:
            server = _start(tmp_path, app, token, colab_flags, extra_args, python)
            break
        except _PortTaken:
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        stop_process_group(server.process)


def config_dir(tmp_path: Path) -> Path:
    """The JUPYTER_CONFIG_DIR running_jupyter(tmp_path) uses: put jupyter_server_config.py here."""
    return Path(tmp_path) / "jupyter-config"
