"""tests/required_areas.py: a skipped area fails the run unless it is allowed by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import required_areas

REPO = Path(__file__).resolve().parents[1]

INNER = """
import pytest
from tests import required_areas

def test_slurm_area():
    required_areas.skip("slurm", "no cluster here")

@pytest.mark.skipif(True, reason="openssh: no ssh-keygen")
def test_openssh_area():
    pass

def test_no_area():
    pytest.skip("just not today")

def test_run_mode():
    required_areas.skip("run-mode", "only under xdist")

def test_passes():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    raise AssertionError
"""


def _inner_run(tmp_path: Path, allow: str | None) -> dict[str, str]:
    """Outcome per test of a pytest run of INNER with the plugin, as in the suite's conftest."""
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if k != "CT_ALLOW_SKIP"}
    if allow is not None:
        env["CT_ALLOW_SKIP"] = allow
    env["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, "-m", "pytest", "-p", "tests.required_areas", "-o", "addopts="]
    argv += ["-p", "no:cacheprovider", "-v", "-rA", "--rootdir", str(tmp_path), str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
    outcomes = {}
    for line in done.stdout.splitlines():  # "test_inner.py::test_passes PASSED   [ 16%]"
        test, _, rest = line.partition(" ")
        if test.startswith("test_inner.py::") and rest:
            outcomes[test.split("::")[1]] = rest.split()[0]
    assert outcomes, done.stdout + done.stderr
    return outcomes | {"exit": str(done.returncode), "output": done.stdout}


def test_a_skipped_area_fails_the_run_and_names_the_way_out(tmp_path: Path) -> None:
    got = _inner_run(tmp_path, allow=None)
    assert got["test_slurm_area"] == "FAILED"
    assert got["test_openssh_area"] == "ERROR"  # a skipif marker skips in set-up: an error then
    assert got["test_no_area"] == "FAILED"
    assert got["test_run_mode"] == "SKIPPED"
    assert got["test_passes"] == "PASSED"
    assert got["test_expected_failure"] == "XFAIL"
    assert got["exit"] == "1"
    assert "required area 'slurm' was skipped" in got["output"]
    assert "CT_ALLOW_SKIP=slurm" in got["output"]
    assert "a skip without an area is a silent skip" in got["output"]


def test_allowed_areas_skip_as_before(tmp_path: Path) -> None:
    got = _inner_run(tmp_path, allow="slurm, openssh")
    assert (got["test_slurm_area"], got["test_openssh_area"]) == ("SKIPPED", "SKIPPED")
    assert got["test_no_area"] == "FAILED"  # no area, nothing to allow
    got = _inner_run(tmp_path, allow="all")
    assert got["test_slurm_area"] == got["test_openssh_area"] == "SKIPPED"


def test_an_unknown_area_is_a_bug_in_the_test() -> None:
    with pytest.raises(ValueError, match="unknown test area 'gpu'"):
        required_areas.skip("gpu", "no GPU")


def test_the_suite_loads_the_check() -> None:
    from tests import conftest

    assert conftest.pytest_runtest_makereport is required_areas.pytest_runtest_makereport
