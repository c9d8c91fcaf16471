"""The early keeper: started before the CLI parses, adopted by `up`, gone when nobody needs it."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import time

import pytest

from colabtunnel.jupyter.probe import run_probe
from colabtunnel.keeper import launch as keeper_launch
from colabtunnel.keeper import state
from colabtunnel.keeper.launch import profile_of, wants_keeper
from tests.conftest import Env, leftover_processes
from tests.tunnel_helpers import keepers


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["up", "gpu"], True),
        (["--debug", "-v", "up", "gpu", "--json"], True),
        (["up", "gpu", "--foreground"], False),  # runs in this process
        (["up", "--help"], False),
        (["up", "-h"], False),
        (["status"], False),
        (["down", "up"], False),  # "up" as a profile name
        (["profiles", "show", "up"], False),
        ([], False),
        (["--debug"], False),
    ],
)
def test_which_commands_start_an_early_keeper(argv: list[str], wanted: bool) -> None:
    assert wants_keeper(argv) is wanted


@pytest.mark.parametrize(
    ("argv", "profile"),
    [
        (["up", "gpu"], "gpu"),
        (["--debug", "up", "--timeout", "30", "--accept-new", "gpu", "--json"], "gpu"),
        (["up", "--local-port", "8890", "--remote-port", "9000", "gpu"], "gpu"),
        (["up", "--timeout=30", "gpu"], "gpu"),
        (["up", "--json"], None),
        (["status"], None),
    ],
)
def test_the_profile_an_up_names(argv: list[str], profile: str | None) -> None:
    assert profile_of(argv) == profile


def test_no_early_keeper_for_a_tunnel_that_is_up(local_env: Env) -> None:
    """`up` on a live tunnel prints its URL: a keeper started early would only compete with it
    for a core. Its record says so (a live keeper, a reusable health); anything else still
    gets one."""
    me = os.getpid()
    record = state.Record(
        profile="local",
        keeper_pid=me,
        keeper_started=state.process_identity(me) or 0.0,
        host="local",
        local_port=8888,
        remote_port=8888,
        token="t",
        flavour="notebook7",
    )
    state.write(record)
    try:
        for health, early in (("ok", False), ("reconnecting", False), ("remote-dead", True)):
            record.set_health(health)
            keeper_launch.start_early(["up", "local"])
            child = keeper_launch.take_early()
            if child is not None:
                child.kill()
                child.wait()
            assert (child is not None) is early, health
    finally:
        state.remove("local")
        keeper_launch.discard_early()


def test_unadopted_early_keeper_is_gone_when_up_exits(local_env: Env) -> None:
    # A configuration error: the early keeper was started, `up` never adopted it. Checked the
    # moment the CLI has exited, not after a grace period.
    done = local_env.run("up", "no-such-profile")
    assert done.returncode == 2, done.stderr
    assert not keepers(local_env)
    assert "Traceback" not in done.stderr


def test_up_adopts_the_early_keeper_and_a_second_up_leaves_one(local_env: Env) -> None:
    local_env.run("up", "local", check=True)
    record = json.loads((local_env.ct_home / "state" / "local.json").read_text())
    running = keepers(local_env)
    assert [p.pid for p in running] == [record["keeper_pid"]]
    assert "--warm" in running[0].cmdline()  # the early one, not a second launch
    local_env.run("up", "local", check=True)  # already up: its early keeper is discarded
    assert [p.pid for p in keepers(local_env)] == [record["keeper_pid"]]
    local_env.run("down", "local", check=True)
    assert not leftover_processes(local_env)


@pytest.mark.posix  # a pty hang-up
def test_the_keeper_outlives_the_terminal_that_started_it(local_env: Env) -> None:
    """Closing the terminal window: the kernel hangs up the terminal's session (SIGHUP to its
    shell and to its foreground process group). `up` ran in that shell; its keeper must not
    share the session's fate. A real pty, a real shell, a real hang-up."""
    import pty
    import select

    pid, master = pty.fork()
    if pid == 0:  # the terminal's shell; `up` in it without job control, so in its group
        command = f"{shlex.quote(sys.executable)} -m colabtunnel up local; sleep 600"
        os.execvp("bash", ["bash", "--norc", "--noprofile", "-c", command])
    said = b""
    deadline = time.monotonic() + 120
    while b"?token=" not in said:
        assert time.monotonic() < deadline, said.decode(errors="replace")
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            with contextlib.suppress(OSError):
                said += os.read(master, 65536)
    record = state.read("local")
    assert record is not None and state.keeper_alive(record)
    os.close(master)  # the window closes
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP, status
    time.sleep(2)  # what the hang-up would have killed is dead by now
    assert state.keeper_alive(record)
    url = f"http://127.0.0.1:{record.local_port}/"
    assert run_probe(url, record.token).ok
