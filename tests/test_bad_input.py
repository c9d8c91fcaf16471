"""Bad input, one test per case of issue 5, through the real CLI (and the real sshd where a host is
involved): the exit code (2 configuration, 1 runtime), one `error:` line with the message, a `hint:`
line with the fix, no traceback, and nothing left running afterwards (no keeper, no Jupyter, no
state record).

Unit-level checks of the same rules live in test_profiles.py / test_state.py; test_cli.py has the
first TOML syntax error and `up` of an unknown profile. These go through the commands a user types.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from colabtunnel.ssh import forwarder
from tests.conftest import ACTIVATE, HOST_ALIAS, PROFILE, Env, leftover_processes, wait_for

SETPRIV = shutil.which("setpriv")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# root reads and writes anything: without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH it obeys modes.
OBEY_PERMISSIONS = (
    (SETPRIV, "--bounding-set=-dac_override,-dac_read_search", "--") if IS_ROOT and SETPRIV else ()
)
CAN_TEST_PERMISSIONS = not IS_ROOT or bool(SETPRIV)


def cli(
    *args: str, extra_env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "colabtunnel", *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(extra_env or {}), "COLUMNS": "200", "NO_COLOR": "1"},
    )


def clean_error(done: subprocess.CompletedProcess[str], code: int) -> tuple[str, str]:
    """The `error:` line and the `hint:` line; fails unless the exit code and the shape are right."""
    output = f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == code, output
    assert "Traceback" not in done.stdout + done.stderr, output
    assert "internal error" not in done.stderr, output
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, output
    assert lines.index(hints[0]) > lines.index(errors[0]), output
    assert len(hints[0]) > len("hint: ") + 5, output
    return errors[0], hints[0]


def nothing_left(world: Env, profile: str) -> None:
    """No keeper, no Jupyter (local or on the sshd's side), no state record for `profile`."""
    wait_for(lambda: not leftover_processes(world), timeout=15)
    assert not (world.ct_home / "state" / f"{profile}.json").exists()


def write_raw(world: Env, text: str) -> Path:
    world.ct_home.mkdir(parents=True, exist_ok=True)
    world.profiles.write_text(text, encoding="utf-8")
    return world.profiles


# --- profiles.toml ----------------------------------------------------------------------------------


def test_malformed_toml_names_file_and_line(local_env: Env) -> None:
    # The broken line is in another profile than the one asked for: the whole file is refused.
    path = write_raw(
        local_env,
        '# lab machines\n[profiles.ok]\nhost = "gpu.example.org"\n\n'
        '[profiles.broken]\nhost = "gpu2.example.org\nport = 22\n',
    )
    for command in (("up", "ok"), ("profiles", "list"), ("doctor", "ok")):
        error, hint = clean_error(cli(*command), 2)
        assert str(path) in error and "line 6" in error and "invalid TOML" in error, error
        assert "line 6" in hint
    nothing_left(local_env, "ok")


@pytest.mark.parametrize(
    ("line", "key", "words", "fix"),
    [
        ('port = "22"', "port", "must be an integer", "port = 22"),
        ("keepalive = true", "keepalive", "got a boolean", "keepalive = 15"),
        ('env = "CUDA_VISIBLE_DEVICES=0"', "env", "must be a table", "CUDA_VISIBLE_DEVICES"),
        ('jupyter_args = "--debug"', "jupyter_args", "array of strings", "["),
        ("activate = 1", "activate", "must be a string", 'activate = "..."'),
        ('local_port = "8888"', "local_port", '"auto" or an integer', "local_port = 8888"),
    ],
)
def test_wrong_type_names_file_profile_key_and_line(
    local_env: Env, line: str, key: str, words: str, fix: str
) -> None:
    path = write_raw(local_env, f'[profiles.box]\nhost = "gpu.example.org"\n{line}\n')
    error, hint = clean_error(cli("up", "box"), 2)
    assert f"{path}, line 3: profile 'box': key '{key}'" in error, error
    assert words in error and fix in hint, (error, hint)
    nothing_left(local_env, "box")


@pytest.mark.parametrize(
    ("key", "closest"),
    [("hostnme", "host"), ("workdri", "workdir"), ("IdentityFile", "identity_file")],
)
def test_unknown_key_suggests_the_closest(local_env: Env, key: str, closest: str) -> None:
    path = write_raw(local_env, f'[profiles.box]\nhost = "gpu.example.org"\n{key} = "x"\n')
    error, hint = clean_error(cli("up", "box"), 2)
    assert f"{path}, line 3: profile 'box': unknown key '{key}'" in error, error
    assert f"did you mean '{closest}'?" in hint, hint


@pytest.mark.parametrize(
    "command",
    [("down",), ("doctor",), ("logs",), ("trust",), ("profiles", "show"), ("secret", "delete")],
)
def test_unknown_profile_lists_the_known_ones(local_env: Env, command: tuple[str, ...]) -> None:
    write_raw(
        local_env, '[profiles.gpu-box]\nhost = "gpu.example.org"\n[profiles.lab]\nhost = "l"\n'
    )
    error, hint = clean_error(cli(*command, "gpu-bx"), 2)
    assert "unknown profile 'gpu-bx'" in error and "did you mean 'gpu-box'" in error, error
    assert "known profiles: gpu-box, lab, local" in error, error
    assert "colabtunnel profiles add gpu-bx" in hint


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("port = 0", "port"),
        ("port = 65536", "port"),
        ("local_port = 70000", "local_port"),
        ("remote_port = -1", "remote_port"),
        ("local_port = 0x" + "f" * 40, "local_port"),  # a huge number is still just out of range
    ],
)
def test_port_out_of_range_in_the_profile(local_env: Env, line: str, key: str) -> None:
    path = write_raw(local_env, f'[profiles.box]\nhost = "gpu.example.org"\n{line}\n')
    error, hint = clean_error(cli("up", "box"), 2)
    assert f"{path}, line 3: profile 'box': key '{key}'" in error and "1..65535" in error, error
    assert f"{key} = " in hint
    nothing_left(local_env, "box")


@pytest.mark.parametrize("flag", ["--local-port", "--remote-port"])
def test_port_out_of_range_on_the_command_line(local_env: Env, flag: str) -> None:
    error, hint = clean_error(cli("up", "local", flag, "70000"), 2)
    assert flag in error and "70000" in error and "65535" in error + hint, (error, hint)


# --- identity files (real sshd) -------------------------------------------------------------------


def _key_profile(env: Env, identity_file: Path) -> None:
    env.write_profile(
        "key", host=HOST_ALIAS, identity_file=str(identity_file), activate=ACTIVATE, workdir="~"
    )


def test_identity_file_missing(env: Env) -> None:
    missing = env.home / ".ssh" / "id_missing"
    _key_profile(env, missing)
    error, hint = clean_error(env.run("up", "key"), 2)
    assert f"identity file {missing} does not exist" in error, error
    assert "identity_file" in hint
    nothing_left(env, "key")


@pytest.mark.skipif(
    not CAN_TEST_PERMISSIONS,
    reason="machine: running as root without setpriv: root reads a mode-000 file",
)
def test_identity_file_unreadable(env: Env) -> None:
    assert env.sshd is not None
    locked = env.home / ".ssh" / "id_locked"
    shutil.copy(env.sshd.client_key, locked)
    os.chmod(locked, 0)
    _key_profile(env, locked)
    error, hint = clean_error(cli("up", "key", prefix=OBEY_PERMISSIONS), 2)
    assert f"identity file {locked} is not readable" in error, error
    assert "permission" in hint
    nothing_left(env, "key")


def test_identity_file_is_a_directory(env: Env) -> None:
    folder = env.home / ".ssh" / "id_folder"
    folder.mkdir()
    _key_profile(env, folder)
    error, hint = clean_error(env.run("up", "key"), 2)
    assert f"identity file {folder}" in error and "directory" in error, error
    assert "identity_file" in hint
    nothing_left(env, "key")


# --- the host (real sshd) -------------------------------------------------------------------------


def _bad_host_profile(env: Env, **keys: object) -> None:
    env.write_profile("bad", **{"host": HOST_ALIAS, "activate": ACTIVATE, "workdir": "~", **keys})


def test_activate_line_failing_shows_its_output(env: Env) -> None:
    _bad_host_profile(env, activate="echo loading-ml-env; source ~/no-such-venv/bin/activate")
    done = env.run("up", "bad")
    error, hint = clean_error(done, 1)
    assert f"the profile's `activate` line failed on {HOST_ALIAS}" in error, error
    assert "loading-ml-env" in done.stderr and "no-such-venv/bin/activate" in done.stderr
    assert "No such file or directory" in done.stderr
    assert "fix `activate` in profile 'bad'" in hint
    nothing_left(env, "bad")


def test_activate_line_that_exits_shows_its_output(env: Env) -> None:
    _bad_host_profile(env, activate="echo conda-says-no >&2; exit 3")
    done = env.run("up", "bad")
    error, _ = clean_error(done, 1)
    assert "`activate` line failed" in error, error
    assert "conda-says-no" in done.stderr
    nothing_left(env, "bad")


def test_jupyter_missing_on_the_host(env: Env) -> None:
    _bad_host_profile(env, jupyter="jupyter-not-installed-here")
    error, hint = clean_error(env.run("up", "bad"), 1)
    assert f"'jupyter-not-installed-here' was not found on {HOST_ALIAS}" in error, error
    assert "pip install" in hint and "activate" in hint
    nothing_left(env, "bad")


def test_workdir_missing_on_the_host(env: Env) -> None:
    _bad_host_profile(env, workdir="~/no-such-notebooks")
    error, hint = clean_error(env.run("up", "bad"), 1)
    assert f"workdir '~/no-such-notebooks' does not exist on {HOST_ALIAS}" in error, error
    assert "workdir" in hint
    nothing_left(env, "bad")


# --- COLABTUNNEL_HOME -------------------------------------------------------------------------------


@pytest.fixture
def home_is_a_file(local_env: Env, tmp_path: Path) -> Iterator[Path]:
    """COLABTUNNEL_HOME pointing at a regular file (root ignores permissions, not file types)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("I am a file\n")
    yield blocker


@pytest.mark.parametrize(
    "command",
    [
        ("up", "local"),
        ("up", "local", "--json"),
        ("status",),
        ("status", "--json"),
        ("down",),
        ("url", "local"),
        ("logs", "local"),
        ("profiles", "list"),
        ("profiles", "show", "local"),
    ],
)
@pytest.mark.parametrize("under", [False, True], ids=["file", "under-a-file"])
def test_colabtunnel_home_is_a_file(
    local_env: Env, home_is_a_file: Path, command: tuple[str, ...], under: bool
) -> None:
    home = home_is_a_file / "ct" if under else home_is_a_file
    done = cli(*command, extra_env={"COLABTUNNEL_HOME": str(home)})
    error, hint = clean_error(done, 2)
    assert f"COLABTUNNEL_HOME={home}" in error and "not a directory" in error, error
    assert "COLABTUNNEL_HOME" in hint
    if "--json" in command:
        assert "COLABTUNNEL_HOME" in json.loads(done.stdout)["error"]["message"]
    assert home_is_a_file.read_text() == "I am a file\n"
    nothing_left(local_env, "local")


@pytest.mark.parametrize("blocked", ["state", "logs"])
def test_colabtunnel_home_with_a_file_where_a_directory_goes(local_env: Env, blocked: str) -> None:
    local_env.ct_home.mkdir(parents=True)
    (local_env.ct_home / blocked).write_text("")
    error, hint = clean_error(cli("up", "local"), 2)
    assert f"COLABTUNNEL_HOME={local_env.ct_home} is not writable" in error, error
    assert str(local_env.ct_home / blocked) in error
    assert "COLABTUNNEL_HOME" in hint
    nothing_left(local_env, "local")


@pytest.mark.skipif(
    not CAN_TEST_PERMISSIONS,
    reason="machine: running as root without setpriv: root writes anywhere",
)
def test_colabtunnel_home_read_only(local_env: Env) -> None:
    local_env.ct_home.mkdir(parents=True)
    os.chmod(local_env.ct_home, 0o500)
    try:
        error, hint = clean_error(cli("up", "local", prefix=OBEY_PERMISSIONS), 2)
    finally:
        os.chmod(local_env.ct_home, 0o700)
    assert f"COLABTUNNEL_HOME={local_env.ct_home} is not writable" in error, error
    assert "Permission denied" in error and "COLABTUNNEL_HOME" in hint
    nothing_left(local_env, "local")


def test_profiles_add_with_colabtunnel_home_a_file(local_env: Env, home_is_a_file: Path) -> None:
    done = cli(
        "profiles", "add", "box", "--host", "h", extra_env={"COLABTUNNEL_HOME": str(home_is_a_file)}
    )
    error, _ = clean_error(done, 2)
    assert "COLABTUNNEL_HOME" in error


# --- state records ----------------------------------------------------------------------------------

GARBAGE = {
    "truncated": '{"profile": "gpu", "keeper_pid": 12',
    "empty": "",
    "not-an-object": "[1, 2, 3]",
    "wrong-types": '{"profile": 5, "keeper_pid": "x"}',
    "missing-fields": '{"profile": "gpu"}',
    "binary": "\udcff\udcfe\x00\x01",
}


def _corrupt(world: Env, profile: str, text: str) -> Path:
    directory = world.ct_home / "state"
    directory.mkdir(parents=True, exist_ok=True)
    record = directory / f"{profile}.json"
    record.write_bytes(text.encode("utf-8", "surrogateescape"))
    return record


@pytest.mark.parametrize("garbage", list(GARBAGE.values()), ids=list(GARBAGE))
def test_corrupted_state_is_stale_for_status_url_and_down(local_env: Env, garbage: str) -> None:
    record = _corrupt(local_env, "gpu", garbage)
    done = cli("status", "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["tunnels"] == []
    assert not record.exists()  # cleaned, like any stale record

    _corrupt(local_env, "gpu", garbage)
    error, hint = clean_error(cli("url", "gpu"), 1)
    assert "'gpu' is not up" in error and "colabtunnel up gpu" in hint

    _corrupt(local_env, "gpu", garbage)
    done = cli("down")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert not record.exists()


def test_state_record_that_is_a_directory_is_stale(local_env: Env) -> None:
    (local_env.ct_home / "state" / "gpu.json").mkdir(parents=True)
    done = cli("status")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "internal error" not in done.stderr


def test_up_over_a_corrupted_state_record(env: Env) -> None:
    record = _corrupt(env, PROFILE, GARBAGE["truncated"])
    done = env.run("up", PROFILE, "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    tunnel = json.loads(done.stdout)["tunnel"]
    assert tunnel["profile"] == PROFILE
    assert json.loads(record.read_text())["keeper_pid"] == tunnel["keeper_pid"]  # replaced
    status = json.loads(env.run("status", "--json", check=True).stdout)
    assert [t["profile"] for t in status["tunnels"]] == [PROFILE]
    env.run("down", PROFILE, check=True)
    nothing_left(env, PROFILE)


# --- local port pinned and busy ---------------------------------------------------------------------


@pytest.fixture
def held_port() -> Iterator[tuple[int, psutil.Process]]:
    """A port held by another program (a listening Python), as a user's forgotten server would."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket()\n"
        "s.bind(('127.0.0.1', 0))\n"
        "s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        yield int(holder.stdout.readline()), psutil.Process(holder.pid)
    finally:
        holder.kill()
        holder.wait()


def _up_on_busy_port(env: Env, port: int, how: str) -> subprocess.CompletedProcess[str]:
    if how == "profile":
        env.write_profile("pinned", host=HOST_ALIAS, activate=ACTIVATE, local_port=port)
        return env.run("up", "pinned")
    if how == "flag":
        return env.run("up", PROFILE, "--local-port", str(port))
    return env.run("up", "local", "--local-port", str(port))


HOW = ["profile", "flag", "local"]


@pytest.mark.parametrize("how", HOW)
def test_local_port_pinned_and_busy(
    env: Env, held_port: tuple[int, psutil.Process], how: str
) -> None:
    port, holder = held_port
    error, hint = clean_error(_up_on_busy_port(env, port, how), 1)
    assert f"port {port} is already in use" in error, error
    assert "auto" in hint or "--local-port" in hint
    assert holder.is_running()  # we never touch what holds it
    nothing_left(env, "pinned" if how == "profile" else PROFILE)
    nothing_left(env, "local")


def test_port_holder_helper_names_the_process(held_port: tuple[int, psutil.Process]) -> None:
    port, holder = held_port
    assert forwarder.port_holder(port) == f"{holder.name()} (pid {holder.pid})"
    with pytest.raises(forwarder.PortBusy) as info:
        forwarder.bind_listener(port)
    assert (
        info.value.describe() == f"127.0.0.1:{port} is in use by {holder.name()} (pid {holder.pid})"
    )
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        assert forwarder.port_holder(free.getsockname()[1]) is None  # bound, not listening


@pytest.mark.parametrize("how", HOW)
def test_local_port_pinned_and_busy_names_the_holder(
    env: Env, held_port: tuple[int, psutil.Process], how: str
) -> None:
    port, holder = held_port
    error, _ = clean_error(_up_on_busy_port(env, port, how), 1)
    assert f"{holder.name()} (pid {holder.pid})" in error, error
