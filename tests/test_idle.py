"""idle_timeout: Jupyter ends itself once nobody uses it, and colabtunnel says so.

Real Jupyter of every flavour on the test sshd, `idle_timeout = "20s"`, kernels culled every 5 s
(flavours.cull_interval). The server's own no-activity check runs once a minute in every flavour
(jupyter_server and Notebook 6 both fix it at 60 s), so a server ends between 20 s and about 80 s
after its last activity: the deadlines below allow that plus the keeper's 5 s watch.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests import flavour_venvs
from tests.conftest import Env, wait_for
from tests.flavour_venvs import MATRIX
from tests.sshd import running_sshd
from tests.tunnel_helpers import Kernel, root_profile, run_dir, token_of, up_json

pytestmark = pytest.mark.timeout(600)

IDLE_S = 20
SERVER_CHECK_S = 60  # jupyter_server's and Notebook 6's shutdown_no_activity period
ENDS_WITHIN_S = IDLE_S + SERVER_CHECK_S + 30


def _profile(env: Env, name: str, flavour: str) -> str:
    venv = flavour_venvs.flavour_venv(flavour)
    profile = f"idle-{name}"
    env.write_profile(
        profile,
        host="gpu-test",
        activate=f"source {venv}/bin/activate",
        keepalive=5,
        idle_timeout=f"{IDLE_S}s",
    )
    return profile


def _status(env: Env, profile: str) -> dict:
    done = env.run("status", profile, "--json", "--no-gpu")
    return json.loads(done.stdout)


def _ended(env: Env, profile: str) -> dict | None:
    notes = [n for n in _status(env, profile)["ended"] if n["profile"] == profile]
    return notes[0] if notes else None


def _server(tunnel: dict) -> psutil.Process:
    return psutil.Process(tunnel["handle"]["pid"])


def _gone(server: psutil.Process) -> bool:
    try:
        return not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _gone_on_the_host(env: Env, profile: str, server: psutil.Process) -> None:
    assert env.sshd is not None
    wait_for(lambda: _gone(server), timeout=15)
    folder: Path = run_dir(env.sshd, profile)
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())  # the token went with it


def test_unused_servers_of_every_flavour_end_themselves_and_status_says_idle(env: Env) -> None:
    """All four flavours at once (each server's own check comes once a minute, so one at a time
    would take four minutes of waiting). One runs in `up --foreground`, which then ends by itself
    too and says why; one loses its keeper (a laptop closed): the host's watcher alone removes
    the run directory and its token once that server ends."""
    *kept, orphan, held = MATRIX
    tunnels = {flavour: up_json(env, _profile(env, flavour, flavour)) for flavour in kept}
    began = time.monotonic()
    servers = {flavour: _server(tunnel) for flavour, tunnel in tunnels.items()}
    left = up_json(env, _profile(env, orphan, orphan))
    orphan_server = _server(left)
    os.kill(left["keeper_pid"], signal.SIGKILL)
    foreground = env.popen("up", _profile(env, held, held), "--foreground")
    try:
        assert env.sshd is not None
        wait_for(lambda: _gone(orphan_server), timeout=ENDS_WITHIN_S, interval=2)
        wait_for(lambda: not run_dir(env.sshd, f"idle-{orphan}").exists(), timeout=10)
        for flavour in kept:
            note = wait_for(
                lambda f=flavour: _ended(env, f"idle-{f}"), timeout=ENDS_WITHIN_S, interval=2
            )
            print(f"{flavour}: ended {time.monotonic() - began:.0f} s after `up`")
            assert note["why"] == "idle" and note["idle_timeout"] == IDLE_S, note
            assert note["text"] == "ended: idle for 20s"
            assert not _status(env, f"idle-{flavour}")["tunnels"]  # keeper gone, not remote-dead
            _gone_on_the_host(env, f"idle-{flavour}", servers[flavour])
        _, err = foreground.communicate(timeout=ENDS_WITHIN_S)
    finally:
        if foreground.poll() is None:
            foreground.terminate()
            foreground.wait(60)
    assert foreground.returncode == 0, err
    assert "Jupyter ended itself after 20s with nothing to do" in err, err
    assert env.sshd is not None and not run_dir(env.sshd, f"idle-{held}").exists()

    text = env.run("status").stdout
    assert all(f"idle-{f}" in text for f in kept) and "ended: idle for 20s" in text, text
    flavour = kept[0]
    again = env.run("up", f"idle-{flavour}", "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)["tunnel"]
    assert "ended: idle for 20s" in again.stderr and "URL (token) changes" in again.stderr
    assert token_of(second) != token_of(tunnels[flavour])
    assert _ended(env, f"idle-{flavour}") is None  # read once, then forgotten


def test_a_cell_every_5s_keeps_it_and_it_ends_after_the_last(env: Env) -> None:
    """jupyter_server and Notebook 6 are the two implementations of culling: both at once."""
    flavours = ("notebook7", "notebook6")
    tunnels = {f: up_json(env, _profile(env, f"busy-{f}", f)) for f in flavours}
    kernels = {f: Kernel(t["local_port"], token_of(t)) for f, t in tunnels.items()}
    servers = {f: _server(t) for f, t in tunnels.items()}
    stop = threading.Event()
    answered: dict[str, list[str]] = {f: [] for f in flavours}

    def work(flavour: str) -> None:
        while not stop.is_set():
            answered[flavour].append(kernels[flavour].run("print(6 * 7)", timeout=30))
            stop.wait(5)

    workers = [threading.Thread(target=work, args=(f,), daemon=True) for f in flavours]
    for worker in workers:
        worker.start()
    try:
        # past the server's own check (60 s after its start) with the kernel older than
        # idle_timeout, and past many of the kernel culler's (every 5 s)
        time.sleep(SERVER_CHECK_S + IDLE_S // 4 * 2)
        for flavour in flavours:
            cells = answered[flavour]
            assert cells and set(cells) == {"42\n"}, (flavour, cells)
            assert not _gone(servers[flavour]), flavour
            assert _ended(env, f"idle-busy-{flavour}") is None
            assert _status(env, f"idle-busy-{flavour}")["tunnels"][0]["health"] == "ok"
        assert all(worker.is_alive() for worker in workers)
    finally:
        stop.set()
        for worker in workers:
            worker.join(40)
    last = time.monotonic()
    for flavour in flavours:
        wait_for(lambda f=flavour: _ended(env, f"idle-busy-{f}"), timeout=ENDS_WITHIN_S, interval=2)
        print(
            f"{flavour}: {len(answered[flavour])} cells; ended {time.monotonic() - last:.0f} s after"
        )
        _gone_on_the_host(env, f"idle-busy-{flavour}", servers[flavour])


def test_status_shows_the_last_activity_and_asks_no_new_login(env: Env, tmp_path: Path) -> None:
    """The figure is Jupyter's own last_activity, asked by the keeper through the tunnel it holds:
    the sshd (VERBOSE: a line per connection accepted) sees no connection while status runs."""
    with running_sshd(tmp_path / "counted", extra="LogLevel VERBOSE\n") as server:
        root_profile(env, server, "counted", idle_timeout="2h")
        try:
            tunnel = up_json(env, "counted")
            kernel = Kernel(tunnel["local_port"], token_of(tunnel))
            accepted = server.log.read_text().count("Connection from")
            time.sleep(2)  # the new kernel's start-up messages are activity too: let them pass
            before = _activity(env, "counted")
            assert before["problem"] is None and before["idle_timeout"] == 7200, before
            time.sleep(2.5)
            later = _activity(env, "counted")
            assert later["last_activity"] == before["last_activity"], (
                before,
                later,
            )  # asking is no use
            assert later["idle_s"] >= 2.5 and later["ends_at"] == before["last_activity"] + 7200
            assert kernel.run("print(6 * 7)") == "42\n"
            after = _activity(env, "counted")
            assert after["last_activity"] >= before["last_activity"] + 2.5, (before, after)
            assert after["idle_s"] < 2.5, after
            text = env.run("status", "counted").stdout
            assert "last activity" in text and "ends when idle for 2h" in text, text
            assert server.log.read_text().count("Connection from") == accepted
        finally:
            env.run("down", "counted", timeout=120)


def _activity(env: Env, profile: str) -> dict:
    return _status(env, profile)["tunnels"][0]["activity"]
