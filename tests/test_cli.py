"""The command line as a user runs it: real subprocesses, exit codes, stdout/stderr, import cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import colabtunnel
from colabtunnel import paths
from colabtunnel.keeper import state

HEAVY = ("paramiko", "keyring", "requests", "websocket")


def run(*args: str, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "colabtunnel", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _profiles_file() -> Path:
    path = paths.profiles_file()
    assert path.is_relative_to(Path(os.environ["COLABTUNNEL_HOME"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _assert_clean_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


# --- help and version ----------------------------------------------------------------------------


def test_help_lists_commands_but_not_the_keeper() -> None:
    done = run("--help")
    assert done.returncode == 0, done.stderr
    for command in ("up", "down", "status", "url", "trust"):
        assert f" {command} " in done.stdout, command
    assert "keeper" not in done.stdout + done.stderr


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"colabtunnel {colabtunnel.__version__}"


# --- status / url / down with nothing up ----------------------------------------------------------


def test_status_with_no_tunnels() -> None:
    done = run("status")
    assert done.returncode == 0, done.stderr
    assert "no tunnels" in done.stderr
    assert done.stdout == ""


def test_status_json_with_no_tunnels() -> None:
    done = run("status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "schema_version": 1,
        "command": "status",
        "ok": True,
        "tunnels": [],
        "ended": [],
    }


def test_url_when_nothing_is_up_exits_1() -> None:
    done = run("url", "gpu")
    line = _assert_clean_error(done, 1)
    assert "gpu" in line
    assert done.stdout == ""


def test_down_with_nothing_up() -> None:
    done = run("down")
    assert done.returncode == 0, done.stderr
    assert "nothing was running" in done.stderr
    assert "Traceback" not in done.stderr


# --- configuration errors ---------------------------------------------------------------------------


def test_up_unknown_profile_names_the_known_ones() -> None:
    done = run("up", "nosuchprofile")
    line = _assert_clean_error(done, 2)
    assert "nosuchprofile" in line
    assert "local" in line  # the built-in profile is always known


def test_up_unknown_profile_lists_profiles_from_the_file() -> None:
    _profiles_file().write_text('[profiles.gpu-box]\nhost = "gpu.example.org"\n')
    done = run("up", "nosuchprofile")
    line = _assert_clean_error(done, 2)
    assert "gpu-box" in line
    assert "local" in line


def test_up_unknown_profile_json() -> None:
    done = run("up", "nosuchprofile", "--json")
    assert done.returncode == 2
    document = json.loads(done.stdout)
    assert document["ok"] is False
    assert document["command"] == "up"
    assert "nosuchprofile" in document["error"]["message"]


def test_toml_syntax_error_gives_line_number() -> None:
    path = _profiles_file()
    path.write_text('# my profiles\n[profiles.x]\nhost = "gpu.example.org"\nport = = 22\n')
    done = run("up", "x")
    line = _assert_clean_error(done, 2)
    assert "line 4" in line
    assert str(path) in line


# --- state seen through the CLI --------------------------------------------------------------------


def _fake_keeper_record(pid: int, profile: str = "gpu") -> state.Record:
    started = psutil.Process(pid).create_time()  # works for a zombie too
    return state.Record(
        profile=profile,
        keeper_pid=pid,
        keeper_started=started,
        host="alice@gpu.example.org:22",
        local_port=8890,
        remote_port=40123,
        token="T0KEN" + "x" * 40,
        flavour="notebook7",
    )


def test_status_and_url_show_a_live_tunnel_and_down_stops_it() -> None:
    _profiles_file().write_text('[profiles.gpu]\nhost = "gpu.example.org"\n')
    keeper = subprocess.Popen(["sleep", "60"])
    try:
        record = _fake_keeper_record(keeper.pid)
        state.write(record)

        done = run("status", "--json")
        assert done.returncode == 0, done.stderr
        tunnels = json.loads(done.stdout)["tunnels"]
        assert len(tunnels) == 1
        assert tunnels[0]["profile"] == "gpu"
        assert tunnels[0]["url"] == "http://localhost:8890/?token=" + record.token
        assert "token" not in tunnels[0]

        done = run("status")
        assert done.returncode == 0
        assert "gpu" in done.stdout and record.url in done.stdout

        done = run("url", "gpu")
        assert done.returncode == 0
        assert done.stdout == record.url + "\n"

        done = run("down", "gpu")
        assert done.returncode == 0, done.stderr
        assert "stopped gpu" in done.stderr
        assert psutil.Process(keeper.pid).status() == psutil.STATUS_ZOMBIE  # it got SIGTERM
        assert state.read("gpu") is None
    finally:
        keeper.kill()
        keeper.wait()


def test_status_cleans_a_stale_record() -> None:
    dead = subprocess.Popen(["true"])
    record = _fake_keeper_record(dead.pid)
    dead.wait()
    state.write(record)
    done = run("status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tunnels"] == []
    assert state.read("gpu") is None
    assert run("url", "gpu").returncode == 1


# --- import cost ------------------------------------------------------------------------------------


def test_importing_cli_loads_no_heavy_module() -> None:
    code = (
        "import colabtunnel.cli, sys, json; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []


def _imported_modules(stderr: str) -> set[str]:
    """Top-level names from `python -X importtime` lines: `import time: self | cumul | name`."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    return names


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("--help",)])
def test_status_and_help_load_no_heavy_module(args: tuple[str, ...]) -> None:
    done = run(*args, python_flags=("-X", "importtime"))
    assert done.returncode == 0
    modules = _imported_modules(done.stderr)
    assert "typer" in modules  # the parsing worked: we are looking at the right output
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
