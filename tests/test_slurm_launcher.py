"""`up` on a GPU cluster: Jupyter inside a Slurm job on a compute node, through a real Slurm
cluster (tests/slurm_cluster.py: node1 in a network namespace of its own, so its 127.0.0.1 is
not the login node's, and every way to it must really hop)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from colabtunnel.probe import run_probe
from tests.conftest import Env, leftover_processes, wait_for
from tests.slurm_cluster import SlurmCluster

URL_RE = re.compile(r"http://localhost:(\d+)/\?token=([A-Za-z0-9_\-]{43,})")


def _cluster_profile(env: Env, cluster: SlurmCluster, name: str, **slurm: object) -> None:
    if cluster.python_env is None:
        pytest.skip("no Python the cluster users can run (see tests/slurm_cluster.py)")
    env.known_hosts.write_text(env.known_hosts.read_text() + cluster.login.known_hosts_line())
    env.write_profile(
        name,
        host=cluster.login.address,
        port=cluster.login.port,
        user=cluster.user.name,
        identity_file=str(cluster.user.laptop_key),
        activate=f"source {cluster.python_env}/bin/activate",
        launcher="slurm",
    )
    lines = [f"[profiles.{name}.slurm]"]
    for key, value in slurm.items():
        lines.append(f"{key} = {json.dumps(value)}")
    with open(env.profiles, "a") as fh:
        fh.write("\n".join(lines) + "\n\n")


def _squeue(cluster: SlurmCluster, job: str) -> str:
    return cluster.admin("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip()


@pytest.fixture
def cluster_env(env: Env, slurm_cluster: SlurmCluster) -> Iterator[tuple[Env, SlurmCluster]]:
    yield env, slurm_cluster


@pytest.mark.parametrize("access", ["srun", "node-ssh"])
def test_up_in_a_job_probe_status_down(cluster_env: tuple[Env, SlurmCluster], access: str) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "hpc", access=access, gpus=1, queue_timeout="2m")
    started = time.monotonic()
    done = env.run("up", "hpc", "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    took = time.monotonic() - started
    tunnel = json.loads(done.stdout)["tunnel"]
    assert "RUNNING on node1" in done.stderr, done.stderr
    job = tunnel["handle"]["job"]
    assert tunnel["launcher"] == "slurm" and tunnel["handle"]["node"] == "node1"
    assert "keys" not in tunnel["handle"]  # this session's private key stays in the record
    assert _squeue(cluster, job) == "RUNNING"
    port, token = tunnel["local_port"], tunnel["url"].split("token=")[1]
    report = run_probe(f"http://127.0.0.1:{port}/", token)
    assert report.ok, report.to_dict()
    session = cluster.user.home / ".colabtunnel" / "slurm" / "hpc"
    assert session.is_dir() and (session / "token").stat().st_mode & 0o777 == 0o600
    assert session.stat().st_mode & 0o777 == 0o700
    down = env.run("down", "hpc", timeout=180)
    assert down.returncode == 0, down.stderr
    wait_for(lambda: _squeue(cluster, job) == "", timeout=30)
    assert not session.exists()
    assert not leftover_processes(env)
    print(f"up through {access} in {took:.1f} s")
