"""The benchmark (benchmarks/) still works: its quick mode runs every path and reports every metric.

Throughput and times have no thresholds here: machines are noisy, and those targets are checked by a
person reading the full run's table (`python -m benchmarks.run --repeat 3`). The round trips `up`
waits for at 100 ms are counted from the delay proxy's trace, which the machine's load does not move:
more than 1.5 times the target is a regression, and fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run

REPO = Path(__file__).resolve().parent.parent

TRANSFER = (
    "download",
    "upload",
    "rtt",
    "rtt_added",
    "client_cpu_download",
    "client_cpu_upload",
    "sshd_cpu_download",
)
DOWNLOAD_ONLY = ("download", "client_cpu_download", "sshd_cpu_download")
STEPS = ("launch", "connect", "detect", "start", "ready", "confirm", "probe")
# Steps of `up` over a far route that must cross the link; the others may not use it at all.
LINK_STEPS = ("connect", "detect", "start", "confirm", "probe")
UP_ROUTES = ("far", "jump-far")
EXPECTED = {
    **{f"{link}.{name}": None for link in ("loopback", "link", "jump") for name in TRANSFER},
    **{f"far.{name}": None for name in DOWNLOAD_ONLY},
    "memory.peak_rss": None,
    "memory.rss_before": None,
    "startup.up_to_url": None,
    "startup.jupyter_own": None,
    "startup.help": None,
    "startup.status": None,
    "startup.down": None,
    "startup.complete": None,
    "startup.keeper_rss": None,
    "startup.up_again": None,
    **{f"startup.step.{step}": None for step in STEPS},
    **{
        f"startup.{route}.{key}": None
        for route in UP_ROUTES
        for key in (
            "up_to_url",
            "round_trips",
            *(f"step.{step}" for step in STEPS),
            *(f"rt.{step}" for step in LINK_STEPS),
        )
    },
}
ALL_PATHS = {"direct", "ssh", "colabtunnel"}
TUNNELS = {"ssh", "colabtunnel"}


def expected_paths(key: str) -> set[str]:
    if key.startswith("startup."):
        return {"jupyter"} if key == "startup.jupyter_own" else {"colabtunnel"}
    if key.endswith(("rtt_added", "_cpu_download", "_cpu_upload")) or key.startswith("memory."):
        return TUNNELS
    return ALL_PATHS


@pytest.mark.timeout(240)
def test_quick_benchmark_runs_every_path(tmp_path: Path) -> None:
    for tool in ("/usr/sbin/sshd", "/usr/bin/ssh"):
        if not Path(tool).exists() and not shutil.which(Path(tool).name):
            pytest.fail(f"{tool} is needed: run the README's test command (it installs OpenSSH)")
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        stdin=subprocess.DEVNULL,
    )
    # exit 1 is the round-trip check failing, reported below with the counts per step
    assert done.returncode in (0, 1), f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "ssh -L" in done.stdout and "colabtunnel" in done.stdout, done.stdout
    report = json.loads(out.read_text())
    assert report["schema_version"] == 1
    assert report["config"]["quick"] is True
    metrics = report["metrics"]
    missing = set(EXPECTED) - set(metrics)
    assert not missing, f"metrics missing from the JSON: {sorted(missing)}"
    problems = []
    for key in EXPECTED:
        medians = metrics[key]["median"]
        for path in expected_paths(key):
            value = medians.get(path)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                problems.append(f"{key}[{path}] = {value!r}")
        if expected_paths(key) >= TUNNELS:
            ratio = metrics[key]["ratio_colabtunnel_to_ssh"]
            if not isinstance(ratio, int | float) or ratio <= 0:
                problems.append(f"{key} ratio = {ratio!r}")
    assert not problems, "non-positive or missing numbers: " + ", ".join(problems)
    for route, target in run.ROUND_TRIP_TARGETS.items():
        counted = metrics[f"startup.{route}.round_trips"]["median"]["colabtunnel"]
        steps = {
            step: round(metrics[f"startup.{route}.rt.{step}"]["median"]["colabtunnel"], 1)
            for step in LINK_STEPS
        }
        assert counted <= run.QUICK_MARGIN * target, (
            f"`up` over {route} waited for {counted:.1f} round trips of 100 ms, target {target}: "
            f"per step {steps}"
        )
    # `up` on a live tunnel answers from the state record and the keeper: no SSH at all
    assert metrics["startup.up_again_ssh"]["median"]["colabtunnel"] == 0
    assert done.returncode == 0, done.stderr[-2000:]
