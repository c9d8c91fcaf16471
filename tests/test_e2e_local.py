"""`up local`: the built-in profile runs Jupyter on this machine with the Colab flags, no SSH."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import sys
from pathlib import Path

import psutil
import pytest

from colabtunnel.jupyter.probe import run_probe
from tests.conftest import Env, command_of, leftover_processes, wait_for
from tests.test_gpus import TWO_H100


def _jupyters(env: Env) -> list[psutil.Process]:
    return [p for p in leftover_processes(env) if "jupyter" in command_of(p)]


def test_up_local_probe_down(local_env: Env) -> None:
    done = local_env.run("up", "local", "--json", check=True)
    data = json.loads(done.stdout)
    tunnel = data["tunnel"]
    assert data["ok"] and data["command"] == "up" and tunnel["profile"] == "local"
    port = tunnel["local_port"]
    token = tunnel["url"].split("?token=")[1]
    assert tunnel["url"] == f"http://localhost:{port}/?token={token}"
    report = run_probe(f"http://127.0.0.1:{port}/", token)
    assert report.ok, report.to_dict()
    listeners = [
        c.laddr.ip
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert listeners == ["127.0.0.1"]
    assert _jupyters(local_env)
    down = local_env.run("down", "local", check=True)
    assert "stopped local" in down.stderr
    wait_for(lambda: not _jupyters(local_env), timeout=15)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert not (local_env.ct_home / "state" / "local.json").exists()


def test_up_local_without_jupyter_says_what_to_install(local_env: Env) -> None:
    local_env.write_profile("bare", host="local", jupyter="jupyter-not-installed-here")
    done = local_env.run("up", "bare")
    assert done.returncode == 1
    assert "pip install 'colabtunnel-ssh[local]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (local_env.ct_home / "state" / "bare.json").exists()


def test_up_local_needs_no_bash(
    local_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a Windows laptop: no bash, no sh, no tool at all on PATH. `up local` starts Jupyter
    as a Python subprocess (the local launcher), the tunnel passes the probe, `status` (the GPUs'
    use included) and `logs` answer, and `down` leaves nothing."""
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    assert shutil.which("bash") is None and shutil.which("sh") is None
    smi = bare / "nvidia-smi"  # a GPU tool that is no shell script either
    smi.write_text(f"#!{sys.executable}\nprint({TWO_H100!r}, end='')\n")
    smi.chmod(0o755)
    done = local_env.run("up", "local", "--json", check=True)
    document = json.loads(done.stdout)
    assert [g["name"] for g in document["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    tunnel = document["tunnel"]
    token = tunnel["url"].split("?token=")[1]
    record = json.loads((local_env.ct_home / "state" / "local.json").read_text())
    assert record["launcher"] == "local"
    assert run_probe(f"http://127.0.0.1:{tunnel['local_port']}/", token).ok
    shown = json.loads(local_env.run("status", "--json", check=True).stdout)
    assert [t["profile"] for t in shown["tunnels"]] == ["local"]
    use = shown["tunnels"][0]["gpu_use"]  # asked again through the keeper, with no shell
    assert use["problems"] == [] and len(use["gpus"]) == 2, use
    logs = local_env.run("logs", "local", check=True)
    assert "Jupyter" in logs.stdout + logs.stderr and token not in logs.stdout
    run_dir = local_env.ct_home / "state" / "run" / "local"
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "token").stat().st_mode) == 0o600
    down = local_env.run("down", "local", check=True)
    assert "stopped local" in down.stderr, down.stderr
    wait_for(lambda: not _jupyters(local_env), timeout=15)
    assert not run_dir.exists()
