"""The in-job launcher (colabtunnel/remote/slurm_launch.py) on its own, on this machine: it
starts Jupyter with the token from a file, reports the port only once Jupyter serves, records
its events, and stops Jupyter when the job is told to stop. The Slurm tests run it in a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from colabtunnel import redact
from colabtunnel.jupyter import flavours
from tests.conftest import VENV_BIN, wait_for

LAUNCHER = Path(__file__).resolve().parent.parent / "colabtunnel" / "remote" / "slurm_launch.py"


def _session(tmp_path: Path, token: str) -> Path:
    session = tmp_path / "session"
    session.mkdir(mode=0o700)
    flavour = flavours.by_key("server")
    job = {
        "jupyter": str(VENV_BIN / "jupyter"),
        "args": flavours.server_args(flavour, "{port}", allow_root=os.getuid() == 0),
        "flavour": flavour.key,
        "classic": False,
        "start_timeout": 60,
    }
    (session / "job.json").write_text(json.dumps(job))
    fd = os.open(session / "token", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, token.encode())
    os.close(fd)
    return session


def _events(session: Path) -> list[str]:
    path = session / "events"
    return (
        [line.split(" ", 2)[1] for line in path.read_text().splitlines()] if path.exists() else []
    )


def test_launcher_serves_with_the_token_from_a_file_and_stops_on_term(tmp_path: Path) -> None:
    token = redact.new_token()
    session = _session(tmp_path, token)
    launcher = subprocess.Popen(
        [sys.executable, str(LAUNCHER), str(session)], stdin=subprocess.DEVNULL, cwd=tmp_path
    )
    try:
        wait_for(lambda: (session / "conn.json").exists(), timeout=60)
        conn = json.loads((session / "conn.json").read_text())
        base = f"http://127.0.0.1:{conn['port']}"
        assert requests.get(f"{base}/api/status", params={"token": token}, timeout=10).ok
        assert requests.get(f"{base}/api/status", timeout=10).status_code == 403
        jupyter = psutil.Process(conn["pid"])
        assert token not in " ".join(jupyter.cmdline() + psutil.Process(launcher.pid).cmdline())
        assert "JUPYTER_TOKEN" not in jupyter.environ()  # it read the file
        assert _events(session) == ["start", "jupyter"]
        launcher.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@600 sends before the limit
        wait_for(lambda: "warn" in _events(session), timeout=10)
        launcher.send_signal(signal.SIGTERM)  # what scancel sends
        assert launcher.wait(30) == 0
        assert _events(session)[-2:] == ["term", "exit"]
        assert not jupyter.is_running() or jupyter.status() == psutil.STATUS_ZOMBIE
    finally:
        if launcher.poll() is None:
            launcher.kill()


def test_launcher_reports_a_jupyter_that_cannot_start(tmp_path: Path) -> None:
    session = _session(tmp_path, redact.new_token())
    job = json.loads((session / "job.json").read_text())
    job["args"].append("--ServerApp.root_dir=/nonexistent-dir")
    (session / "job.json").write_text(json.dumps(job))
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(LAUNCHER), str(session)], timeout=120)
    assert done.returncode == 1
    assert _events(session) == ["start", "exit"]
    assert "exited at start" in (session / "events").read_text()
    assert not (session / "conn.json").exists()
    assert time.monotonic() - started < 60
