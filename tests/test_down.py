"""`down` in every state a tunnel can be in: a live keeper, a dead keeper, a host that cannot be
reached, a host whose key changed meanwhile. The local side is always cleaned; what cannot be
stopped on the host is named, with a command that does stop it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from colabtunnel.keeper import channel
from tests.conftest import Env, jupyters_under, wait_for
from tests.sshd import Sshd, running_sshd
from tests.test_link_faults import _impostor
from tests.tunnel_helpers import (
    Kernel,
    keepers,
    record_of,
    root_profile,
    run_dir,
    sessions,
    token_of,
    up_json,
)

NAME = "box"


@pytest.fixture
def own(tmp_path: Path, env: Env) -> Iterator[Sshd]:
    with running_sshd(tmp_path / "own-sshd") as server:
        root_profile(env, server, NAME, keepalive=5)
        yield server
        env.run("down", NAME, timeout=120)
        for proc in jupyters_under(server.remote_home):
            proc.kill()


def _stop_sshd(server: Sshd) -> None:
    """The host goes away: sshd and every session it runs (so the keeper's connection drops)."""
    running = sessions(server)
    server.process.terminate()
    server.process.wait(10)
    for proc in running:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _files_holding(root: Path, token: str) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and token in path.read_text(errors="replace"):
                found.append(path)
    return found


def _stopped_everything(env: Env, server: Sshd, token: str) -> None:
    wait_for(lambda: not jupyters_under(server.remote_home), timeout=30)
    assert not keepers(env)
    assert record_of(env, NAME) is None
    assert not run_dir(server, NAME).exists()
    assert not _files_holding(server.remote_home, token), "a file on the host still holds the token"


def test_down_removes_the_host_run_directory_and_every_copy_of_the_token(
    env: Env, own: Sshd
) -> None:
    tunnel = up_json(env, NAME)
    token = token_of(tunnel)
    Kernel(tunnel["local_port"], token).run("x = 1")
    assert _files_holding(own.remote_home, token)  # the run directory's token file, at least
    done = env.run("down", NAME, check=True)
    assert f"stopped {NAME}" in done.stderr and "warning" not in done.stderr
    _stopped_everything(env, own, token)


def test_down_after_the_keeper_died_stops_jupyter_itself(env: Env, own: Sshd) -> None:
    tunnel = up_json(env, NAME)
    token = token_of(tunnel)
    Kernel(tunnel["local_port"], token).run("x = 1")
    os.kill(tunnel["keeper_pid"], signal.SIGKILL)
    wait_for(lambda: not keepers(env), timeout=10)
    done = env.run("down", NAME, check=True)
    assert "its keeper is gone" in done.stderr and "warning" not in done.stderr, done.stderr
    _stopped_everything(env, own, token)


def test_down_stops_a_keeper_without_signal_handlers_by_its_control_channel(
    env: Env, own: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on Windows, where a signal cannot ask a keeper anything: the keeper installs no
    handler (SIGTERM would kill it outright, its clean-up unrun), and `down` is carried out by
    the "stop" order over the control channel: Jupyter stopped on the host, nothing left."""
    monkeypatch.setenv("COLABTUNNEL_TEST_NO_SIGNALS", "1")
    tunnel = up_json(env, NAME)
    token = token_of(tunnel)
    Kernel(tunnel["local_port"], token).run("x = 1")
    handlers = _signal_handlers(tunnel["keeper_pid"])
    assert handlers is not None and signal.SIGTERM not in handlers, "the keeper still handles TERM"
    done = env.run("down", NAME, check=True)
    assert f"stopped {NAME}" in done.stderr and "warning" not in done.stderr, done.stderr
    _stopped_everything(env, own, token)
    log = (env.ct_home / "logs" / f"{NAME}.log").read_text()
    assert "asked to stop over the control channel" in log


def test_down_falls_back_to_a_signal_when_the_keeper_cannot_be_asked(env: Env, own: Sshd) -> None:
    tunnel = up_json(env, NAME)
    token = token_of(tunnel)
    Path(channel.address(NAME, tunnel["keeper_pid"]).address).unlink()  # its channel is gone
    done = env.run("down", NAME, check=True)
    assert f"stopped {NAME}" in done.stderr and "warning" not in done.stderr, done.stderr
    _stopped_everything(env, own, token)
    assert "stopping (SIGTERM)" in (env.ct_home / "logs" / f"{NAME}.log").read_text()


def _signal_handlers(pid: int) -> set[int] | None:
    """The signals `pid` has a handler for (Linux: SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    mask = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    return {signum for signum in range(1, 65) if mask & (1 << (signum - 1))}


def _manual_command(stderr: str) -> str:
    match = re.search(r"Stop it with: (ssh .+)$", stderr, re.M)
    assert match, stderr
    return match.group(1)


@pytest.mark.parametrize("keeper", ["alive", "dead"])
def test_down_with_the_host_unreachable_cleans_here_and_says_how_to_stop_it_there(
    env: Env, own: Sshd, tmp_path: Path, keeper: str
) -> None:
    tunnel = up_json(env, NAME)
    token = token_of(tunnel)
    Kernel(tunnel["local_port"], token).run("x = 1")
    if keeper == "dead":
        os.kill(tunnel["keeper_pid"], signal.SIGKILL)
    _stop_sshd(own)
    done = env.run("down", NAME, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, done.stderr
    command = _manual_command(warnings[0])
    assert not keepers(env) and record_of(env, NAME) is None  # the local side is clean
    again = env.run("down", NAME, check=True)
    assert "nothing was running" in again.stderr, again.stderr
    # The host comes back: the command given does stop Jupyter there, kernels and token included.
    assert jupyters_under(own.remote_home), "Jupyter should have outlived the unreachable host"
    with running_sshd(tmp_path / "own-sshd", port=own.port) as back:
        # OpenSSH finds ~ in the password database, not $HOME: point it at the test's files.
        here = f"ssh -F /dev/null -o UserKnownHostsFile={env.known_hosts} -o BatchMode=yes "
        ran = subprocess.run(
            ["bash", "-c", here + command.removeprefix("ssh ")],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert ran.returncode == 0, ran.stderr
        _stopped_everything(env, back, token)


def test_down_with_a_changed_host_key_refuses_to_log_in_and_cleans_here(
    env: Env, own: Sshd, tmp_path: Path
) -> None:
    tunnel = up_json(env, NAME)
    os.kill(tunnel["keeper_pid"], signal.SIGKILL)
    _stop_sshd(own)
    with _impostor(own, tmp_path / "impostor") as impostor:
        done = env.run("down", NAME, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "HAS CHANGED" in done.stderr and "refused to log in" in done.stderr, done.stderr
        _manual_command(done.stderr)
        assert not keepers(env) and record_of(env, NAME) is None
        log = impostor.log.read_text()
        assert "Connection from" in log and "userauth-request" not in log, log
    assert "nothing was running" in env.run("down", NAME, check=True).stderr


def test_logs_masks_a_line_that_really_holds_the_token(env: Env, own: Sshd) -> None:
    tunnel = up_json(env, NAME)
    token = token_of(tunnel)
    # A cell that prints the environment from the kernel process itself: the kernel inherits
    # Jupyter's stdout (its log) and JUPYTER_TOKEN.
    Kernel(tunnel["local_port"], token).run("import os; os.system('env')")
    jupyter_log = run_dir(own, NAME) / "jupyter.log"
    wait_for(lambda: token in jupyter_log.read_text(errors="replace"), timeout=15)
    done = env.run("logs", NAME, "-n", "2000", check=True)
    assert "JUPYTER_TOKEN=" in done.stdout, done.stdout[-2000:]
    assert token not in done.stdout
