"""Installing by name: the distribution is `colabtunnel-ssh` (the command and the package stay
`colabtunnel`), a fresh clone installs and runs, and the unrelated PyPI package that is also called
`colabtunnel` is recognised instead of crashing the entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.flavour_venvs import CACHE_ROOT

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "colabtunnel"
RUN_MAIN = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from colabtunnel.__main__ import main; main()"
)


def test_the_distribution_has_a_name_of_its_own() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "colabtunnel-ssh"
    assert project["scripts"] == {"colabtunnel": "colabtunnel.__main__:main"}
    import colabtunnel
    import colabtunnel.__main__ as entry

    assert colabtunnel.__distribution__ == entry.DISTRIBUTION == project["name"]


def _installed_over(site: Path, init_text: str, extra: dict[str, str] | None = None) -> None:
    """Our package in `site`, then another distribution's files written over it, as pip does
    when two distributions ship the same top-level package."""
    shutil.copytree(PACKAGE, site / "colabtunnel", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "colabtunnel" / "__init__.py").write_text(init_text)
    for name, text in (extra or {}).items():
        (site / "colabtunnel" / name).write_text(text)


def _run_entry_point(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script's import, with `site` as the only place `colabtunnel` can come from
    (-S: no site-packages, so not this checkout's editable install either)."""
    return subprocess.run(
        [sys.executable, "-S", "-c", RUN_MAIN, str(site), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_the_lookalike_package_is_named_not_a_traceback(tmp_path: Path) -> None:
    # The shape of PyPI's `colabtunnel` 0.0.7: an __init__ that imports a module of its own and
    # sets a version, no __main__ and no cli.
    _installed_over(
        tmp_path,
        "from .vscode_tunnel import start\n__version__ = '0.0.7'\n",
        {"vscode_tunnel.py": "def start():\n    return None\n"},
    )
    done = _run_entry_point(tmp_path, "--version")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    error, hint = done.stderr.splitlines()
    assert error == (
        f"error: the Python package `colabtunnel` found at "
        f"{tmp_path / 'colabtunnel' / '__init__.py'} is not colabtunnel-ssh"
    )
    assert hint.startswith("hint: the PyPI project `colabtunnel` is a different tool")
    assert "pipx install colabtunnel-ssh" in hint


def test_our_package_with_files_missing_is_named_not_a_traceback(tmp_path: Path) -> None:
    _installed_over(tmp_path, (PACKAGE / "__init__.py").read_text())
    (tmp_path / "colabtunnel" / "cli.py").unlink()
    done = _run_entry_point(tmp_path, "--version")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: colabtunnel-ssh is incompletely installed (")
    assert "colabtunnel.cli" in done.stderr.splitlines()[0]


def _clone_files(dest: Path) -> None:
    """What a fresh clone of this tree holds: tracked files, plus new ones not ignored (so the
    test also covers files not yet committed), from the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def test_a_fresh_clone_installs_by_its_new_name(tmp_path: Path) -> None:
    clone, venv = tmp_path / "clone", tmp_path / "venv"
    _clone_files(clone)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # As a user's shell has it: no PYTHONPATH (the tests' points at this checkout, whose package
    # and egg-info would shadow what was installed). pip's cache outside the test's HOME, so later
    # runs reuse the wheels it built or fetched.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_CACHE_DIR"] = str(CACHE_ROOT / "pip")
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(clone)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    version = subprocess.run(
        [str(venv / "bin" / "colabtunnel"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    took = time.monotonic() - start
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "colabtunnel 0.1.0"
    shown = subprocess.run(
        [str(venv / "bin" / "pip"), "show", "-f", "colabtunnel-ssh"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    ).stdout
    assert "Name: colabtunnel-ssh" in shown
    assert "colabtunnel/remote/gpu_query.py" in shown  # the host code is installed too
    print(f"fresh-clone install + --version: {took:.1f} s")
