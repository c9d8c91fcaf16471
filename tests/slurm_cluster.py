"""A real Slurm cluster for the tests (issue 11), set up and torn down by the test session itself.

This machine plays the login node: munged, slurmctld and an OpenSSH sshd for two unprivileged
users run in the root network namespace. The compute node `node1` is a network namespace of its
own, joined to the login node by a veth pair (login 10.232.0.1 <-> node 10.232.0.2); its slurmd and
an sshd for the same users run in it, with the hostname `node1` (a UTS namespace of their own).
Homes are shared (same filesystem), as on a real cluster; the node's 127.0.0.1 is its own.

Everything lives in /run/ctslurm-<owner pid hex>/ (configs, munge key and socket, state, logs,
keys): the users must read slurm.conf and reach the munge socket, so it cannot be under pytest's
0700 temp dir. Slurm commands find it through SLURM_CONF, which both sshds set for every session
(`SetEnv`); nothing under /etc/slurm or /etc/munge is read or written. Global state the cluster
adds, each marked with `colabtunnel-slurm-test <tag>` and removed at the end: a `node1` line in
/etc/hosts (so the login node resolves the node by name, as on a real cluster) and a `node1` line
in /etc/ssh/ssh_known_hosts (the cluster-wide known-hosts file a login node has).

One cluster at a time on a machine (the veth addresses, node name and /etc lines are fixed): a
flock on /run/lock/colabtunnel-slurm.lock is held from set-up until clean-up has finished. While
it is held, anything named ctsl* is a leftover of a run that died, and is removed first. Clean-up
is done by a reaper process (tests/slurm_cleanup.py) started before anything is created: it waits
for EOF on a pipe from the test session and then removes everything of this cluster, so a session
killed with SIGKILL or a double Ctrl-C leaves nothing running either. The daemons and sshds run in
sessions of their own so that Ctrl-C reaches only pytest, whose teardown hands over to the reaper.

Facts found while building it (Debian 12, slurm 22.05.8, munge 0.5.15, under gVisor):
- munged runs as `munge` with --key-file/--socket/--pid-file/--log-file/--seed-file in a 0755
  munge-owned directory; slurm.conf `AuthInfo=socket=...` points commands and daemons at it.
- slurmd in the node namespace: `nsenter --net=/run/netns/NS` (not `ip netns exec`, which remounts
  /sys and breaks slurmd's cgroup plugin), `unshare --uts` + `hostname node1`, `slurmd -D -N node1`.
  ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, SlurmUser=root; no cgroup.conf needed.
  `SlurmdParameters=config_overrides` lets the node claim 8 CPUs on a 2-core machine.
- Fake GPUs: gres.conf `AutoDetect=off` + `Name=gpu File=<dir>/nvidia[0-1]`. A `Count=` line alone
  is silently ignored by 22.05 (node INVALID: "gres/gpu count reported lower than configured
  (0 < 2)"); regular files are refused ("not a valid character or block device"); two different
  /dev nodes without digits both get index 0. So the fixture makes two character devices with
  null's numbers (mknod c 1 3). `--gres=gpu:1` then schedules and sets CUDA_VISIBLE_DEVICES.
- Time limits are checked by slurmctld every 30 s (PERIODIC_TIMEOUT, not configurable): a
  `--time=1` job ends in TIMEOUT 60-90 s after it started (measured 81 s); `--signal=...@N` warnings
  are sent by the same check. `scontrol update JobId=J EndTime=now` (root) ends a job in TIMEOUT
  at the next check (<= 30 s): the quick way for a test. KillWait=5 (default 30 s between SIGTERM
  and SIGKILL) so a cancelled or timed-out job is gone fast.
- Partition `gpu` (default): MaxTime=60 min, DefaultTime=10 min. A job asking more than 60 min stays
  PENDING with reason `PartitionTimeLimit` (first `PartitionConfig` for one scheduling pass).
- `squeue` (also `squeue -j J`) lists only pending/running/completing jobs: a cancelled or finished
  job disappears from it at once; `squeue -t all -j J` and `scontrol show job J` still show it (as
  CANCELLED, TIMEOUT, ...) for MinJobAge (Slurm's default, 300 s). No slurmdbd: `sacct` fails.
- `sbatch --parsable` prints the bare job id: `id;cluster` appears only with `-M/--clusters`, which
  needs slurmdbd. A rejected request still takes a job id (squeue -t all: FAILED BadConstraints).
- Homes are 0755 (Debian's useradd), so the other user can list the first user's files; what a file
  allows is then up to its own mode (the job output file: the umask at sbatch time).
- Another user sees a job's name, user, work dir, output path (`squeue -O`, `scontrol show job
  -dd`); a script sent on sbatch's stdin shows as `Command=(null)`, and `scontrol write
  batch_script J -` is refused to them ("Invalid user id"). `squeue -O` cuts fields at 20
  characters unless a width is given (`-O StdOut:200`).
- `SchedulerParameters=batch_sched_delay=0`: a job starts within ~1 s of sbatch (default: <= 3 s).
- Python: the tests' venv interpreter links into root's 0700 home (pyenv), so the users cannot run
  it; `python_env` is a venv of /usr/bin/python3 with Jupyter (see _user_python).
- The test process (the "laptop") shares the login node's network namespace, so it could reach
  10.232.0.2 directly: a test of a hop must check the path, not only that the connection worked.

How to use it (fixture `slurm_cluster`, session-scoped, exported by tests/conftest.py):
  cluster.ssh(cluster.user, "sbatch --parsable ...", input=script)  # OpenSSH via the login sshd
  cluster.login_client(cluster.user)           # paramiko, strict host key; `.open_sftp()` works
  cluster.login / cluster.node_sshd            # SshServer: address, port, host key, known_hosts
  cluster.admin("scontrol", ...)               # Slurm commands as root (waiting, EndTime=now)
  cluster.on_node("cmd", ...)                  # argv running as root inside node1
  cluster.extra_login_sshd(forwarding="no")    # a second login sshd (context manager)

Measured on this machine (2 cores, gVisor): set-up 0.6-0.8 s (munged, slurmctld, two users, the
namespace, slurmd, two sshds, node idle), teardown by the reaper 0.9 s.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from tests import flavour_venvs, setup_host
from tests.auth_servers import (
    _common_sshd_options,
    _ip,
    _poll,
    _pub_of,
    _start_sshd,
    known_hosts_entry,
    require_root,
)
from tests.slurm_cleanup import (
    GLOBAL_KNOWN_HOSTS,
    HOSTS,
    USER_PREFIX,
    acquire_lock,
    add_marked_lines,
    cleanup,
    leftovers,
    names_of,
    start_reaper,
)
from tests.sshd import free_port, keygen, manage_users, server_environ, stop

CLUSTER_NAME = "ctsl"
NODE = "node1"
LOGIN_ADDRESS = "10.232.0.1"
NODE_ADDRESS = "10.232.0.2"
PARTITION = "gpu"
GPUS = 2
CPUS = 8
PACKAGES = (
    "munge",
    "slurmctld",
    "slurmd",
    "slurm-client",
    "util-linux",
    "iproute2",
    "passwd",
    "python3-venv",
)
SYSTEM_PYTHON = Path("/usr/bin/python3")  # what the cluster's users run (root's pyenv is 0700)


# --------------------------------------------------------------------------------------------------
# what the tests get


@dataclass(frozen=True)
class ClusterUser:
    name: str
    uid: int
    home: Path
    laptop_key: Path  # private key (root-owned) the test process logs in with, as from a laptop


@dataclass(frozen=True)
class SshServer:
    address: str
    port: int
    host_key_pub: str  # "ssh-ed25519 AAAA..."
    config: Path
    log: Path

    def known_hosts_line(self, host: str | None = None) -> str:
        return known_hosts_entry(host or self.address, self.port, self.host_key_pub)


@dataclass
class SlurmCluster:
    """A running cluster. Run commands as a user with `ssh(user, "sbatch ...")` (OpenSSH through
    the login sshd) or `login_client(user)` (paramiko); as root on the node with `on_node(...)`."""

    root: Path
    tag: str
    conf: Path  # slurm.conf: SLURM_CONF in every session of both sshds
    netns: str
    user: ClusterUser  # submits the jobs
    other: ClusterUser  # another user of the same cluster (looks at the first one's jobs)
    login: SshServer  # 127.0.0.1:<free port>; SFTP and local TCP forwarding allowed
    node_sshd: SshServer  # 10.232.0.2:22 inside node1's namespace (node-ssh access)
    known_hosts: Path  # the laptop's: login and node sshd
    # a venv the users can run, with the tests' packages (Jupyter included); see _user_python
    python_env: Path
    name: str = CLUSTER_NAME
    node: str = NODE
    node_address: str = NODE_ADDRESS
    login_address: str = LOGIN_ADDRESS
    partition: str = PARTITION
    gpus: int = GPUS
    setup_seconds: float = 0.0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**server_environ(), "SLURM_CONF": str(self.conf)}

    @property
    def ctld_log(self) -> Path:
        return self.root / "ctld" / "slurmctld.log"

    @property
    def slurmd_log(self) -> Path:
        return self.root / "node1" / "slurmd.log"

    def ssh_argv(
        self, user: ClusterUser, *command: str, server: SshServer | None = None
    ) -> list[str]:
        server = server or self.login
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(user.laptop_key),
            "-p",
            str(server.port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            f"{user.name}@{server.address}",
            *command,
        ]

    def ssh(
        self,
        user: ClusterUser,
        command: str,
        *,
        input: str | None = None,
        timeout: float = 60,
        check: bool = True,
        server: SshServer | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`command` run by `user`'s shell on the login node (or on `server`)."""
        done = subprocess.run(
            self.ssh_argv(user, command, server=server),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{user.name}$ {command} -> {done.returncode}\n{done.stdout}{done.stderr}"
            )
        return done

    def login_client(
        self, user: ClusterUser, server: SshServer | None = None
    ) -> paramiko.SSHClient:
        """A paramiko connection to the login sshd (or `server`) as `user`, host key checked."""
        server = server or self.login
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            server.address,
            server.port,
            username=user.name,
            key_filename=str(user.laptop_key),
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        return client

    def on_node(self, *argv: str) -> list[str]:
        """argv to run as root on node1: its network namespace and hostname."""
        return node_argv(self.netns, *argv)

    def admin(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A Slurm command (scontrol, sinfo, ...) run as root on the login node."""
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=30)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} -> {done.returncode}\n{done.stderr}")
        return done

    def log_tails(self, lines: int = 25) -> str:
        return _log_tails(self.root, lines)

    @contextlib.contextmanager
    def extra_login_sshd(self, forwarding: str = "no") -> Iterator[SshServer]:
        """Another login sshd for both users (e.g. `AllowTcpForwarding no`); its host key is
        added to `known_hosts` and removed again."""
        index = len(list((self.root / "ssh").glob("login*_config")))
        users = [self.user.name, self.other.name]
        server, process = _sshd(
            self.root, f"login{index}", "127.0.0.1", free_port(), users, forwarding, self.conf, []
        )
        self.processes.append(process)
        line = server.known_hosts_line()
        with open(self.known_hosts, "a") as fh:
            fh.write(line)
        try:
            yield server
        finally:
            stop(process)
            self.known_hosts.write_text(self.known_hosts.read_text().replace(line, ""))


# --------------------------------------------------------------------------------------------------
# building blocks


def node_argv(netns: str, *argv: str) -> list[str]:
    """Run argv in the node's network namespace with hostname `node1` (its own UTS namespace)."""
    return [
        "nsenter",
        f"--net=/run/netns/{netns}",
        "unshare",
        "--uts",
        "--",
        "sh",
        "-c",
        'hostname "$0" && exec "$@"',
        NODE,
        *argv,
    ]


def _check_packages() -> None:
    missing = [pkg for pkg in PACKAGES if not setup_host.PACKAGES[pkg].exists()]
    if missing:
        pytest.fail(
            f"the Slurm test cluster needs {', '.join(missing)}: run `python -m tests.setup_host` "
            "(as root it installs them)",
            pytrace=False,
        )


def _log_tails(root: Path, lines: int) -> str:
    parts = []
    for log in sorted(root.glob("*/*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log} (last {len(text)} lines)\n" + "\n".join(text))
    return "\n".join(parts)


def _mkdir(path: Path, mode: int = 0o755, owner: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner:
        shutil.chown(path, owner, owner)
    return path


def _write_configs(root: Path, ctld_port: int) -> Path:
    etc = _mkdir(root / "etc")
    dev = _mkdir(root / "dev")
    for index in range(GPUS):
        # a character device with /dev/null's numbers: 22.05 wants a device file per GPU
        os.mknod(dev / f"nvidia{index}", 0o666 | 0o020000, os.makedev(1, 3))
        os.chmod(dev / f"nvidia{index}", 0o666)
    _mkdir(root / "ctld", 0o700)
    _mkdir(root / "node1")  # slurmstepd, as the job's user, runs the batch script from its spool
    conf = etc / "slurm.conf"
    conf.write_text(
        f"""# colabtunnel test cluster ({root}); see tests/slurm_cluster.py
ClusterName={CLUSTER_NAME}
SlurmctldHost={os.uname().nodename}({LOGIN_ADDRESS})
SlurmctldPort={ctld_port}
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/ctld/state
SlurmdSpoolDir={root}/node1/spool
SlurmctldPidFile={root}/ctld/slurmctld.pid
SlurmdPidFile={root}/node1/slurmd.pid
SlurmctldLogFile={root}/ctld/slurmctld.log
SlurmdLogFile={root}/node1/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
SchedulerParameters=batch_sched_delay=0
NodeName={NODE} NodeAddr={NODE_ADDRESS} NodeHostname={NODE} CPUs={CPUS} RealMemory=2000 \
Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=60 DefaultTime=10 State=UP
"""
    )
    (etc / "gres.conf").write_text(
        f"AutoDetect=off\nNodeName={NODE} Name=gpu File={dev}/nvidia[0-{GPUS - 1}]\n"
    )
    for path in etc.iterdir():
        os.chmod(path, 0o644)
    return conf


def _start(
    argv: list[str], log: Path, cluster: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as log_fh:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=log_fh,
            env=server_environ(),
            start_new_session=True,
        )
    cluster.append(process)
    return process


def _start_munged(root: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    munge = _mkdir(root / "munge", 0o755, "munge")
    key = munge / "munge.key"
    key.write_bytes(os.urandom(128))
    shutil.chown(key, "munge", "munge")
    os.chmod(key, 0o400)
    socket_path = munge / "socket"
    with open(munge / "munged.log", "ab") as log_fh:
        process = subprocess.Popen(
            [
                "/usr/sbin/munged",
                "--foreground",
                f"--key-file={key}",
                f"--socket={socket_path}",
                f"--pid-file={munge}/munged.pid",
                f"--log-file={munge}/munged.log",
                f"--seed-file={munge}/munged.seed",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=log_fh,
            env=server_environ(),
            user="munge",
            group="munge",
            extra_groups=[],
            start_new_session=True,
        )
    processes.append(process)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"munged exited ({process.returncode}):\n{_log_tails(root, 20)}")
        return socket_path.exists()

    _poll(up, 20, "munged's socket")


def _network(tag: str) -> str:
    netns, host_veth, node_veth, _ = names_of(tag)
    if LOGIN_ADDRESS in _ip("-4", "-o", "addr", "show", check=False).stdout:
        raise RuntimeError(f"{LOGIN_ADDRESS} is already in use on this machine (not by a ctsl run)")
    _ip("netns", "add", netns)
    _ip("link", "add", host_veth, "type", "veth", "peer", "name", node_veth, "netns", netns)
    _ip("addr", "add", f"{LOGIN_ADDRESS}/30", "dev", host_veth)
    _ip("link", "set", host_veth, "up")
    _ip("-n", netns, "addr", "add", f"{NODE_ADDRESS}/30", "dev", node_veth)
    _ip("-n", netns, "link", "set", node_veth, "up")
    _ip("-n", netns, "link", "set", "lo", "up")
    return netns


def _make_user(tag: str, letter: str, root: Path) -> ClusterUser:
    """A user with a home of its own: a laptop key (kept by the test process) and a cluster key
    (~/.ssh/id_ed25519, for ssh from the login node to the node) are both authorised."""
    name = f"{USER_PREFIX}{tag}_{letter}"
    home = Path("/home") / name
    # -p '*': no password, but not "locked" ('!'), which sshd without PAM refuses even for keys
    manage_users(
        [
            "useradd",
            "-m",
            "-d",
            str(home),
            "-s",
            "/bin/bash",
            "-p",
            "*",
            "-c",
            "colabtunnel slurm test",
            name,
        ],
        check=True,
    )
    laptop_key = root / "laptop" / f"{name}_ed25519"
    keygen(laptop_key)
    ssh_dir = _mkdir(home / ".ssh", 0o700)
    keygen(ssh_dir / "id_ed25519")
    authorized = _pub_of(laptop_key.with_suffix(".pub")) + "\n"
    authorized += _pub_of(ssh_dir / "id_ed25519.pub") + "\n"
    (ssh_dir / "authorized_keys").write_text(authorized)
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    for path in [ssh_dir, *ssh_dir.iterdir()]:
        shutil.chown(path, name, name)
    return ClusterUser(name, pwd.getpwnam(name).pw_uid, home, laptop_key)


def _sshd_config(
    port: int, address: str, host_key: Path, users: list[str], forwarding: str, conf: Path
) -> str:
    return f"""Port {port}
ListenAddress {address}
HostKey {host_key}
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers {" ".join(users)}
AllowTcpForwarding {forwarding}
X11Forwarding no
PrintMotd no
UseDNS no
PidFile none
ClientAliveInterval 0
Subsystem sftp internal-sftp
SetEnv SLURM_CONF={conf}
{_common_sshd_options()}"""


def _sshd(
    root: Path,
    name: str,
    address: str,
    port: int,
    users: list[str],
    forwarding: str,
    conf: Path,
    prefix: list[str],
) -> tuple[SshServer, subprocess.Popen[bytes]]:
    ssh_dir = _mkdir(root / "ssh")
    host_key = ssh_dir / f"{name}_host_ed25519"
    if not host_key.exists():
        keygen(host_key)
    config = ssh_dir / f"{name}_config"
    config.write_text(_sshd_config(port, address, host_key, users, forwarding, conf))
    log = ssh_dir / f"{name}.log"
    # setsid: a session of its own, so that Ctrl-C in the terminal leaves it to the teardown
    process = _start_sshd(["setsid", *prefix], config, log)
    return SshServer(address, port, _pub_of(host_key.with_suffix(".pub")), config, log), process


def _user_python(root: Path) -> Path:
    """A virtualenv the cluster users can run, Jupyter included. The tests' own venv cannot serve:
    its interpreter is usually a symlink into root's 0700 home (pyenv). When Debian's python3 is
    the tests' minor version, a venv of it in the cluster's root sees the tests' site-packages
    through a .pth file and gets copies of the tests' console scripts (jupyter, jupyter-server,
    ...) pointing at its own interpreter: nothing to download. Otherwise Jupyter is installed for
    Debian's python3 itself, once per machine (tests/flavour_venvs.system_python_venv)."""
    system = SYSTEM_PYTHON
    if not system.exists():
        pytest.fail(f"{system} is missing: run `python -m tests.setup_host` as root")
    version = subprocess.run(
        [system, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if version != f"{sys.version_info[0]}.{sys.version_info[1]}":
        return flavour_venvs.system_python_venv(system)
    return _venv_seeing_the_tests_packages(system, version, root / "python")


def _venv_seeing_the_tests_packages(system: Path, version: str, env: Path) -> Path:
    subprocess.run([system, "-m", "venv", "--without-pip", env], check=True, capture_output=True)
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (env / "lib" / f"python{version}" / "site-packages" / "tests-venv.pth").write_text(
        "\n".join(paths) + "\n"
    )
    own_bin = Path(sys.executable).parent
    for script in own_bin.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        with open(script, "rb") as fh:
            first = fh.readline()
        if first.startswith(f"#!{own_bin}/python".encode()):
            copy = env / "bin" / script.name
            copy.write_bytes(f"#!{env}/bin/python\n".encode() + script.read_bytes()[len(first) :])
            os.chmod(copy, 0o755)
    return env


def _wait_node_idle(
    root: Path, env: dict[str, str], processes: list[subprocess.Popen[bytes]]
) -> None:
    state = ""

    def idle() -> bool:
        nonlocal state
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{process.args} exited ({process.returncode}) while the cluster started:\n"
                    f"{_log_tails(root, 25)}"
                )
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-n", NODE, "-o", "%T"], capture_output=True, text=True, env=env
        )
        state = done.stdout.strip() or done.stderr.strip()
        return state == "idle"

    try:
        _poll(idle, 30, f"{NODE} to be idle", interval=0.1)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc} (last state: {state!r})\n{_log_tails(root, 25)}") from None


# --------------------------------------------------------------------------------------------------
# the cluster


@contextlib.contextmanager
def running_cluster() -> Iterator[SlurmCluster]:
    """Set up, start and (on exit, through the reaper) remove the whole cluster. Skips when not
    root; fails when the packages are missing or another session holds the cluster for too long."""
    require_root("the Slurm test cluster", area="slurm")
    _check_packages()
    started = time.monotonic()
    tag = f"{os.getpid():x}"
    netns, _, _, root = names_of(tag)
    lock = acquire_lock()
    try:
        cleanup(None)  # we hold the lock: whatever is left is from a run that died
        fd, name = tempfile.mkstemp(prefix=f"ctslurm-reaper-{tag}-", suffix=".log")
        os.close(fd)
        reaper_log = Path(name)
        reaper, reaper_pipe = start_reaper(tag, reaper_log, lock)
    finally:
        lock.close()  # the reaper holds it now (or nobody, if it did not start)
    cluster: SlurmCluster | None = None
    try:
        cluster = _build(tag, root, netns)
        cluster.setup_seconds = time.monotonic() - started
        yield cluster
    finally:
        os.close(reaper_pipe)
        try:
            reaper.wait(60)
        except subprocess.TimeoutExpired:
            reaper.kill()
            reaper.wait()
        left = leftovers(tag)
        if left:
            cleanup(tag)  # the reaper failed or was killed: nothing may stay running regardless
        for process in cluster.processes if cluster else []:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)  # killed by the reaper; collect the zombie
        report = reaper_log.read_text(errors="replace") if reaper_log.exists() else ""
        reaper_log.unlink(missing_ok=True)
        if reaper.returncode != 0 or left:
            raise RuntimeError(
                f"the Slurm test cluster's reaper failed (exit {reaper.returncode}); the fixture "
                f"removed what it had left, and says so to be fixed:\n{report}\n" + "\n".join(left)
            )


def _build(tag: str, root: Path, netns: str) -> SlurmCluster:
    _mkdir(root)
    _mkdir(root / "laptop", 0o700)
    conf = _write_configs(root, free_port())
    processes: list[subprocess.Popen[bytes]] = []
    _start_munged(root, processes)
    _network(tag)
    # slurmctld initialises while the users are made; slurmd registers once both are up
    _start(
        ["/usr/sbin/slurmctld", "-D", "-c", "-f", str(conf)],
        root / "ctld" / "stderr.log",
        processes,
    )
    user, other = (_make_user(tag, letter, root) for letter in "ab")
    _start(
        node_argv(netns, "/usr/sbin/slurmd", "-D", "-N", NODE, "-f", str(conf)),
        root / "node1" / "stderr.log",
        processes,
    )
    names = [user.name, other.name]
    login, login_process = _sshd(root, "login", "127.0.0.1", free_port(), names, "local", conf, [])
    node_sshd, node_process = _sshd(
        root, "node1", NODE_ADDRESS, 22, names, "local", conf, node_argv(netns)
    )
    processes += [login_process, node_process]
    known_hosts = root / "laptop" / "known_hosts"
    known_hosts.write_text(
        login.known_hosts_line() + node_sshd.known_hosts_line(NODE) + node_sshd.known_hosts_line()
    )
    add_marked_lines(HOSTS, [f"{NODE_ADDRESS} {NODE}"], tag)
    add_marked_lines(GLOBAL_KNOWN_HOSTS, [f"{NODE},{NODE_ADDRESS} {node_sshd.host_key_pub}"], tag)
    python_env = _user_python(root)
    _wait_node_idle(root, {**server_environ(), "SLURM_CONF": str(conf)}, processes)
    return SlurmCluster(
        root,
        tag,
        conf,
        netns,
        user,
        other,
        login,
        node_sshd,
        known_hosts,
        python_env,
        processes=processes,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The session's Slurm cluster (see the module docstring); skipped when not root."""
    with running_cluster() as cluster:
        yield cluster
