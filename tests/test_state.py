"""State records: the URL, atomic 0600 files, stale-keeper detection and the per-profile lock."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from colabtunnel import paths
from colabtunnel.errors import ColabtunnelError
from colabtunnel.keeper import state

TOKEN = "tok_" + "A" * 40


def _record(profile: str = "gpu", **changes: object) -> state.Record:
    me = os.getpid()
    started = state.process_identity(me)
    assert started is not None
    fields: dict[str, object] = dict(
        profile=profile,
        keeper_pid=me,
        keeper_started=started,
        host="alice@gpu.example.org:22",
        local_port=8890,
        remote_port=40123,
        token=TOKEN,
        flavour="notebook7",
    )
    fields.update(changes)
    return state.Record(**fields)  # type: ignore[arg-type]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _wait_zombie(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never became a zombie")


# --- URL ---------------------------------------------------------------------------------------


def test_build_url_is_the_root() -> None:
    assert state.build_url(8890, "abc") == "http://localhost:8890/?token=abc"


def test_record_url_is_the_root_never_tree_or_lab() -> None:
    url = _record().url
    assert url == f"http://localhost:8890/?token={TOKEN}"
    assert "/tree" not in url
    assert "/lab" not in url


# --- files -------------------------------------------------------------------------------------


def test_write_read_round_trip() -> None:
    record = _record(health="reconnecting", foreground=True)
    state.write(record)
    assert state.read("gpu") == record


def test_read_absent_is_none() -> None:
    assert state.read("nope") is None


def test_record_file_0600_and_dir_0700() -> None:
    state.write(_record())
    directory = paths.state_dir()
    assert directory.is_relative_to(Path(os.environ["COLABTUNNEL_HOME"]))
    assert _mode(directory) == 0o700
    assert _mode(directory / "gpu.json") == 0o600


def test_existing_loose_state_dir_is_tightened() -> None:
    directory = paths.state_dir()
    directory.mkdir(parents=True)
    os.chmod(directory, 0o755)
    state.write(_record())
    assert _mode(directory) == 0o700


def test_write_is_atomic_and_leaves_no_temp_files() -> None:
    state.write(_record())
    state.write(_record(health="reconnecting"))
    state.write(_record("other"))
    names = sorted(p.name for p in paths.state_dir().iterdir())
    assert names == ["gpu.json", "other.json"]
    assert state.read("gpu").health == "reconnecting"  # type: ignore[union-attr]


def test_failed_write_keeps_old_record_and_leaves_no_temp(monkeypatch: pytest.MonkeyPatch) -> None:
    state.write(_record())

    def broken_replace(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        # fails after the temp file is written, before it takes the record's place
        patch.setattr(paths.os, "replace", broken_replace)
        with pytest.raises(RuntimeError):
            state.write(_record(health="reconnecting"))
    assert [p.name for p in paths.state_dir().iterdir()] == ["gpu.json"]
    assert state.read("gpu").health == "ok"  # type: ignore[union-attr]


def test_file_holds_schema_version_launcher_and_handle() -> None:
    state.write(_record(launcher="direct", handle={"pid": 4242}))
    data = json.loads((paths.state_dir() / "gpu.json").read_text())
    assert data["schema_version"] == state.SCHEMA_VERSION == 2
    assert data["token"] == TOKEN
    assert (data["launcher"], data["handle"]) == ("direct", {"pid": 4242})


def test_a_schema_1_record_is_read_as_a_direct_one() -> None:
    """Written by colabtunnel before launchers existed: no launcher, no handle."""
    old = {k: v for k, v in state.asdict(_record()).items() if k not in ("launcher", "handle")}
    old["schema_version"] = 1
    paths.private_dir(paths.state_dir())
    (paths.state_dir() / "gpu.json").write_text(json.dumps(old))
    record = state.read("gpu")
    assert record is not None and record.token == TOKEN
    assert (record.launcher, record.handle, record.schema_version) == ("direct", {}, 2)


def test_public_hides_token_field_but_has_url_and_uptime() -> None:
    record = _record(started_at=time.time() - 42)
    public = record.public()
    assert "token" not in public
    assert public["url"] == record.url
    assert 41 <= public["uptime_s"] <= 60
    assert public["profile"] == "gpu"
    json.dumps(public)  # serialisable for --json


@pytest.mark.parametrize("garbage", ["{not json", "", '{"profile": "gpu"}', "\xff\xfe", "{}"])
def test_corrupted_record_reads_as_none_and_is_removed(garbage: str) -> None:
    state.write(_record())
    path = paths.state_dir() / "gpu.json"
    path.write_text(garbage, encoding="latin-1")
    assert state.read("gpu") is None
    assert not path.exists()


@pytest.mark.parametrize("garbage", ["[1, 2]", "null", '"text"', "42"])
def test_non_object_json_record_reads_as_none_and_is_removed(garbage: str) -> None:
    state.write(_record())
    path = paths.state_dir() / "gpu.json"
    path.write_text(garbage)
    assert state.read("gpu") is None
    assert not path.exists()


def test_wrong_typed_record_is_stale_not_a_crash() -> None:
    state.write(_record())
    path = paths.state_dir() / "gpu.json"
    data = json.loads(path.read_text())
    data["keeper_pid"] = str(data["keeper_pid"])
    path.write_text(json.dumps(data))
    assert state.live("gpu") is None
    assert not path.exists()


def test_unknown_fields_are_ignored() -> None:
    state.write(_record())
    path = paths.state_dir() / "gpu.json"
    data = json.loads(path.read_text())
    data["from_the_future"] = 1
    path.write_text(json.dumps(data))
    assert state.read("gpu") == _record(started_at=data["started_at"])


def test_all_records_and_remove() -> None:
    assert state.all_records() == []
    state.write(_record("a"))
    state.write(_record("b"))
    assert [r.profile for r in state.all_records()] == ["a", "b"]
    state.remove("a")
    state.remove("a")  # idempotent
    assert [r.profile for r in state.all_records()] == ["b"]


# --- keeper liveness ---------------------------------------------------------------------------


def test_keeper_alive_for_this_process() -> None:
    assert state.keeper_alive(_record())


def test_keeper_not_alive_for_wrong_create_time() -> None:
    record = _record()
    record.keeper_started -= 3600  # same PID, another process: PID reuse
    assert not state.keeper_alive(record)


def test_keeper_not_alive_for_dead_pid() -> None:
    child = subprocess.Popen(["true"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    assert state.process_identity(child.pid) is None
    assert not state.keeper_alive(_record(keeper_pid=child.pid, keeper_started=started))


def test_keeper_not_alive_for_zombie() -> None:
    child = subprocess.Popen(["true"])
    try:
        started = psutil.Process(child.pid).create_time()
        _wait_zombie(child.pid)
        assert psutil.pid_exists(child.pid)  # still in the process table...
        assert state.process_identity(child.pid) is None  # ...but counts as gone
        assert not state.keeper_alive(_record(keeper_pid=child.pid, keeper_started=started))
    finally:
        child.wait()


def test_live_returns_record_of_live_keeper() -> None:
    state.write(_record())
    assert state.live("gpu") == state.read("gpu")
    assert (paths.state_dir() / "gpu.json").exists()


def test_live_removes_stale_record() -> None:
    child = subprocess.Popen(["true"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    state.write(_record(keeper_pid=child.pid, keeper_started=started))
    assert state.live("gpu") is None
    assert not (paths.state_dir() / "gpu.json").exists()
    assert state.read("gpu") is None


def test_live_absent_is_none() -> None:
    assert state.live("gpu") is None


# --- lock --------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from colabtunnel.keeper import state
with state.lock(sys.argv[1], 5):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_lock_excludes_a_second_holder() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "gpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(ColabtunnelError) as info, state.lock("gpu", 0.3):
            pytest.fail("acquired a lock another process holds")
        assert time.monotonic() - t0 >= 0.3
        assert "gpu" in info.value.message
        # Another profile's lock is independent.
        with state.lock("other", 0.3):
            pass
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        assert holder.wait(10) == 0
        with state.lock("gpu", 0.5):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_lock_is_released_when_holder_dies() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "gpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with state.lock("gpu", 1):
        pass


def test_lock_waits_for_release_within_timeout() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "gpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        holder.stdin.write("\n")
        holder.stdin.flush()
        with state.lock("gpu", 10):  # blocks until the holder lets go, then succeeds
            pass
    finally:
        holder.wait(10)


def test_lock_file_is_private() -> None:
    with state.lock("gpu", 1):
        assert _mode(paths.state_dir() / "gpu.lock") == 0o600
        assert _mode(paths.state_dir()) == 0o700
