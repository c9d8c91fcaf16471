"""What the fault tests share: bring a profile up, read its health, talk to a kernel through the
tunnel the way Colab does, and check that nothing is left on either side."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

from colabtunnel.jupyter.colab_calls import execute_request
from tests.conftest import (
    ACTIVATE,
    Env,
    command_of,
    jupyters_under,
    leftover_processes,
    wait_for,
)
from tests.sshd import Sshd

URL_RE = re.compile(r"http://localhost:(\d+)/\?token=([A-Za-z0-9_\-]{43,})")


def up_json(env: Env, name: str, *args: str) -> dict:
    done = env.run("up", name, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["tunnel"]


def status_of(env: Env, name: str) -> dict | None:
    tunnels = json.loads(env.run("status", name, "--json").stdout)["tunnels"]
    return tunnels[0] if tunnels else None


def record_of(env: Env, name: str) -> dict | None:
    """The state record as the keeper last wrote it (what `status` reads), without a process
    start: fault tests poll it every 0.1 s."""
    try:
        return json.loads((env.ct_home / "state" / f"{name}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def token_of(tunnel: dict) -> str:
    return tunnel["url"].split("token=")[1]


class Kernel:
    """A kernel on the remote Jupyter, talked to through the tunnel like Colab does."""

    def __init__(self, port: int, token: str) -> None:
        self.base, self.token = f"http://127.0.0.1:{port}", token
        resp = requests.post(
            f"{self.base}/api/kernels", params={"token": token}, json={}, timeout=60
        )
        resp.raise_for_status()
        self.id = resp.json()["id"]

    def run(self, code: str, timeout: float = 60) -> str:
        import websocket

        ws = websocket.create_connection(
            f"ws://{self.base[7:]}/api/kernels/{self.id}/channels?token={self.token}",
            origin="https://colab.research.google.com",
            timeout=timeout,
        )
        try:
            msg = execute_request(code, "reliability-test")
            ws.send(json.dumps(msg))
            out = ""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                reply = json.loads(ws.recv())
                if reply.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                    continue
                if reply["msg_type"] == "stream":
                    out += reply["content"]["text"]
                if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
                    return out
            raise AssertionError(f"no reply to {code!r}")
        finally:
            ws.close()


def answers(port: int, token: str, timeout: float = 5) -> bool:
    try:
        return requests.get(
            f"http://127.0.0.1:{port}/api/status", params={"token": token}, timeout=timeout
        ).ok
    except requests.RequestException:
        return False


def run_dir(server: Sshd, name: str) -> Path:
    """The profile's run directory on the host (Jupyter's log, PID, port and token)."""
    return server.remote_home / ".local" / "state" / "colabtunnel" / name


def keepers(env: Env) -> list:
    return [p for p in leftover_processes(env) if "colabtunnel.keeper" in command_of(p)]


def sessions(server: Sshd) -> list[psutil.Process]:
    """What the sshd is running for clients right now (its session processes and their scripts)."""
    try:
        return psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def nothing_left(env: Env, server: Sshd, name: str) -> None:
    """No keeper, no Jupyter and no kernel on the host, no state record, no host run directory.

    Checked once the host is quiet (no keeper, no script still running in an sshd session): a
    start script still under way could otherwise launch a Jupyter after the check."""

    def why(left: Callable[[], list[psutil.Process]]) -> Callable[[], str]:
        return lambda: _left_behind(left(), env.ct_home / "logs" / f"{name}.log")

    wait_for(lambda: not keepers(env), timeout=15, why=why(lambda: keepers(env)))
    wait_for(lambda: not sessions(server), timeout=60, why=why(lambda: sessions(server)))
    home = server.remote_home
    wait_for(lambda: not jupyters_under(home), timeout=30, why=why(lambda: jupyters_under(home)))
    assert not (env.ct_home / "state" / f"{name}.json").exists()
    assert not run_dir(server, name).exists(), sorted(run_dir(server, name).iterdir())


def _left_behind(procs: list[psutil.Process], log: Path) -> str:
    """What is still running (PID, parent, command) and the end of the profile's log."""
    lines = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            lines.append(f"left: pid {proc.pid} ppid {proc.ppid()}: {' '.join(proc.cmdline())}")
    tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else ["(no log)"]
    return "\n".join([*lines, f"end of {log}:", *tail])


def root_profile(
    env: Env, server: Sshd, name: str, port: int | None = None, **keys: object
) -> None:
    """Profile `name` logging in to `server` as root (through `port`, a proxy in front of it,
    when given), with its host key trusted there and ACTIVATE unless `keys` say otherwise."""
    port = port or server.port
    env.known_hosts.write_text(
        env.known_hosts.read_text() + f"[127.0.0.1]:{port} {server.host_key_pub}\n"
    )
    env.write_profile(
        name,
        host="127.0.0.1",
        port=port,
        user="root",
        identity_file=str(server.client_key),
        **{"activate": ACTIVATE, **keys},
    )
