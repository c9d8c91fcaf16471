"""`up` on a GPU cluster: Jupyter inside a Slurm job on a compute node, through a real Slurm
cluster (tests/slurm_cluster.py: node1 in a network namespace of its own, so its 127.0.0.1 is
not the login node's, and every way to it must really hop)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from colabtunnel.jupyter.probe import run_probe
from colabtunnel.keeper.tunnel import Tunnel, UpOptions
from colabtunnel.output import Progress
from colabtunnel.profiles import get_profile
from tests.conftest import Env, leftover_processes, wait_for
from tests.slurm_cluster import SlurmCluster
from tests.sshd import free_port
from tests.tunnel_helpers import Kernel

URL_RE = re.compile(r"http://localhost:(\d+)/\?token=([A-Za-z0-9_\-]{43,})")


def _cluster_profile(
    env: Env,
    cluster: SlurmCluster,
    name: str,
    activate: str = "",
    idle_timeout: str = "off",
    **slurm: object,
) -> None:
    env.known_hosts.write_text(env.known_hosts.read_text() + cluster.login.known_hosts_line())
    env.write_profile(
        name,
        host=cluster.login.address,
        port=cluster.login.port,
        user=cluster.user.name,
        identity_file=str(cluster.user.laptop_key),
        activate=f"source {cluster.python_env}/bin/activate{activate}",
        launcher="slurm",
        idle_timeout=idle_timeout,
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
    shown = json.loads(env.run("status", "hpc", "--json", check=True).stdout)["tunnels"][0]
    assert shown["job"]["job"] == job and shown["job"]["state"] == "RUNNING"
    assert shown["job"]["node"] == "node1" and shown["job"]["left_s"] > 0
    human = env.run("status", "hpc", check=True).stdout
    assert f"job {job} RUNNING on node1" in human and "left" in human
    logs = env.run("logs", "hpc", "-n", "200", timeout=60)
    assert logs.returncode == 0 and "Jupyter" in logs.stdout and token not in logs.stdout
    down = env.run("down", "hpc", timeout=180)
    assert down.returncode == 0, down.stderr
    wait_for(lambda: _squeue(cluster, job) == "", timeout=30)
    assert not session.exists()
    assert not leftover_processes(env)
    print(f"up through {access} in {took:.1f} s")


def _up_fails(env: Env, name: str, timeout: float = 180) -> tuple[str, float]:
    started = time.monotonic()
    done = env.run("up", name, timeout=timeout)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr, time.monotonic() - started


def _nothing_left(env: Env, cluster: SlurmCluster, name: str) -> None:
    user_jobs = cluster.admin("squeue", "-h", "-u", cluster.user.name, "-o", "%i %T").stdout
    assert user_jobs.strip() == "", user_jobs
    assert not (cluster.user.home / ".colabtunnel" / "slurm" / name).exists()
    assert not (env.ct_home / "state" / f"{name}.json").exists()
    assert not leftover_processes(env)


def test_a_job_that_cannot_start_yet_gives_up_at_queue_timeout(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "later", extra_args=["--begin=now+1hour"], queue_timeout="20s")
    stderr, took = _up_fails(env, "later")
    assert "PENDING (BeginTime: its start time has not come yet)" in stderr
    assert "queue_timeout" in stderr and "it was cancelled" in stderr
    assert 20 <= took < 60, took
    _nothing_left(env, cluster, "later")


def _controller(cluster: SlurmCluster) -> psutil.Process:
    return next(
        p
        for p in psutil.process_iter(["cmdline"])
        if "slurmctld" in " ".join(p.info["cmdline"] or [])
        and str(cluster.conf) in " ".join(p.info["cmdline"] or [])
    )


def test_a_scheduler_that_stops_answering_during_up_is_told_plainly_and_down_finishes_later(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    """slurmctld stops answering (SIGSTOP: it holds every call, as a hung controller does) while
    `up` waits in the queue. queue_timeout bounds the wait, the cancel cannot reach the scheduler
    either, and `up` says so instead of "cancelled"; the record stays, and `down`, once the
    scheduler answers again, cancels the job if it is still there and removes the record."""
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "hung", extra_args=["--begin=now+1hour"], queue_timeout="20s")
    up = env.popen("up", "hung")
    assert up.stderr is not None
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(up.stderr or ()), daemon=True)
    reader.start()
    ctld = _controller(cluster)
    job = ""
    try:
        wait_for(lambda: "PENDING" in "".join(seen), timeout=120, why=lambda: "".join(seen))
        os.kill(ctld.pid, signal.SIGSTOP)  # during up, while it waits in the queue
        stopped_at = time.monotonic()
        up.wait(timeout=240)
        took = time.monotonic() - stopped_at
        reader.join(10)
        stderr = "".join(seen)
        log = env.ct_home / "logs" / "hung.log"
        assert up.returncode == 1, stderr + (log.read_text() if log.exists() else "(no log)")
        assert "Traceback" not in stderr
        assert "did not answer" in stderr and "(queue_timeout)" in stderr, stderr + log.read_text()
        assert "not known to be cancelled and may still start" in stderr, stderr
        assert "it was cancelled" not in stderr, stderr
        assert 'scancel -u "$USER" -n colabtunnel-hung' in stderr, stderr  # the exact command
        assert took < 120, took
        record = json.loads((env.ct_home / "state" / "hung.json").read_text())
        assert record["health"] == "stop-failed", record
        job = record["handle"]["job"]
    finally:
        os.kill(ctld.pid, signal.SIGCONT)
        if up.poll() is None:
            up.kill()
    # What `up` said was true: the cancel it sent was not confirmed. A stopped slurmctld still
    # reads it when it resumes (scancel had already given up): the job is then gone, else queued.
    queued = cluster.admin("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()
    assert queued in ("", "PENDING"), queued
    assert (env.ct_home / "state" / "hung.json").exists()  # kept until `down`
    done = env.run("down", "hung", timeout=120)
    assert done.returncode == 0, done.stderr
    _nothing_left(env, cluster, "hung")


def test_a_request_that_can_never_start_fails_at_once(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "toolong", time="2:00:00", queue_timeout="10m")
    stderr, took = _up_fails(env, "toolong")
    assert "cannot start" in stderr and (
        "PartitionTimeLimit" in stderr or "PartitionConfig" in stderr
    )
    assert took < 40, took
    _nothing_left(env, cluster, "toolong")


def test_sbatch_rejection_is_its_own_error_line(cluster_env: tuple[Env, SlurmCluster]) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "greedy", gpus=9)
    stderr, _ = _up_fails(env, "greedy")
    assert (
        "error: sbatch refused the job: sbatch: error: Batch job submission failed: "
        "Requested node configuration is not available"
    ) in stderr
    _nothing_left(env, cluster, "greedy")


def _up(env: Env, name: str, *args: str) -> dict:
    done = env.run("up", name, "--json", *args, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["tunnel"]


def _job_status(env: Env, name: str) -> dict:
    tunnels = json.loads(env.run("status", name, "--json", check=True).stdout)["tunnels"]
    return tunnels[0]["job"] if tunnels else {}


def test_status_warns_near_the_time_limit_then_says_timeout(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    """`--time=2` is inside the 10-minute warning from the start: Slurm sends the job its USR1
    at its next limit check (every 30 s); then the job is ended as Slurm ends jobs at their limit
    (`EndTime=now`, checked on the same 30-s beat)."""
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "short", time="2")
    job = _up(env, "short")["handle"]["job"]
    wait_for(lambda: _job_status(env, "short").get("warning"), timeout=60, interval=2)
    human = env.run("status", "short", check=True).stdout
    assert "warning:" in human and "the kernel (its variables) ends with the job" in human
    cluster.admin("scontrol", "update", f"JobId={job}", "EndTime=now")
    wait_for(lambda: "TIMEOUT" in (_job_status(env, "short").get("ended") or ""), timeout=90)
    assert (
        f"job {job} ended: TIMEOUT: the job reached its time limit"
        in env.run("status", "short", check=True).stdout
    )


def test_a_job_cancelled_from_outside_is_reported(cluster_env: tuple[Env, SlurmCluster]) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "outside")
    job = _up(env, "outside")["handle"]["job"]
    cluster.ssh(cluster.user, f"scancel {job}")
    wait_for(lambda: "CANCELLED" in (_job_status(env, "outside").get("ended") or ""), timeout=60)
    assert "job was cancelled" in _job_status(env, "outside")["ended"]
    # the keeper notices the node is gone; `up` then submits a new job and says the URL changed
    wait_for(lambda: _health(env, "outside") == "remote-dead", timeout=60, interval=1)
    again = env.run("up", "outside", "--json", timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["tunnel"]["handle"]["job"] != job
    assert "URL (token) changes" in again.stderr


def _health(env: Env, name: str) -> str:
    tunnels = json.loads(env.run("status", name, "--json", "--no-gpu").stdout)["tunnels"]
    return str(tunnels[0]["health"]) if tunnels else ""


def test_the_token_is_nowhere_another_cluster_user_can_look(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "private")
    tunnel = _up(env, "private")
    token, job = tunnel["url"].split("token=")[1], tunnel["handle"]["job"]
    session = cluster.user.home / ".colabtunnel" / "slurm" / "private"
    other = cluster.other
    fields = ",".join(
        f"{f}:300"
        for f in (
            "JobID",
            "Name",
            "Command",
            "WorkDir",
            "StdOut",
            "StdErr",
            "Comment",
            "Reason",
            "Dependency",
            "Licenses",
            "Feature",
            "Account",
            "QOS",
            "Partition",
            "TRES",
        )
    )
    looks = [
        f"squeue -a -O {fields}",
        f"scontrol show job -dd {job}",
        f"scontrol show step {job}.0 2>&1; scontrol show job {job} --json 2>&1 | head -c 100000",
        "ps -ww -eo args",
        f"ls -la {session} 2>&1; cat {session}/* 2>&1",
        f"cat {session}/job.out 2>&1; cat {session}/token 2>&1",
    ]
    for command in looks:
        seen = cluster.ssh(other, command, check=False)
        assert token not in seen.stdout + seen.stderr, command
    node_ps = subprocess.run(
        cluster.on_node("ps", "-ww", "-eo", "args"), capture_output=True, text=True, timeout=30
    )
    assert node_ps.returncode == 0 and "jupyter" in node_ps.stdout
    assert token not in node_ps.stdout
    assert "Permission denied" in cluster.ssh(other, f"cat {session}/token", check=False).stderr


def test_srun_access_needs_no_forwarding_on_the_login_node(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    env, cluster = cluster_env
    with cluster.extra_login_sshd(forwarding="no") as login:
        env.known_hosts.write_text(env.known_hosts.read_text() + login.known_hosts_line())
        _cluster_profile(env, cluster, "nofwd", access="srun")
        _cluster_profile(env, cluster, "nofwd-ssh", access="node-ssh")
        text = env.profiles.read_text().replace(
            f"port = {cluster.login.port}", f"port = {login.port}"
        )
        env.profiles.write_text(text)
        tunnel = _up(env, "nofwd")
        token = tunnel["url"].split("token=")[1]
        assert run_probe(f"http://127.0.0.1:{tunnel['local_port']}/", token).ok
        env.run("down", "nofwd", check=True, timeout=180)
        # the control: SSH into the node needs the login node to forward, and this one refuses
        stderr, _ = _up_fails(env, "nofwd-ssh")
        assert "cannot reach Jupyter on node1" in stderr
        _nothing_left(env, cluster, "nofwd-ssh")


def test_a_killed_keeper_then_up_reattaches_to_the_same_job(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    import signal

    env, cluster = cluster_env
    _cluster_profile(env, cluster, "again")
    # The first port from outside 8888 upward, where the suite's other `up`s pick theirs: the
    # dead keeper's port is then still free for the second `up`, which prefers it unasked.
    first = _up(env, "again", "--local-port", str(free_port()))
    os.kill(first["keeper_pid"], signal.SIGKILL)
    second = _up(env, "again")
    assert second["url"] == first["url"]
    assert second["handle"]["job"] == first["handle"]["job"]
    jobs = cluster.admin("squeue", "-h", "-u", cluster.user.name, "-o", "%i").stdout.split()
    assert jobs == [first["handle"]["job"]]
    token = second["url"].split("token=")[1]
    assert run_probe(f"http://127.0.0.1:{second['local_port']}/", token).ok


def test_ctrl_c_while_queued_cancels_the_job(cluster_env: tuple[Env, SlurmCluster]) -> None:

    env, cluster = cluster_env
    _cluster_profile(env, cluster, "waiting", extra_args=["--begin=now+1hour"])
    up = env.popen("up", "waiting")
    assert up.stderr is not None
    seen = ""
    while "PENDING" not in seen:
        line = up.stderr.readline()
        assert line, seen
        seen += line
    queued = cluster.admin("squeue", "-h", "-u", cluster.user.name, "-o", "%i").stdout.split()
    assert len(queued) == 1
    up.send_signal(signal.SIGINT)
    assert up.wait(90) == 130
    wait_for(lambda: _squeue(cluster, queued[0]) == "", timeout=30)
    _nothing_left(env, cluster, "waiting")


def test_doctor_checks_the_cluster(cluster_env: tuple[Env, SlurmCluster]) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "checkup", partition=cluster.partition, gpus=1)
    done = env.run("doctor", "checkup", "--json", timeout=120)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    for name in ("slurm", "partition", "request", "session-root"):
        assert checks[name]["status"] == "pass", checks[name]
    _cluster_profile(env, cluster, "nonsense", gpus=9)
    done = env.run("doctor", "nonsense", "--json", timeout=120)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["request"]["status"] == "fail"
    assert "Requested node configuration is not available" in checks["request"]["detail"]


def test_the_gpus_shown_are_the_jobs_node(cluster_env: tuple[Env, SlurmCluster]) -> None:
    """`up` and `status` name the GPUs of the node the job runs on, not the login node's."""
    env, cluster = cluster_env
    tools = cluster.user.home / "fake-gpu-tools"
    tools.mkdir(exist_ok=True)
    fake = tools / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "0, NVIDIA H100 on $(hostname) gpus=${CUDA_VISIBLE_DEVICES:-none}, 81559, 1024, 7, 550.54"\n'
    )
    fake.chmod(0o755)

    shutil.chown(tools, cluster.user.name)
    _cluster_profile(env, cluster, "gpus", activate=f" && export PATH={tools}:$PATH", gpus=1)
    done = env.run("up", "gpus", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "GPU 0  NVIDIA H100 on node1 gpus=0" in done.stderr
    shown = json.loads(env.run("status", "gpus", "--json", check=True).stdout)["tunnels"][0]
    assert "on node1" in shown["gpu_use"]["gpus"][0]["name"], shown["gpu_use"]


def _sessions_of(config: Path) -> list[psutil.Process]:
    """The session processes of the sshd started with `config` (not the listener itself)."""

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "-f" in cmdline and str(config) in cmdline:
            found += proc.children(recursive=True)
    return found


def test_a_dropped_login_connection_is_rebuilt_with_a_new_bridge_and_a_silent_scheduler_is_unknown(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    import signal

    env, cluster = cluster_env
    _cluster_profile(env, cluster, "steady", access="srun")
    text = env.profiles.read_text().replace(
        'launcher = "slurm"', 'launcher = "slurm"\nkeepalive = 2'
    )
    env.profiles.write_text(text)
    tunnel = _up(env, "steady")
    port, token = tunnel["local_port"], tunnel["url"].split("token=")[1]
    kernel = Kernel(port, token)
    kernel.run("x = 41")
    sessions = _sessions_of(cluster.login.config)
    assert sessions
    for proc in sessions:
        proc.kill()  # the login connection (and the srun step under it) drops
    wait_for(lambda: _job_status(env, "steady").get("state") == "RUNNING", timeout=60, interval=1)
    assert kernel.run("print(x + 1)").strip() == "42"  # same URL, same kernel, a new bridge
    ctld = _controller(cluster)
    os.kill(ctld.pid, signal.SIGSTOP)
    try:
        shown = _job_status(env, "steady")
        assert shown["state"].startswith("unknown (scheduler unreachable"), shown
        assert shown["ended"] is None
        assert kernel.run("print(x)").strip() == "41"  # the tunnel does not care
    finally:
        os.kill(ctld.pid, signal.SIGCONT)
    wait_for(lambda: _job_status(env, "steady").get("state") == "RUNNING", timeout=60, interval=1)


def test_network_access_says_plainly_what_it_exposes(cluster_env: tuple[Env, SlurmCluster]) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "open", access="network")
    done = env.run("up", "open", "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    assert (
        "every user of the cluster can reach its port: the token is the only guard" in done.stderr
    )
    tunnel = json.loads(done.stdout)["tunnel"]
    token = tunnel["url"].split("token=")[1]
    assert run_probe(f"http://127.0.0.1:{tunnel['local_port']}/", token).ok
    listening = subprocess.run(
        cluster.on_node("ss", "-ltnH"), capture_output=True, text=True, timeout=30
    ).stdout
    assert f"{cluster.node_address}:{tunnel['remote_port']}" in listening


def test_auto_access_remembers_what_reached_the_node(cluster_env: tuple[Env, SlurmCluster]) -> None:
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "auto", access="auto")
    first = _up(env, "auto")
    assert first["handle"]["access_used"] == "node-ssh"  # the faster one, where it works
    remembered = json.loads((env.ct_home / "state" / "slurm-access.json").read_text())
    assert remembered == {"auto": "node-ssh"}
    assert (env.ct_home / "state" / "slurm-access.json").stat().st_mode & 0o777 == 0o600
    env.run("down", "auto", check=True, timeout=180)
    # what worked last is tried first: had srun worked last time, it is used again
    (env.ct_home / "state" / "slurm-access.json").write_text(json.dumps({"auto": "srun"}))
    assert _up(env, "auto")["handle"]["access_used"] == "srun"


def test_the_srun_bridge_refuses_a_host_key_not_made_for_the_session(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    """The session's sshd is known by the key made for it: another key is refused before any
    login is offered (not trusted on first use)."""
    from colabtunnel.errors import ColabtunnelError
    from colabtunnel.launchers import slurm
    from colabtunnel.ssh import nested_ssh

    env, cluster = cluster_env
    _cluster_profile(env, cluster, "pinned", access="srun")
    tunnel = _up(env, "pinned")
    record = json.loads((env.ct_home / "state" / "pinned.json").read_text())
    keys = record["handle"]["keys"]
    impostor = nested_ssh.SessionKeys.generate()
    wrong = nested_ssh.SessionKeys("", impostor.host_public, keys["client"], "")
    client = cluster.login_client(cluster.user)
    try:
        from colabtunnel.profiles import get_profile

        profile = get_profile("pinned")
        command = slurm._srun_command(profile, tunnel["handle"]["job"], tunnel["remote_port"])
        with pytest.raises(ColabtunnelError, match="host key other than the one made"):
            nested_ssh.over_command(client.get_transport(), command, wrong, cluster.user.name)
        right = nested_ssh.SessionKeys("", keys["host"], keys["client"], "")
        transport = nested_ssh.over_command(
            client.get_transport(), command, right, cluster.user.name
        )
        assert transport.is_authenticated()
        transport.close()
    finally:
        client.close()


def test_an_idle_job_ends_completed_and_its_session_is_removed(
    cluster_env: tuple[Env, SlurmCluster],
) -> None:
    """idle_timeout on a cluster: Jupyter ends itself, so the job ends COMPLETED (not TIMEOUT,
    not CANCELLED) and the allocation is free. No slurmdbd here, so `sacct` cannot answer:
    `scontrol show job` keeps the ended job for MinJobAge (300 s) and says how it ended."""
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "idle", idle_timeout="20s")
    tunnel = _up(env, "idle")
    job = tunnel["handle"]["job"]
    began = time.monotonic()

    def ended() -> bool:
        shown = json.loads(env.run("status", "idle", "--json", "--no-gpu").stdout)
        return any(n["profile"] == "idle" and n["why"] == "idle" for n in shown["ended"])

    wait_for(ended, timeout=20 + 60 + 40, interval=2)
    print(f"the idle job ended {time.monotonic() - began:.0f} s after up")
    wait_for(lambda: _squeue(cluster, job) == "", timeout=30)
    shown = cluster.admin("scontrol", "show", "job", job).stdout
    assert "JobState=COMPLETED" in shown and "ExitCode=0:0" in shown, shown
    # the keeper writes the ended note, then exits: it must exit, not be caught on its way out
    wait_for(lambda: not psutil.pid_exists(tunnel["keeper_pid"]), timeout=30)
    _nothing_left(env, cluster, "idle")


# --- a reconnect while the way to the node is rebuilt (the real bridge, held or broken) ---------


class _HeldBridge:
    """The Slurm launcher, whose attach() (the bridge to the node: an srun step's sshd) waits for
    `release` first, as on a loaded cluster; `broken` gives it a job that does not exist, so the
    real srun step fails."""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher
        self.attaching = threading.Event()
        self.release = threading.Event()
        self.broken = False
        self.logins: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)

    def attach(self, host: Any, profile: Any, server: Any, creds: Any) -> Any:
        self.logins.append(host.connection)
        self.attaching.set()
        assert self.release.wait(60)
        if self.broken:
            server = dataclasses.replace(server, handle={**server.handle, "job": "999999"})
        return self.launcher.attach(host, profile, server, creds)


@pytest.fixture
def cluster_tunnel(cluster_env: tuple[Env, SlurmCluster]) -> Iterator[tuple[Tunnel, _HeldBridge]]:
    """A tunnel opened in this process on the real cluster (job, srun bridge, Jupyter), as the
    keeper holds it while serving, with its bridge-building held."""
    env, cluster = cluster_env
    _cluster_profile(env, cluster, "bridge", access="srun")
    tunnel = Tunnel(get_profile("bridge"), UpOptions(timeout=240), Progress(quiet=True))
    tunnel.open()
    tunnel._serving.set()  # what serve() sets before its supervisor runs
    assert tunnel.forwarder is not None
    tunnel.forwarder.stop()  # the test makes the local connections itself, and only those
    tunnel.forwarder = None
    held = _HeldBridge(tunnel.launcher)
    tunnel.launcher = held
    try:
        yield tunnel, held
    finally:
        held.broken = False
        held.release.set()
        tunnel.launcher = held.launcher
        if tunnel.close(stop_remote=True) is None:  # the test left it without a login
            cluster.admin("scancel", "-u", cluster.user.name)
            wait_for(lambda: not cluster.admin("squeue", "-h", "-u", cluster.user.name).stdout)
    _nothing_left(env, cluster, "bridge")


def _asks_jupyter(channel: Any, token: str) -> bytes:
    channel.sendall(f"GET /api/status HTTP/1.0\r\nAuthorization: token {token}\r\n\r\n".encode())
    answer = b""
    while chunk := channel.recv(65536):
        answer += chunk
    channel.close()
    return answer


def _a_waiting_connection(tunnel: Tunnel) -> tuple[threading.Thread, list[Any]]:
    """A forwarded connection that arrives while the login is being rebuilt, and waits."""
    channel: list[Any] = []

    def open_one() -> None:
        try:
            channel.append(tunnel._open_channel(("127.0.0.1", 50000)))
        except Exception as exc:  # the test reports it
            channel.append(exc)

    opening = threading.Thread(target=open_one, daemon=True)
    opening.start()
    wait_for(lambda: tunnel.waiting_connections == 1, timeout=10, why=lambda: channel)
    assert not channel, channel
    return opening, channel


def test_a_connection_made_while_a_slow_bridge_is_built_goes_through_the_new_one(
    cluster_tunnel: tuple[Tunnel, _HeldBridge],
) -> None:
    tunnel, held = cluster_tunnel
    assert tunnel.opened is not None
    old_reach = tunnel.reach
    tunnel.drop_connection()  # what the supervisor does once it finds the login dead
    attempt: list[Any] = []
    rebuilding = threading.Thread(
        target=lambda: attempt.append(tunnel.reconnect(time.monotonic() + 120)), daemon=True
    )
    rebuilding.start()
    assert held.attaching.wait(60), "the reconnect did not log in"
    opening, channel = _a_waiting_connection(tunnel)
    held.release.set()  # the bridge is built now: a new srun step's sshd on node1
    rebuilding.join(120)
    opening.join(60)
    assert attempt and attempt[0].state == "ok", attempt
    assert tunnel.reach is not old_reach
    assert channel and not isinstance(channel[0], Exception), channel
    answer = _asks_jupyter(channel[0], tunnel.opened.server.token)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_a_bridge_that_fails_is_not_used_and_the_waiting_connection_takes_the_next_one(
    cluster_tunnel: tuple[Tunnel, _HeldBridge],
) -> None:
    tunnel, held = cluster_tunnel
    assert tunnel.opened is not None
    tunnel.drop_connection()
    held.broken = True
    held.release.set()
    opening, channel = _a_waiting_connection(tunnel)
    failed = tunnel.reconnect(time.monotonic() + 120)  # the real srun step fails
    assert failed.state == "failed", failed
    assert "srun" in failed.detail, failed
    assert not held.logins[0].alive, "the login whose bridge failed was left open"
    assert tunnel.waiting_connections == 1 and not channel, "it was given the failed login"
    held.broken = False
    assert tunnel.reconnect(time.monotonic() + 120).state == "ok"
    opening.join(60)
    assert channel and not isinstance(channel[0], Exception), channel
    answer = _asks_jupyter(channel[0], tunnel.opened.server.token)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
