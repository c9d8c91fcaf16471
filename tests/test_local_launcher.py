"""The local launcher's own promises, below `up`: a PID alone never gets a process stopped."""

from __future__ import annotations

import subprocess
import sys

import psutil

from colabtunnel import paths
from colabtunnel.launchers import local
from colabtunnel.profiles import LOCAL
from colabtunnel.ssh.hosts import LocalHost


def test_stop_leaves_a_process_that_only_has_the_recorded_pid() -> None:
    """After a reboot or a long uptime the recorded PID may be another process's: with a start
    time that does not match, it is not touched (and the stale files go)."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        directory = paths.private_dir(local.run_dir(LOCAL))
        (directory / "jupyter.pid").write_text(f"{other.pid}\n")
        started = psutil.Process(other.pid).create_time()
        (directory / "jupyter.started").write_text(f"{started - 3600}\n")  # an hour off
        (directory / "token").write_text("t")
        assert local.stop(LocalHost(), LOCAL, None) is False
        assert other.poll() is None
        assert not directory.exists()
        # the same PID with its own start time is ours: stopped, with its session
        directory = paths.private_dir(local.run_dir(LOCAL))
        (directory / "jupyter.pid").write_text(f"{other.pid}\n")
        (directory / "jupyter.started").write_text(f"{started}\n")
        assert local.stop(LocalHost(), LOCAL, None) is True
        assert other.wait(15) is not None
    finally:
        other.kill()
        other.wait()
