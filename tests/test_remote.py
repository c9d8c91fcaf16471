"""The host scripts' renderer (colabtunnel/remote/__init__.py): strict both ways, and the Python
sent to hosts is one self-contained script that old host Pythons can read."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

from colabtunnel import remote


def test_render_fills_every_placeholder_once_and_only_those() -> None:
    assert remote.render("a=__CT_A__ b=__CT_B_2__", a=1, b_2="x") == "a=1 b=x"
    # a value is never rendered again, whatever it holds
    assert remote.render("__CT_A__", a="__CT_B__") == "__CT_B__"


def test_an_unfilled_placeholder_is_refused() -> None:
    with pytest.raises(remote.RenderError, match="unfilled placeholders: B"):
        remote.render("__CT_A__ __CT_B__", a=1)


def test_a_value_nothing_asks_for_is_refused() -> None:
    with pytest.raises(remote.RenderError, match="no placeholder for: C"):
        remote.render("__CT_A__", a=1, c=2)


@pytest.mark.parametrize("name", ["inspect.py", "wait.py", "slurm_launch.py", "gpu_query.py"])
def test_host_python_is_self_contained_and_reads_as_python_3_7(name: str) -> None:
    code = remote.python(name)
    assert "from colabtunnel" not in code and "import colabtunnel" not in code
    ast.parse(code, feature_version=(3, 7))


def test_inlined_code_comes_in_place_of_its_import() -> None:
    code = remote.python("inspect.py")
    assert code.index("def alive(") < code.index("def existing(")
    assert code.count("def alive(") == 1


def test_the_run_directory_is_defined_in_one_file() -> None:
    names = sorted(p.name for p in (remote.resources.files("colabtunnel.remote")).iterdir())
    defining = [n for n in names if n.endswith(".sh") and "RUN_DIR=" in remote.text(n)]
    assert defining == ["rundir.sh"]


def _stop(home: Path, run_files: dict[str, str]) -> str:
    """remote/stop.sh, run by bash as on a host, against a run directory holding `run_files`."""
    run_dir = home / ".local" / "state" / "colabtunnel" / "p"
    run_dir.mkdir(parents=True)
    for name, text in run_files.items():
        (run_dir / name).write_text(text)
    script = remote.script("started.sh", "stop.sh", profile="p", grace_ticks=20)
    environ = {"PATH": os.environ["PATH"], "HOME": str(home), "COLUMNS": "80"}
    done = subprocess.run(
        ["bash", "-s"], input=script, capture_output=True, text=True, env=environ, timeout=30
    )
    assert not run_dir.exists(), "the run directory (it holds the token) is left"
    return done.stdout


def test_stop_takes_a_pid_for_its_server_only_with_the_start_time_recorded(
    tmp_path: Path,
) -> None:
    # A PID alone can name another process (reused after a reboot or a long uptime); no word in
    # its command line may stand in for the check, since `ps` cuts command lines to $COLUMNS.
    other = subprocess.Popen(["sleep", "60"])
    try:
        started = subprocess.run(
            ["bash", "-c", remote.text("started.sh") + f"ct_started {other.pid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert started.strip().isdigit()
        reused = {"jupyter.pid": f"{other.pid}\n", "jupyter.started": "1\n"}
        assert '"was_running": false' in _stop(tmp_path / "a", reused)
        assert other.poll() is None, "stop killed a process that only had the server's old PID"
        ours = {"jupyter.pid": f"{other.pid}\n", "jupyter.started": started}
        assert '"was_running": true' in _stop(tmp_path / "b", ours)
        assert other.wait(timeout=10) is not None
    finally:
        other.kill()
        other.wait()
