"""`up local`: the built-in profile runs Jupyter on this machine with the Colab flags, no SSH."""

from __future__ import annotations

import json
import socket

import psutil

from colabtunnel.jupyter.probe import run_probe
from tests.conftest import Env, command_of, leftover_processes, wait_for


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
