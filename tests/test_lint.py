"""The code stays clean: ruff (lint and format) on everything, mypy --strict on the package, and
imports that only go down the layers with no circles (import-linter, contracts in pyproject.toml).

Part of the suite so `.ci/run` (the README's test command) enforces them on every change.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOST_SCRIPTS = r"^colabtunnel/remote/(?!__init__\.py$)"  # the files sent to the host


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],  # files and strictness from [tool.mypy] in pyproject.toml
        # The laptop's code as Windows and macOS would run it; the host's scripts (remote/*.py
        # but its __init__) always run on the GPU host's Linux.
        ["mypy", "--platform", "win32", "--exclude", HOST_SCRIPTS],
        ["mypy", "--platform", "darwin", "--exclude", HOST_SCRIPTS],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict", "mypy-win32", "mypy-darwin"],
)
def test_clean(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"


def test_imports_keep_the_layers() -> None:
    """lint-imports, with the contracts of [tool.importlinter]; --no-cache so a stale graph in
    .import_linter_cache can never say KEPT for code that changed."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_host_shell_scripts_pass_shellcheck() -> None:
    """The bash colabtunnel sends to hosts (colabtunnel/remote/*.sh), as it is in the files."""
    scripts = sorted(str(p) for p in (ROOT / "colabtunnel" / "remote").glob("*.sh"))
    assert scripts
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: run `python -m tests.setup_host`"
    done = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_ci_workflow_is_valid_and_names_real_tests() -> None:
    """.github/workflows/ci.yml against GitHub's workflow schema (check-jsonschema's vendored
    copy: actionlint cannot be installed here), and every test file it runs exists."""
    import re

    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    check = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [str(check), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    named = re.findall(r"tests/test_\w+\.py", workflow.read_text())
    assert named and all((ROOT / name).is_file() for name in named), named
