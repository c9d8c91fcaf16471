"""The Slurm test cluster (tests/slurm_cluster.py) behaves as the Slurm launcher (issue 11) needs.

Every Slurm command here runs as an unprivileged cluster user, over the login node's sshd, the way
colabtunnel will run it; root only waits for states and looks at files. The last tests prove the
fixture's own promises: one cluster at a time, nothing left behind, skip / fail messages.

Slow on purpose: `--time=1` ends in TIMEOUT only 60-90 s after the job started (slurmctld checks
time limits every 30 s). That job is submitted first (module fixture `timed_jobs`) and checked last,
so the wait overlaps the other tests: the module takes about 75-95 s, almost all of it that wait.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import psutil
import pytest

from tests import flavour_venvs, required_areas, setup_host
from tests import slurm_cluster as cluster_module
from tests.auth_servers import _poll
from tests.slurm_cleanup import MARK, acquire_lock, cleanup, leftovers, start_reaper
from tests.slurm_cluster import NODE, ClusterUser, SlurmCluster, node_argv, running_cluster
from tests.sshd import keygen, server_environ

ECHO_JOB = Path(__file__).with_name("slurm_echo_job.py").read_text()
SLEEP_JOB = "#!/bin/bash\nexec sleep {seconds}\n"


def submit(
    cluster: SlurmCluster,
    options: str = "",
    script: str = SLEEP_JOB.format(seconds=600),
    user: ClusterUser | None = None,
    umask: str = "077",
) -> str:
    """sbatch --parsable from the user's home, the script on stdin; returns its output (the id)."""
    done = cluster.ssh(
        user or cluster.user, f"cd ~ && umask {umask} && sbatch --parsable {options}", input=script
    )
    return done.stdout.strip()


def state(cluster: SlurmCluster, job: str, fmt: str = "%T") -> str:
    """squeue's view of any job, finished ones included (root, on the login node: for waiting)."""
    return cluster.admin("squeue", "-h", "-t", "all", "-j", job, "-o", fmt).stdout.strip()


def wait_state(
    cluster: SlurmCluster, job: str, want: str, timeout: float = 20, fmt: str = "%T"
) -> str:
    seen = ""

    def reached() -> bool:
        nonlocal seen
        seen = state(cluster, job, fmt)
        return seen == want

    try:
        _poll(reached, timeout, f"job {job} to show {want!r}", interval=0.2)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}; last seen {seen!r}\n{cluster.log_tails(10)}") from None
    return seen


def port_of(cluster: SlurmCluster, job: str) -> int:
    port_file = cluster.user.home / f"echo-{job}.port"
    _poll(port_file.exists, 20, f"{port_file}")
    return int(port_file.read_text())


# --------------------------------------------------------------------------------------------------
# jobs shared by the module


@dataclass
class TimedJobs:
    one_minute: str  # --time=1, left to run into its limit
    brought_forward: str  # --time=5 whose end time root moves to "now"
    moved_at: float  # time.monotonic() when it was moved


@pytest.fixture(scope="module")
def timed_jobs(slurm_cluster: SlurmCluster) -> TimedJobs:
    one_minute = submit(slurm_cluster, "--time=1")
    brought_forward = submit(slurm_cluster, "--time=5")
    wait_state(slurm_cluster, brought_forward, "RUNNING")
    slurm_cluster.admin("scontrol", "update", f"JobId={brought_forward}", "EndTime=now")
    return TimedJobs(one_minute, brought_forward, time.monotonic())


@dataclass
class EchoJob:
    id: str
    port: int  # the echo server's, on the node's 127.0.0.1


@pytest.fixture(scope="module")
def echo_job(slurm_cluster: SlurmCluster) -> Iterator[EchoJob]:
    """tests/slurm_echo_job.py running on node1 with one of the two GPUs."""
    job = submit(slurm_cluster, "--gres=gpu:1 --job-name=ct-echo", ECHO_JOB)
    wait_state(slurm_cluster, job, "RUNNING")
    yield EchoJob(job, port_of(slurm_cluster, job))
    slurm_cluster.ssh(slurm_cluster.user, f"scancel {job}")


# --------------------------------------------------------------------------------------------------
# submitting, queue states


def test_sbatch_parsable_prints_the_bare_job_id(
    slurm_cluster: SlurmCluster, timed_jobs: TimedJobs
) -> None:
    assert re.fullmatch(r"\d+", timed_jobs.one_minute)
    # `id;cluster` needs --clusters, which needs slurmdbd: this cluster says so, in sbatch's words
    done = slurm_cluster.ssh(
        slurm_cluster.user, f"sbatch -M {slurm_cluster.name} --parsable --wrap true", check=False
    )
    assert done.returncode == 1
    assert "sbatch: error: Problem talking to database" in done.stderr


def test_pending_job_shows_its_reason_and_scancel_removes_it(slurm_cluster: SlurmCluster) -> None:
    user = slurm_cluster.user
    job = submit(slurm_cluster, "--begin=now+1hour")
    wait_state(slurm_cluster, job, "PENDING|BeginTime", fmt="%T|%r")
    assert slurm_cluster.ssh(user, f"squeue -h -j {job} -o '%T|%r'").stdout == "PENDING|BeginTime\n"
    shown = slurm_cluster.ssh(user, f"scontrol show job {job}").stdout
    assert "JobState=PENDING Reason=BeginTime" in shown

    slurm_cluster.ssh(user, f"scancel {job}")
    # squeue, even with -j, lists only live jobs: the cancelled one is gone at once ...
    assert slurm_cluster.ssh(user, f"squeue -h -j {job}").stdout == ""
    # ... while -t all (and scontrol) keep it for MinJobAge
    assert slurm_cluster.ssh(user, f"squeue -h -t all -j {job} -o %T").stdout == "CANCELLED\n"


def test_running_job_shows_state_node_and_gpu(
    slurm_cluster: SlurmCluster, echo_job: EchoJob
) -> None:
    user = slurm_cluster.user
    listed = slurm_cluster.ssh(user, f"squeue -h -j {echo_job.id} -o '%T|%N|%b|%j'").stdout
    assert listed == f"RUNNING|{NODE}|gres:gpu:1|ct-echo\n"
    detail = slurm_cluster.ssh(user, f"scontrol show job -dd {echo_job.id}").stdout
    assert f"Nodes={NODE} " in detail and "GRES=gpu:1(IDX:" in detail
    # the two fake GPUs are really counted: asking for both waits for the echo job's one
    job = submit(slurm_cluster, "--gres=gpu:2")
    wait_state(slurm_cluster, job, "PENDING|Resources", fmt="%T|%r")
    slurm_cluster.ssh(user, f"scancel {job}")


def test_a_job_longer_than_the_partition_allows_pends_with_partition_time_limit(
    slurm_cluster: SlurmCluster,
) -> None:
    job = submit(slurm_cluster, "--time=2:00:00")
    wait_state(slurm_cluster, job, "PENDING|PartitionTimeLimit", fmt="%T|%r")
    listed = slurm_cluster.ssh(slurm_cluster.user, f"squeue -h -j {job} -o '%T|%r'").stdout
    assert listed == "PENDING|PartitionTimeLimit\n"
    slurm_cluster.ssh(slurm_cluster.user, f"scancel {job}")


def test_sbatch_rejects_an_impossible_request_with_its_own_error_line(
    slurm_cluster: SlurmCluster,
) -> None:
    user = slurm_cluster.user
    live = f"squeue -h -u {user.name} -o %i"
    before = slurm_cluster.ssh(user, live).stdout
    too_many = slurm_cluster.ssh(user, "sbatch --parsable --gres=gpu:9 --wrap true", check=False)
    assert too_many.returncode == 1
    assert too_many.stdout == ""
    rejected = "Batch job submission failed: Requested node configuration is not available"
    assert too_many.stderr == f"sbatch: error: {rejected}\n"
    no_such = slurm_cluster.ssh(user, "sbatch --parsable -p nope --wrap true", check=False)
    assert no_such.returncode == 1
    assert "sbatch: error: Batch job submission failed: Invalid partition name specified" in (
        no_such.stderr
    )
    assert slurm_cluster.ssh(user, live).stdout == before  # nothing queued


def test_scancel_ends_a_running_job_and_its_processes(slurm_cluster: SlurmCluster) -> None:
    user = slurm_cluster.user
    seconds = 4000 + secrets.randbelow(1000)  # names this job's process on the node
    job = submit(slurm_cluster, script=SLEEP_JOB.format(seconds=seconds))
    wait_state(slurm_cluster, job, "RUNNING")
    sleeper = ["sleep", str(seconds)]
    assert _poll(lambda: _processes_running(sleeper), 10, "the job's sleep")
    started = time.monotonic()
    slurm_cluster.ssh(user, f"scancel {job}")
    _poll(lambda: slurm_cluster.ssh(user, f"squeue -h -j {job}").stdout == "", 15, "job to go")
    assert not _processes_running(sleeper)
    assert state(slurm_cluster, job) == "CANCELLED"
    assert time.monotonic() - started < 10


def _processes_running(cmdline: list[str]) -> bool:
    return any(p.info["cmdline"] == cmdline for p in psutil.process_iter(["cmdline"]))


# --------------------------------------------------------------------------------------------------
# reaching the node


def test_srun_step_reaches_the_nodes_loopback_which_the_login_side_cannot(
    slurm_cluster: SlurmCluster, echo_job: EchoJob
) -> None:
    step = (
        f"srun --jobid={echo_job.id} --overlap -N1 -n1 "
        f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{echo_job.port} && head -n1 <&3'"
    )
    assert slurm_cluster.ssh(slurm_cluster.user, step).stdout == f"hello from {NODE}\n"
    # the server is up (just answered): the login node's own 127.0.0.1 has nothing on that port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", echo_job.port), timeout=5).close()
    from_login = f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{echo_job.port}'"
    assert slurm_cluster.ssh(slurm_cluster.user, from_login, check=False).returncode != 0


def test_sshd_bridge_over_srun_carries_a_session_and_a_forward(
    slurm_cluster: SlurmCluster, echo_job: EchoJob, tmp_path: Path
) -> None:
    """A per-session `sshd -i` as a job step, spoken to over `srun -u`'s stdio from a paramiko
    channel on the login connection: the shape of the launcher's `srun` access mode."""
    user = slurm_cluster.user
    host_key, client_key = tmp_path / "bridge_host", tmp_path / "bridge_client"
    keygen(host_key)
    keygen(client_key)
    session = f".ct-bridge-{secrets.token_hex(4)}"
    login = slurm_cluster.login_client(user)
    try:
        sftp = login.open_sftp()
        sftp.mkdir(session, 0o700)
        for name, text in (
            ("host_key", host_key.read_text()),
            ("authorized_keys", client_key.with_suffix(".pub").read_text()),
        ):
            with sftp.open(f"{session}/{name}", "w") as fh:
                fh.chmod(0o600)
                fh.write(text)
        home = sftp.normalize(".")
        bridge = (
            f"srun --jobid={echo_job.id} --overlap -N1 -n1 -u -Q /usr/sbin/sshd -i -f /dev/null "
            f"-o HostKey={home}/{session}/host_key "
            f"-o AuthorizedKeysFile={home}/{session}/authorized_keys "
            "-o StrictModes=no -o UsePAM=no -o PasswordAuthentication=no "
            "-o KbdInteractiveAuthentication=no -o AllowTcpForwarding=local "
            "-o PidFile=none -o LogLevel=ERROR"
        )
        transport = login.get_transport()
        assert transport is not None
        channel = transport.open_session()
        channel.exec_command(bridge)
        inner = paramiko.Transport(channel)
        try:
            inner.start_client(timeout=30)
            expected = host_key.with_suffix(".pub").read_text().split()[1]
            assert inner.get_remote_server_key().get_base64() == expected
            inner.auth_publickey(
                user.name, paramiko.Ed25519Key.from_private_key_file(str(client_key))
            )
            shell = inner.open_session()
            shell.exec_command("hostname")
            assert shell.makefile("rb").read() == f"{NODE}\n".encode()
            forward = inner.open_channel(
                "direct-tcpip", ("127.0.0.1", echo_job.port), ("127.0.0.1", 0)
            )
            reader = forward.makefile("rb")
            assert reader.readline() == f"hello from {NODE}\n".encode()
            payload = os.urandom(1 << 20)  # binary, both ways: the relay must be byte-exact
            forward.sendall(payload)
            assert reader.read(len(payload)) == payload
            forward.close()
        finally:
            inner.close()
    finally:
        login.close()
    # the step ends with its client: only the batch step is left
    steps = f"squeue -h -s -j {echo_job.id} -o %i"
    _poll(
        lambda: slurm_cluster.ssh(user, steps).stdout == f"{echo_job.id}.batch\n",
        15,
        "the bridge step to end",
    )


def test_cluster_users_run_jupyter_on_the_node_from_the_shared_python_env(
    slurm_cluster: SlurmCluster, echo_job: EchoJob
) -> None:
    env = slurm_cluster.python_env
    assert env is not None, "Debian's python3 and the tests' are different minor versions"
    step = (
        f"srun --jobid={echo_job.id} --overlap -N1 -n1 "
        f"bash -c 'source {env}/bin/activate && hostname && jupyter server --version'"
    )
    done = slurm_cluster.ssh(slurm_cluster.user, step)
    assert re.fullmatch(rf"{NODE}\n\d+\.\d+\.\d+\n", done.stdout), done.stdout + done.stderr


def _a_python_of_another_minor() -> Path:
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = sorted(Path(sys.base_prefix).parent.glob("3.*/bin/python3.*"))
    candidates += [Path(f"/usr/bin/python3.{minor}") for minor in range(9, 15)]
    for python in candidates:
        minor = re.fullmatch(r"python(3\.\d+)", python.name)
        if minor and minor.group(1) != mine and python.is_file():
            return python
    required_areas.skip("machine", f"no Python but {mine} here to stand in for Debian's")


def test_the_cluster_python_does_not_depend_on_the_tests_minor_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Debian's python3 of another minor than the tests' venv still gets Jupyter (installed for
    it, once per machine): the Slurm tests used to skip, all of them, on such a machine."""
    other = _a_python_of_another_minor()
    monkeypatch.setattr(cluster_module, "SYSTEM_PYTHON", other)
    env = cluster_module._user_python(tmp_path)
    done = subprocess.run(
        [env / "bin" / "python", "-c", "import sys, jupyter_server, ipykernel; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith(other.name[len("python") :] + "."), done.stdout
    version = subprocess.run(
        [env / "bin" / "jupyter", "server", "--version"], capture_output=True, text=True
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+\n", version.stdout), version.stdout + version.stderr
    assert not str(env).startswith(str(flavour_venvs.REAL_HOME)), "the cluster users cannot read it"
    assert oct(Path(env).stat().st_mode & 0o755) == oct(0o755)


def test_node_sshd_is_reached_from_the_login_node_by_name(slurm_cluster: SlurmCluster) -> None:
    """`ssh node1` on the login node: the name from /etc/hosts, the host key from the
    cluster-wide known-hosts file, the user's own cluster key (shared home)."""
    done = slurm_cluster.ssh(
        slurm_cluster.user,
        f"ssh -o BatchMode=yes -o StrictHostKeyChecking=yes {NODE} 'hostname; echo $SLURM_CONF'",
    )
    assert done.stdout == f"{NODE}\n{slurm_cluster.conf}\n"


def test_the_login_sshd_forwards_to_node1_by_name_unless_forwarding_is_off(
    slurm_cluster: SlurmCluster,
) -> None:
    """The hop of the `node-ssh` access mode (direct-tcpip to node1:22, resolved on the login
    node), and a second login sshd with `AllowTcpForwarding no` refusing it."""
    user = slurm_cluster.user
    login = slurm_cluster.login_client(user)
    try:
        transport = login.get_transport()
        assert transport is not None
        hop = transport.open_channel("direct-tcpip", (NODE, 22), ("127.0.0.1", 0))
        assert hop.makefile("rb").readline().startswith(b"SSH-2.0-OpenSSH")
        hop.close()
    finally:
        login.close()
    with slurm_cluster.extra_login_sshd(forwarding="no") as strict:
        login = slurm_cluster.login_client(user, server=strict)
        try:
            transport = login.get_transport()
            assert transport is not None
            with pytest.raises(paramiko.ChannelException, match="prohibited"):
                transport.open_channel("direct-tcpip", (NODE, 22), ("127.0.0.1", 0))
            assert slurm_cluster.ssh(user, "squeue -h -o %i", server=strict).returncode == 0
        finally:
            login.close()


def test_node1_has_its_own_name_and_network(slurm_cluster: SlurmCluster) -> None:
    done = subprocess.run(
        slurm_cluster.on_node("sh", "-c", "hostname; ip -4 -o addr show | awk '{print $4}'"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == [NODE, "127.0.0.1/8", f"{slurm_cluster.node_address}/30"]


# --------------------------------------------------------------------------------------------------
# what other users see


def test_another_user_sees_the_jobs_details_but_not_its_script(
    slurm_cluster: SlurmCluster, echo_job: EchoJob
) -> None:
    other, owner = slurm_cluster.other, slurm_cluster.user
    fields = "JobID:20,UserName:40,Name:20,WorkDir:80,StdOut:120,Command:80,Comment:40"
    listed = slurm_cluster.ssh(other, f"squeue -h -j {echo_job.id} -O {fields}").stdout.split()
    assert listed[:5] == [
        echo_job.id,
        owner.name,
        "ct-echo",
        str(owner.home),
        f"{owner.home}/slurm-{echo_job.id}.out",
    ]
    detail = slurm_cluster.ssh(other, f"scontrol show job -dd {echo_job.id}").stdout
    assert f"UserId={owner.name}(" in detail and f"WorkDir={owner.home}" in detail
    script = slurm_cluster.ssh(other, f"scontrol write batch_script {echo_job.id} -", check=False)
    assert "Invalid user id" in script.stderr and "slurm_echo_job" not in script.stdout


def test_job_output_file_mode_comes_from_the_umask_at_submission(
    slurm_cluster: SlurmCluster,
) -> None:
    private = submit(slurm_cluster, "--wrap 'echo private'", script="", umask="077")
    shared = submit(slurm_cluster, "--wrap 'echo shared'", script="", umask="022")
    for job in (private, shared):
        wait_state(slurm_cluster, job, "COMPLETED")
    home = slurm_cluster.user.home
    assert stat.S_IMODE((home / f"slurm-{private}.out").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / f"slurm-{shared}.out").stat().st_mode) == 0o644
    other = slurm_cluster.other
    denied = slurm_cluster.ssh(other, f"cat {home}/slurm-{private}.out", check=False)
    assert denied.returncode == 1 and "Permission denied" in denied.stderr
    assert slurm_cluster.ssh(other, f"cat {home}/slurm-{shared}.out").stdout == "shared\n"


# --------------------------------------------------------------------------------------------------
# time limits (slow: see the module docstring)


def test_an_end_time_brought_forward_ends_in_timeout_within_the_30s_check(
    slurm_cluster: SlurmCluster, timed_jobs: TimedJobs
) -> None:
    """`scontrol update JobId=J EndTime=now` (root): the quick way for a test to reach TIMEOUT."""
    left = 45 - (time.monotonic() - timed_jobs.moved_at)
    wait_state(slurm_cluster, timed_jobs.brought_forward, "TIMEOUT", timeout=max(left, 1))


def test_time_1_ends_in_timeout(slurm_cluster: SlurmCluster, timed_jobs: TimedJobs) -> None:
    """Slow: up to 90 s after the job started, most of it overlapped with the tests above."""
    job = timed_jobs.one_minute
    wait_state(slurm_cluster, job, "TIMEOUT", timeout=120)
    user = slurm_cluster.user
    assert slurm_cluster.ssh(user, f"squeue -h -t all -j {job} -o '%T|%r|%l'").stdout == (
        "TIMEOUT|TimeLimit|1:00\n"
    )
    shown = slurm_cluster.ssh(user, f"scontrol show job {job}").stdout
    assert "JobState=TIMEOUT Reason=TimeLimit" in shown


# --------------------------------------------------------------------------------------------------
# the fixture's own promises


def test_a_second_cluster_waits_for_the_lock_and_then_says_who_holds_it(
    slurm_cluster: SlurmCluster,
) -> None:
    with pytest.raises(
        RuntimeError, match="another test session runs the Slurm test cluster"
    ) as err:
        acquire_lock(wait=1)
    assert f"pid {os.getpid()}" in str(err.value)


def test_the_reaper_removes_everything_when_its_owner_dies(tmp_path: Path) -> None:
    """Leftovers of every kind, tagged like a cluster; the process holding the reaper's pipe is
    SIGKILLed (as a test session can be): the reaper alone must remove them all."""
    if os.geteuid() != 0:
        required_areas.skip("root", "creates a user and a network namespace: needs root")
    tag = f"z{secrets.token_hex(3)}"
    log = tmp_path / "reaper.log"
    reaper, pipe = start_reaper(tag, log, None)
    owner = subprocess.Popen(["sleep", "600"], pass_fds=(pipe,))
    os.close(pipe)  # the owner holds the only write end now
    started: list[subprocess.Popen[bytes]] = []
    try:
        _make_leftovers(tag, started)
        owner.kill()
        assert reaper.wait(60) == 0, log.read_text()
        assert leftovers(tag) == []
        # and, independently of how the reaper finds them, the processes it had to find:
        survivors = [process.args for process in started if process.poll() is None]
        assert survivors == []
    finally:
        owner.kill()
        reaper.kill()
        cleanup(tag)
        for process in [owner, reaper, *started]:
            process.kill()  # a survivor has already failed the assertion above
            process.wait(10)


def _make_leftovers(tag: str, started: list[subprocess.Popen[bytes]]) -> None:
    root = Path(f"/run/ctslurm-{tag}")
    root.mkdir()
    netns, user = f"ctsl-{tag}", f"ctsl_{tag}_a"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(
        [
            "ip",
            "link",
            "add",
            f"ctsl{tag}h",
            "type",
            "veth",
            "peer",
            "name",
            f"ctsl{tag}n",
            "netns",
            netns,
        ],
        check=True,
    )
    useradd = ["useradd", "-m", "-p", "*", user]
    subprocess.run(useradd, check=True, capture_output=True, env=server_environ())
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    started.append(subprocess.Popen([*sleeper, str(root)], start_new_session=True))  # a "daemon"
    started.append(subprocess.Popen(node_argv(netns, *sleeper), start_new_session=True))
    started.append(subprocess.Popen(["sleep", "600"], user=user, start_new_session=True))
    for path in (Path("/etc/hosts"), Path("/etc/ssh/ssh_known_hosts")):
        with open(path, "a") as fh:
            fh.write(f"10.232.0.254 ctsl-{tag}  # {MARK} {tag}\n")
    expected = [[*sleeper, str(root)], sleeper, ["sleep", "600"]]  # once each has exec'd
    _poll(lambda: [_cmdline(p) for p in started] == expected, 10, "the processes to start")
    assert len(leftovers(tag)) == 9, leftovers(tag)


def _cmdline(process: subprocess.Popen[bytes]) -> list[str]:
    try:
        return psutil.Process(process.pid).cmdline()
    except psutil.Error:
        return []


def test_not_root_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="needs root"), running_cluster():
        pass


def test_missing_packages_fail_pointing_at_setup_host(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        required_areas.skip("root", "the package check comes after the root check")
    monkeypatch.setitem(setup_host.PACKAGES, "slurmd", Path("/nonexistent/slurmd"))
    hint = r"slurmd: run `python -m tests.setup_host`"
    with pytest.raises(pytest.fail.Exception, match=hint), running_cluster():
        pass


def test_the_cluster_tests_share_one_xdist_worker(
    slurm_cluster: SlurmCluster, request: pytest.FixtureRequest
) -> None:
    """There is one cluster per machine: under xdist its tests must form one group (tests/
    conftest.py MACHINE_WIDE), or a second worker waits on the cluster's lock and fails. xdist
    marks a group in the nodeid; with pytest 9 it silently did not."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        required_areas.skip("run-mode", "not run under xdist (-n0): nothing to share")
    assert request.node.nodeid.endswith("@slurm"), request.node.nodeid
