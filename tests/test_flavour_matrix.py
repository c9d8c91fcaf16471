"""The flavour matrix: colabtunnel against real Notebook 6, Notebook 7, JupyterLab 4 and bare
jupyter_server 2, each installed in a virtualenv of its own (tests/flavour_venvs.py, cached).

For every flavour:
- positive: `up --json` through the real sshd with `app = "auto"` detects the flavour, the Colab
  probe passes from the test (the kernel prints 42), `down` leaves no Jupyter and closes the port;
- negative control: the same server started by hand the way people get it wrong (the wrong flag
  prefix, or no allow_credentials) fails the probe, and the first failure's fix names the cause.
Plus: `app = "lab"` on a host with only jupyter_server, and a jupyter_server without ipykernel, are
refused before anything starts, with the install command.

What each flavour does with the wrong prefix (observed, and asserted below):
- Notebook 6.5: `--ServerApp.*` is silently ignored (no log line). Without its own allow_origin it
  still echoes the Origin for token requests, but never sends Access-Control-Allow-Credentials.
- Notebook 7 and JupyterLab 4: `--NotebookApp.*` is translated to ServerApp with a warning
  ("'allow_origin' has moved from NotebookApp to ServerApp"), so the probe passes; their negative
  control is therefore "allow_origin without allow_credentials".
- bare jupyter_server 2: `--NotebookApp.*` is silently ignored (no log line): no credentials header.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import requests

from colabtunnel.jupyter.probe import run_probe
from colabtunnel.jupyter.verdicts import ProbeReport
from tests import flavour_venvs
from tests.conftest import Env, command_of, leftover_processes, ours_listening, wait_for
from tests.flavour_venvs import FLAVOURS, MATRIX, python_of
from tests.jupyter_helpers import COLAB_ORIGIN, config_dir, running_jupyter
from tests.test_e2e_ssh import remote_jupyters

# Building the venvs (first run only, ~75 s in parallel from PyPI here) happens in the setup of the
# first test, which pytest-timeout counts: leave room for a slow link.
pytestmark = pytest.mark.timeout(900)

TOKEN = "flavour-matrix-token-" + "x" * 30


@pytest.fixture(scope="session")
def venvs() -> dict[str, Path]:
    """Every flavour's venv, built in parallel the first time, from the cache afterwards."""
    return flavour_venvs.build_all()


def _up_json(env: Env, profile: str) -> tuple[int, dict]:
    done = env.run("up", profile, "--json", timeout=240)
    try:
        data = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(
            f"`up {profile} --json` printed no JSON (exit {done.returncode}):\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        ) from None
    return done.returncode, data | {"_stderr": done.stderr}


def _run_dir(env: Env, profile: str) -> Path:
    assert env.sshd is not None
    return env.sshd.remote_home / ".local" / "state" / "colabtunnel" / profile


# ---------------------------------------------------------------------------------------------
# positive: up through sshd -> probe -> down, per flavour
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MATRIX)
def test_up_probe_down(env: Env, venvs: dict[str, Path], name: str) -> None:
    flavour = FLAVOURS[name]
    venv = venvs[name]
    profile = f"fm-{name}"
    env.write_profile(profile, host="gpu-test", activate=f"source {venv}/bin/activate", app="auto")

    code, data = _up_json(env, profile)
    assert code == 0 and data["ok"], data
    tunnel = data["tunnel"]
    assert tunnel["flavour"] == flavour.expected, tunnel
    port = tunnel["local_port"]
    token = tunnel["url"].split("token=", 1)[1]
    assert tunnel["url"] == f"http://localhost:{port}/?token={token}"

    # The server on the host is this flavour's venv, not the project's own Jupyter.
    servers = remote_jupyters(env)
    real_venv = os.path.realpath(venv)
    assert any(real_venv in command_of(p) for p in servers), [command_of(p) for p in servers]

    report = run_probe(f"http://127.0.0.1:{port}/", token)
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    execute = next(c for c in report.checks if c.name == "kernel-execute")
    assert "'42'" in execute.detail, execute.detail

    done = env.run("down", profile, check=True)
    assert f"stopped {profile}" in done.stderr, done.stderr
    assert not ours_listening(env, port), "local port still open after down"
    wait_for(lambda: not remote_jupyters(env), timeout=15)
    assert not leftover_processes(env)
    assert not (env.ct_home / "state" / f"{profile}.json").exists()


# ---------------------------------------------------------------------------------------------
# negative controls: the same server with the flags people get wrong
# ---------------------------------------------------------------------------------------------

# Notebook 6 ignores the harness's --ServerApp.ip/port/port_retries exactly as it ignores the Colab
# flags under test. This config file (Notebook 6 reads jupyter_notebook_config.py from
# JUPYTER_CONFIG_DIR) hands it those three harness settings only, so it listens where
# running_jupyter waits; the CORS flags stay under the wrong prefix.
NB6_HARNESS_SHIM = """\
import sys
for _arg in sys.argv:
    for _name, _type in (("ip", str), ("port", int), ("port_retries", int)):
        if _arg.startswith("--ServerApp.%s=" % _name):
            setattr(c.NotebookApp, _name, _type(_arg.split("=", 1)[1]))
"""

NOTEBOOKAPP_COLAB_FLAGS = [
    f"--NotebookApp.allow_origin={COLAB_ORIGIN}",
    "--NotebookApp.allow_credentials=True",
]

NEGATIVE = {
    # name: (colab_flags, extra_args, words the fix must contain, version prefix at /api)
    "notebook6": (True, [], ("allow_credentials", "--NotebookApp"), "6."),
    "notebook7": (
        False,
        ["--ServerApp.allow_origin=" + COLAB_ORIGIN],
        ("allow_credentials",),
        "2.",
    ),
    "lab": (False, ["--ServerApp.allow_origin=" + COLAB_ORIGIN], ("allow_credentials",), "2."),
    "server": (False, NOTEBOOKAPP_COLAB_FLAGS, ("allow_credentials",), "2."),
}


def _wrong_flags_probe(tmp_path: Path, venv: Path, name: str) -> tuple[ProbeReport, str, str]:
    """Start flavour `name` with its wrong flags and probe it: (report, Jupyter's log, /api version)."""
    colab_flags, extra_args, _, _ = NEGATIVE[name]
    if name == "notebook6":
        config_dir(tmp_path).mkdir(parents=True, exist_ok=True)
        (config_dir(tmp_path) / "jupyter_notebook_config.py").write_text(NB6_HARNESS_SHIM)
    with running_jupyter(
        tmp_path,
        token=TOKEN,
        app=FLAVOURS[name].app,
        python=python_of(venv),
        colab_flags=colab_flags,
        extra_args=extra_args,
    ) as server:
        report = run_probe(server.base_url, TOKEN, timeout=30)
        api_version = requests.get(server.base_url + "api", timeout=10).json()["version"]
        log = server.log_path.read_text(errors="replace")
    return report, log, str(api_version)


@pytest.mark.parametrize("name", MATRIX)
def test_negative_control_fails_probe_with_diagnosis(
    tmp_path: Path, venvs: dict[str, Path], name: str
) -> None:
    _, _, must_mention, version = NEGATIVE[name]
    report, log, api_version = _wrong_flags_probe(tmp_path, venvs[name], name)
    shown = json.dumps(report.to_dict(), indent=1)
    assert not report.ok, shown
    failure = report.first_failure()
    assert failure is not None and failure.name == "preflight", shown
    assert "Access-Control-Allow-Credentials: (absent)" in failure.detail, shown
    assert failure.fix, shown
    for word in must_mention:
        assert word in failure.fix, f"fix does not mention {word!r}: {failure.fix}"
    # a wrong prefix is silent: Jupyter logs nothing about the flags it ignored
    if name == "notebook6":
        assert "ServerApp" not in log, log
    if name == "server":
        assert "NotebookApp" not in log and "allow_credentials" not in log, log
    # what the server says it is at /api: Notebook 6.5.x; jupyter_server 2.x under the others
    assert api_version.startswith(version), (name, api_version)


def test_bare_server_wrong_prefix_fix_points_at_serverapp(
    tmp_path: Path, venvs: dict[str, Path]
) -> None:
    report, _, _ = _wrong_flags_probe(tmp_path, venvs["server"], "server")
    failure = report.first_failure()
    assert failure is not None and failure.fix
    fix = failure.fix
    # the cure for this server is the ServerApp prefix; Notebook 6 is not what it is
    assert re.search(r"jupyter_server|needs? --ServerApp|--ServerApp\.allow", fix), fix
    assert 'set app = "notebook"' not in fix, fix


@pytest.mark.parametrize("name", ["notebook7", "lab"])
def test_notebookapp_prefix_is_translated(
    tmp_path: Path, venvs: dict[str, Path], name: str
) -> None:
    """Notebook 7 and JupyterLab map --NotebookApp.* onto ServerApp (with a warning): it works."""
    flavour = FLAVOURS[name]
    with running_jupyter(
        tmp_path,
        token=TOKEN,
        app=flavour.app,
        python=python_of(venvs[name]),
        colab_flags=False,
        extra_args=NOTEBOOKAPP_COLAB_FLAGS,
    ) as server:
        report = run_probe(server.base_url, TOKEN, timeout=30)
        log = server.log_path.read_text(errors="replace")
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    assert "'allow_credentials' has moved from NotebookApp to ServerApp" in log, log


# ---------------------------------------------------------------------------------------------
# refused before starting: wrong app for what is installed, no ipykernel
# ---------------------------------------------------------------------------------------------


def _assert_nothing_started(env: Env, profile: str) -> None:
    assert not remote_jupyters(env), [command_of(p) for p in remote_jupyters(env)]
    assert not (_run_dir(env, profile) / "jupyter.pid").exists(), "a Jupyter was launched"
    assert not (env.ct_home / "state" / f"{profile}.json").exists()
    assert not leftover_processes(env)


def test_app_lab_on_bare_server_refused_with_install_command(
    env: Env, venvs: dict[str, Path]
) -> None:
    profile = "fm-server-as-lab"
    venv = venvs["server"]
    env.write_profile(profile, host="gpu-test", activate=f"source {venv}/bin/activate", app="lab")
    code, data = _up_json(env, profile)
    assert code == 1, data
    assert data["ok"] is False, data
    error = data["error"]
    assert "jupyterlab" in error["message"], error
    assert error["hint"] and re.search(r"pip install '?jupyterlab", error["hint"]), error
    assert "Traceback" not in data["_stderr"]
    _assert_nothing_started(env, profile)


def test_server_without_ipykernel_refused(env: Env, venvs: dict[str, Path]) -> None:
    profile = "fm-server-nokernel"
    venv = venvs["server-nokernel"]
    env.write_profile(profile, host="gpu-test", activate=f"source {venv}/bin/activate", app="auto")
    code, data = _up_json(env, profile)
    assert code == 1, data
    assert data["ok"] is False, data
    assert "ipykernel" in data["error"]["message"], data
    assert "pip install ipykernel" in (data["error"]["hint"] or ""), data
    assert "pip install ipykernel" in data["_stderr"], data["_stderr"]  # the human output too
    assert "Traceback" not in data["_stderr"]
    _assert_nothing_started(env, profile)
