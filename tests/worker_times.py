"""How the suite's time was spent, printed at its end: each xdist worker's busy time (the wall
is about the busiest worker's) and each machine-wide group's (tests/conftest.py MACHINE_WIDE,
which one worker runs one after another). What the suite's time (issue 20) is weighed with."""

from __future__ import annotations

import collections
import re

import pytest

_GROUP = re.compile(r"@(\w+)$")


class WorkerTimes:
    def __init__(self) -> None:
        self.workers: collections.Counter[str] = collections.Counter()
        self.groups: collections.Counter[str] = collections.Counter()
        self.files: collections.Counter[str] = collections.Counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)  # set on the controller for a worker's report
        worker = getattr(getattr(node, "gateway", None), "id", "main")
        self.workers[worker] += report.duration
        group = _GROUP.search(report.nodeid)
        self.groups[group.group(1) if group else "-"] += report.duration
        self.files[report.nodeid.split("::", 1)[0]] += report.duration

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.workers:
            return
        write = terminalreporter.write_line
        terminalreporter.section("where the time went")
        write("busy per worker: " + _seconds(self.workers))
        write("per group (one worker each): " + _seconds(self.groups))
        write("slowest files: " + _seconds(self.files.most_common(8)))


def _seconds(counts: collections.Counter[str] | list[tuple[str, float]]) -> str:
    pairs = sorted(counts.items()) if isinstance(counts, collections.Counter) else counts
    return ", ".join(f"{name} {total:.0f} s" for name, total in pairs)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) only
        config.pluginmanager.register(WorkerTimes(), "worker-times")
