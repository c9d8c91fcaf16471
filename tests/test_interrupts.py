"""Ctrl-C and SIGTERM at every step of `up` and `up --foreground` leave nothing on either side:
no keeper, no Jupyter, no kernel, no state record, no run directory on the host (it holds the
token).

Each step is held open by a real slowness, and the test signals only once `up` has said (on its
progress output) that it reached that step:
- connecting: the link to sshd is silent (tests/silent_link.py), so the SSH banner never comes;
- inspecting and starting: the profile's `activate` line takes 3 s (it runs in both scripts; while
  the start script runs it, the host lock is held);
- waiting for Jupyter: `jupyter` is a wrapper that sleeps 8 s before it becomes Jupyter, and the
  signal goes once its PID is on the host (the launch is over, the server does not answer yet);
- probing: the host's kernel runs each cell 10 s late (an IPython start-up hook), so the probe's
  cell is still running;
- after the URL (foreground: that is how it is stopped).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import ACTIVATE, VENV_BIN, Env, jupyters_under, wait_for
from tests.silent_link import SilentLink
from tests.sshd import Sshd, running_sshd
from tests.tunnel_helpers import URL_RE, keepers, nothing_left, root_profile, run_dir

NAME = "sig"
SLOW_S = 3
PROMPT_S = 5.0  # the slow steps below hold for 8-10 s more


@dataclass
class Host:
    server: Sshd
    link: SilentLink
    tmp: Path


@pytest.fixture
def host(tmp_path: Path, env: Env) -> Iterator[Host]:
    """An sshd of this test's own, reached through a SilentLink (profile written per step)."""
    with running_sshd(tmp_path / "own-sshd") as server:
        link = SilentLink(server.port)
        try:
            yield Host(server, link, tmp_path)
        finally:
            link.release()
            env.run("down", NAME, timeout=120)
            link.close()
            for proc in jupyters_under(server.remote_home):
                proc.kill()


def _profile(env: Env, host: Host, **keys: object) -> None:
    root_profile(env, host.server, NAME, port=host.link.port, **{"keepalive": 5, **keys})


def _slow_jupyter(host: Host) -> Path:
    wrapper = host.tmp / "slow-jupyter"
    wrapper.write_text(f'#!/bin/sh\nsleep 8\nexec {VENV_BIN / "jupyter"} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _slow_execution(host: Host) -> None:
    """The host's kernels start and answer kernel_info at once, then run each cell 10 s late.
    (A slow kernelspec in the host's home would not do: Jupyter in a virtualenv prefers the
    env's own python3 spec, and the host waits for the kernel to start before `up` probes.)"""
    startup = host.server.remote_home / ".ipython/profile_default/startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-slow.py").write_text(
        "import time\nget_ipython().events.register('pre_execute', lambda: time.sleep(10))\n"
    )


@dataclass(frozen=True)
class Step:
    marker: str  # what `up` prints when it gets there
    prepare: Callable[[Env, Host], None]
    reached: Callable[[Host], bool] = lambda host: True  # more proof, on the host itself
    # The step is cut short at once (the launched Jupyter stopped, the probe's connections
    # closed, the login abandoned) rather than waited for.
    prompt: bool = False


STEPS = {
    "connecting": Step(
        "connecting to", lambda env, host: (_profile(env, host), host.link.hold()), prompt=True
    ),
    "inspecting": Step(
        "inspecting", lambda env, host: _profile(env, host, activate=_SLOW_ACTIVATE)
    ),
    "starting": Step("starting ", lambda env, host: _profile(env, host, activate=_SLOW_ACTIVATE)),
    "waiting for Jupyter": Step(
        "starting ",
        lambda env, host: _profile(env, host, jupyter=str(_slow_jupyter(host))),
        reached=lambda host: (run_dir(host.server, NAME) / "jupyter.pid").exists(),
        prompt=True,
    ),
    "probing": Step(
        "checking it the way Colab",
        lambda env, host: (_profile(env, host), _slow_execution(host)),
        prompt=True,
    ),
}
_SLOW_ACTIVATE = f"{ACTIVATE}\nsleep {SLOW_S}"


def _until(proc: subprocess.Popen[str], marker: str) -> str:
    """Read `up`'s progress (stderr) until `marker`; return what was read."""
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"`up` ended before {marker!r}:\n{seen}")


def _interrupt(env: Env, host: Host, step: Step, signum: int, *args: str) -> float:
    """Run `up` to `step`, signal it; return how long it took to exit after the signal."""
    step.prepare(env, host)
    proc = env.popen("up", NAME, *args)
    seen = _until(proc, step.marker)
    wait_for(lambda: step.reached(host), timeout=20, interval=0.02)
    proc.send_signal(signum)
    sent = time.monotonic()
    out, rest = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    output = seen + rest
    assert proc.returncode == 130, f"exit {proc.returncode}\n{output}"
    assert "Traceback" not in output and "internal error" not in output, output
    assert not URL_RE.search(out), out
    return took


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("mode", ["background", "foreground"])
def test_a_signal_at_each_step_of_up_leaves_nothing(
    env: Env, host: Host, mode: str, step: str, signum: int
) -> None:
    args = ("--foreground",) if mode == "foreground" else ()
    took = _interrupt(env, host, STEPS[step], signum, *args)
    host.link.release()
    nothing_left(env, host.server, NAME)
    print(f"{mode} {step}: exited {took:.2f} s after the signal")
    if STEPS[step].prompt:
        assert took < PROMPT_S, f"`up` took {took:.1f} s to exit after the signal"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_after_the_url_stops_a_foreground_tunnel_completely(
    env: Env, host: Host, signum: int
) -> None:
    _profile(env, host)
    proc = env.popen("up", NAME, "--foreground")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert URL_RE.search(line), line
    assert jupyters_under(host.server.remote_home)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    nothing_left(env, host.server, NAME)


@pytest.mark.parametrize("mode", ["background", "foreground"])
def test_a_second_ctrl_c_during_the_clean_up_does_not_cut_it_short(
    env: Env, host: Host, mode: str
) -> None:
    _profile(env, host, activate=_SLOW_ACTIVATE)
    proc = env.popen("up", NAME, *(["--foreground"] if mode == "foreground" else []))
    seen = _until(proc, "starting ")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)  # the clean-up now waits for the host lock (the slow activate holds it)
    assert proc.poll() is None, "the clean-up was over before the second Ctrl-C"
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert not keepers(env), "`up` returned while its keeper was still cleaning up"
    nothing_left(env, host.server, NAME)
    assert proc.returncode == 130, seen + rest
    assert "still cleaning up" in rest, rest
    assert "Traceback" not in rest


def test_an_interrupt_while_the_host_lock_is_held_leaves_no_jupyter(env: Env, host: Host) -> None:
    """The start script holds the host lock from before `activate` until Jupyter's PID is on disk;
    the clean-up's STOP waits for it, so a Jupyter launched after the interrupt is still stopped."""
    launched = host.tmp / "launched.pid"
    wrapper = host.tmp / "recording-jupyter"
    wrapper.write_text(f'#!/bin/sh\necho $$ >{launched}\nexec {VENV_BIN / "jupyter"} "$@"\n')
    wrapper.chmod(0o755)

    def prepare(env: Env, host: Host) -> None:
        _profile(env, host, activate=_SLOW_ACTIVATE, jupyter=str(wrapper))

    _interrupt(env, host, Step(STEPS["starting"].marker, prepare), signal.SIGINT)
    # the launch that was under way when the signal came did happen (its wrapper ran), and was
    # stopped: its process is gone and so is every file of it
    assert launched.exists(), "the signal came before the launch: this test proves nothing then"
    assert not psutil.pid_exists(int(launched.read_text())), "the launched Jupyter still runs"
    assert "jupyter.pid" not in str(list(host.server.remote_home.rglob("*")))
    nothing_left(env, host.server, NAME)


def _cut_during_the_probe(env: Env, host: Host, mode: str) -> tuple[subprocess.Popen[str], str]:
    """`up` to its probe, then the link resets every connection (as a NAT that forgot them)."""
    STEPS["probing"].prepare(env, host)
    proc = env.popen("up", NAME, *(["--foreground"] if mode == "foreground" else []))
    seen = _until(proc, STEPS["probing"].marker)
    host.link.cut()
    return proc, seen


@pytest.mark.parametrize("mode", ["background", "foreground"])
def test_a_connection_lost_during_start_up_is_replaced_to_stop_jupyter(
    env: Env, host: Host, mode: str
) -> None:
    """The probe fails with the connection; the clean-up cannot stop Jupyter over it, so it logs
    in once more (one new connection through the link) and stops it there."""
    proc, seen = _cut_during_the_probe(env, host, mode)
    logins, cut = host.link.accepted, time.monotonic()
    _, rest = proc.communicate(timeout=120)
    took, output = time.monotonic() - cut, seen + rest
    assert proc.returncode == 1, output
    # The probe fails with the connection (nobody would replace it during start-up: waiting for
    # that took 30 s)
    assert took < 15, f"`up` failed {took:.1f} s after the link was cut"
    assert "Colab check" in output and "may still run" not in output, output
    nothing_left(env, host.server, NAME)
    assert host.link.accepted == logins + 1, f"{host.link.accepted - logins} new connections"


def test_a_host_that_cannot_be_reached_to_clean_up_is_named_with_the_command_that_stops_it(
    env: Env, host: Host
) -> None:
    proc, seen = _cut_during_the_probe(env, host, "background")
    host.link.refuse_for(120)  # the network is not back before `up` gives up
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 1, seen + rest
    assert "could not be reached to undo this start" in rest, rest
    assert "may still run there. Stop it with: ssh -p" in rest, rest
    assert jupyters_under(host.server.remote_home), "the test's premise: Jupyter was left"


@pytest.mark.parametrize("mode", ["background", "foreground"])
def test_ctrl_c_on_a_silent_link_says_within_seconds_what_may_still_run(
    env: Env, host: Host, mode: str
) -> None:
    """The link goes silent under the probe (a lid closed, Wi-Fi gone) and the user presses
    Ctrl-C: the clean-up gives up on the unanswering connection after STOP_PING_S, its new
    login gets no banner, and `up` says what may still run on the host and how to stop it."""
    STEPS["probing"].prepare(env, host)
    proc = env.popen("up", NAME, *(["--foreground"] if mode == "foreground" else []))
    seen = _until(proc, STEPS["probing"].marker)
    host.link.hold()
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, rest = proc.communicate(timeout=120)
    took, output = time.monotonic() - sent, seen + rest
    assert proc.returncode == 130, output
    assert "could not be reached to undo this start" in output, output
    assert "may still run there. Stop it with: ssh -p" in output, output
    assert "Traceback" not in output, output
    # a stop waiting on the silent connection for its own timeout took 70 s, past `up`'s wait
    # for its keeper (60 s), which then killed it without a word
    assert took < 40, f"`up` took {took:.1f} s to exit"
    host.link.release()
    assert jupyters_under(host.server.remote_home), "the test's premise: Jupyter was left"


def test_a_keeper_killed_before_its_clean_up_ends_still_leaves_word_of_what_may_run(
    env: Env, host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up` waits only so long for an interrupted keeper to undo its start-up, then kills it:
    what may still run on the host is then said by `up` itself, not lost with the keeper.
    (The wait is 60 s; 3 s here, under the keeper's 5 s stop ping on the silent link.)"""
    monkeypatch.setenv("COLABTUNNEL_TEST_UNDO_WAIT_S", "3")
    STEPS["probing"].prepare(env, host)
    proc = env.popen("up", NAME)
    seen = _until(proc, STEPS["probing"].marker)
    host.link.hold()
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    output = seen + rest
    assert proc.returncode == 130, output
    assert "its keeper did not finish undoing the start-up within 3 s" in output, output
    assert "may still run there. Stop it with: ssh -p" in output, output
    assert "Traceback" not in output, output
    host.link.release()


def test_ctrl_c_on_a_serving_foreground_tunnel_with_the_host_gone_says_what_still_runs(
    env: Env, host: Host
) -> None:
    """After the URL, the link goes silent and the user presses Ctrl-C: the stop cannot reach
    the host, so `up --foreground` says so on the terminal with the command that stops Jupyter,
    exits 1, and keeps the record: `down`, once the host answers, stops Jupyter itself."""
    _profile(env, host)
    proc = env.popen("up", NAME, "--foreground")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert URL_RE.search(line), line
    host.link.hold()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "the host could not be reached to stop Jupyter" in err, err
    assert "may still run on root@127.0.0.1" in err and "Traceback" not in err, err
    assert "hint: stop it with: ssh -p" in err, err
    assert jupyters_under(host.server.remote_home), "the test's premise: Jupyter was left"
    assert json.loads((env.ct_home / "state" / f"{NAME}.json").read_text())["health"] == (
        "stop-failed"
    )
    host.link.release()
    done = env.run("down", NAME, timeout=120)
    assert done.returncode == 0 and "its keeper is gone" in done.stderr, done.stderr
    nothing_left(env, host.server, NAME)
