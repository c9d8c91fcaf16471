"""Installed in a long path (a pipx venv, a conda env): `down` still stops Jupyter, on this machine
and on an SSH host whose login files set COLUMNS.

`ps` cuts command lines to $COLUMNS even into a pipe, and COLUMNS is set more often than one
thinks (a login file, or any parent that imported readline without a terminal: pytest does). With
a long venv path the word `jupyter` falls past the cut, so nothing may identify a Jupyter by a
listing of command lines; these tests put it there and set COLUMNS=80 on purpose."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import psutil

from tests.conftest import TESTS, VENV_BIN, Env, leftover_processes, wait_for
from tests.sshd import running_sshd
from tests.tunnel_helpers import root_profile

PACKAGE = TESTS.parent / "colabtunnel"
NARROW = {"COLUMNS": "80", "LINES": "24"}


def long_venv(root: Path) -> Path:
    """A venv at a path of over 120 characters holding this project, its entry points written
    the way pip writes them for a path this long (a /bin/sh trampoline: the kernel's #! line
    is too short for it). The dependencies come from the test venv through a .pth line."""
    venv = root / ("a-venv-installed-in-a-long-path-" * 3) / "venv"
    assert len(str(venv)) > 120, venv
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / version / "site-packages"
    (site / "test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.copytree(PACKAGE, site / "colabtunnel", ignore=shutil.ignore_patterns("__pycache__"))
    python = venv / "bin" / "python3"
    for script in VENV_BIN.iterdir():
        if not (script.name == "colabtunnel" or script.name.startswith("jupyter")):
            continue
        head, _, body = script.read_text().partition("\n")
        assert head.startswith("#!") and "python" in head, (script, head)
        trampoline = f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\n"
        (venv / "bin" / script.name).write_text(trampoline + body)
        (venv / "bin" / script.name).chmod(0o755)
    return venv


def run(venv: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The long venv's own `colabtunnel`, in a terminal 80 columns wide as far as ps can tell."""
    environ = {**os.environ, **NARROW, "PYTHONPATH": str(TESTS)}  # TESTS: the test keyring
    done = subprocess.run(
        [str(venv / "bin" / "colabtunnel"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        env=environ,
    )
    assert not check or done.returncode == 0, (
        f"colabtunnel {' '.join(args)} -> {done.returncode}\n{done.stderr}"
    )
    return done


def jupyter_script(cmdline: list[str]) -> str | None:
    """The jupyter script a process runs (`PYTHON .../bin/jupyter-notebook ...`), if any."""
    return next((arg for arg in cmdline[:2] if Path(arg).name.startswith("jupyter")), None)


def jupyters_from(venv: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].startswith(str(venv)) and jupyter_script(cmdline):
            found.append(proc)
    return found


def assert_past_the_cut(venv: Path) -> None:
    """The case that broke: the server runs, and `jupyter` is past column 80 of its command line."""
    servers = wait_for(lambda: jupyters_from(venv), timeout=15)
    for proc in servers:
        assert "jupyter" not in " ".join(proc.info["cmdline"])[:80]


def test_down_in_a_long_path_stops_the_local_server(local_env: Env, tmp_path: Path) -> None:
    venv = long_venv(tmp_path)
    run(venv, "up", "local")
    assert_past_the_cut(venv)
    assert "stopped local" in run(venv, "down", "local").stderr
    wait_for(lambda: not jupyters_from(venv), timeout=15)
    assert not leftover_processes(local_env)
    assert not (local_env.ct_home / "state" / "local.json").exists()


def test_down_in_a_long_path_over_ssh_with_columns_set_at_login(
    local_env: Env, tmp_path: Path
) -> None:
    venv = long_venv(tmp_path)
    with running_sshd(tmp_path / "sshd") as server:
        (server.remote_home / ".bash_profile").write_text("export COLUMNS=80 LINES=24\n")
        local_env.known_hosts.touch()
        root_profile(
            local_env, server, "long", activate=f"source {venv / 'bin' / 'activate'}", workdir="~"
        )
        world = Env(local_env.home, local_env.ct_home, server)
        try:
            run(venv, "up", "long")
            assert_past_the_cut(venv)
            run_dir = server.remote_home / ".local" / "state" / "colabtunnel" / "long"
            assert run_dir.is_dir(), "no run directory on the host"
            assert "stopped long" in run(venv, "down", "long").stderr
            wait_for(lambda: not jupyters_from(venv), timeout=15)
            assert not run_dir.exists(), "the run directory (it holds the token) is left"
            assert not leftover_processes(world)
        finally:
            run(venv, "down", check=False)
