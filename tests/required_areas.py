"""No area of the suite is skipped in silence.

A skip's reason starts with its area ("root: ...", "slurm: ..."; AREAS below). In a run, a skip
is a failure unless its area is allowed: by `CT_ALLOW_SKIP` (comma-separated areas, or `all`),
or because it is about how pytest was invoked (`run-mode`), not about the machine. `.ci/run`
allows nothing, so a machine where the Slurm cluster, the root-only servers or the browser
cannot run fails CI instead of passing with whole areas not run. A skip without an area is a
failure too: it would be a silent one.

Loaded by tests/conftest.py (`pytest_plugins`); tests/test_required_areas.py proves it.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import NoReturn

import pytest

AREAS = {
    "root": "creates system users, network namespaces and a password sshd: run as root",
    "slurm": "a real Slurm cluster on this machine (python -m tests.setup_host installs it)",
    "openssh": "OpenSSH's own client tools (ssh, ssh-keygen) as the oracle",
    "platform": "a feature of the OS the suite runs on (Linux here)",
    "machine": "this machine's own set-up (GPU tools, its ssh_config, its Pythons)",
    "run-mode": "how pytest was started (-n0 or under xdist), not what the machine has",
}
ALWAYS_ALLOWED = frozenset({"run-mode"})


def skip(area: str, reason: str) -> NoReturn:
    """Skip the test, saying which area is not run here (an unknown area is a bug)."""
    if area not in AREAS:
        raise ValueError(f"unknown test area {area!r}: one of {', '.join(AREAS)}")
    pytest.skip(f"{area}: {reason}")


def allowed(environ: dict[str, str] | os._Environ[str] = os.environ) -> frozenset[str]:
    words = {word.strip() for word in environ.get("CT_ALLOW_SKIP", "").split(",")}
    if "all" in words:
        return frozenset(AREAS)
    return ALWAYS_ALLOWED | (words & AREAS.keys())


def area_of(reason: str) -> str | None:
    """The area a skip reason names ("slurm: no cluster" -> "slurm"), None if it names none."""
    reason = reason.removeprefix("Skipped: ")
    head, sep, _ = reason.partition(":")
    return head if sep and head in AREAS else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not report.skipped or hasattr(report, "wasxfail"):
        return report
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    area = area_of(reason)
    if area in allowed():
        return report
    report.outcome = "failed"
    if area is None:
        report.longrepr = (
            f"a skip without an area is a silent skip: {reason!r}. Start its reason with one "
            f"of {', '.join(AREAS)} (tests/required_areas.py)."
        )
    else:
        report.longrepr = (
            f"required area {area!r} was skipped: {reason!r}. {AREAS[area]}. To run without "
            f"it on purpose: CT_ALLOW_SKIP={area}"
        )
    return report
