"""What the Slurm test cluster (tests/slurm_cluster.py) leaves on the machine, and its removal.

Owns the names of everything a cluster creates (all tagged with the owner's pid in hex), finding
what is left of a cluster (`leftovers`), removing it (`cleanup`), the machine-wide lock that lets
one cluster run at a time (`acquire_lock`), and the reaper process (`python -m
tests.slurm_cleanup --reap TAG`) that removes a cluster once its test session closes a pipe or dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import psutil

from tests.auth_servers import _ip, _poll
from tests.sshd import manage_users, server_environ

REPO = Path(__file__).resolve().parent.parent
RUN_PREFIX = "/run/ctslurm-"  # + tag: the cluster's own directory
NS_PREFIX = "ctsl-"  # + tag: the node's network namespace; its veth pair: ctsl<tag>h / ctsl<tag>n
USER_PREFIX = "ctsl_"  # + tag + _a / _b
MARK = "colabtunnel-slurm-test"  # ends each line the cluster adds to a system file
LOCK_FILE = Path("/run/lock/colabtunnel-slurm.lock")
LOCK_WAIT_S = 240.0  # below pytest-timeout's 300 s, so a busy machine gives this message instead
HOSTS = Path("/etc/hosts")
GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


# --------------------------------------------------------------------------------------------------
# names and leftovers


def names_of(tag: str) -> tuple[str, str, str, Path]:
    """netns, root-side veth, node-side veth, run dir of the cluster tagged `tag`."""
    return f"{NS_PREFIX}{tag}", f"ctsl{tag}h", f"ctsl{tag}n", Path(f"{RUN_PREFIX}{tag}")


def _users(tag: str | None) -> list[pwd.struct_passwd]:
    pattern = rf"{USER_PREFIX}{re.escape(tag) if tag else '[0-9a-z]+'}_[ab]"
    return [entry for entry in pwd.getpwall() if re.fullmatch(pattern, entry.pw_name)]


def _namespaces(tag: str | None) -> list[str]:
    listed = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines()]
    return (
        [ns for ns in listed if ns == names_of(tag)[0]]
        if tag
        else [ns for ns in listed if ns.startswith(NS_PREFIX)]
    )


def _run_dirs(tag: str | None) -> list[Path]:
    if tag:
        return [path for path in [names_of(tag)[3]] if path.exists()]
    return sorted(Path("/run").glob(Path(RUN_PREFIX).name + "*"))


def _processes(tag: str | None) -> list[psutil.Process]:
    """Everything the cluster runs: processes whose command line names its directory (daemons,
    sshds) with all their descendants, everything in the node's namespace (slurmstepd, jobs) and
    everything the test users run (ssh sessions, srun)."""
    named = re.compile(re.escape(RUN_PREFIX) + (re.escape(tag) if tag else "[0-9a-z]+") + r"\b")
    user_names = {entry.pw_name for entry in _users(tag)}
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline", "username"]):
        try:
            if (
                named.search(" ".join(proc.info["cmdline"] or []))
                or proc.info["username"] in user_names
            ):
                found[proc.pid] = proc
                found.update({child.pid: child for child in proc.children(recursive=True)})
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for ns in _namespaces(tag):
        for pid in _ip("netns", "pids", ns, check=False).stdout.split():
            with contextlib.suppress(psutil.NoSuchProcess):
                found[int(pid)] = psutil.Process(int(pid))
    found.pop(os.getpid(), None)
    return [proc for proc in found.values() if _alive(proc)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _marked_lines(path: Path, tag: str | None) -> list[str]:
    """Lines of a system file that a cluster added: of the one tagged `tag`, or of any (None)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        match = re.search(rf"#\s*{MARK} (\S+)\s*$", line)
        if match and tag in (None, match.group(1)):
            found.append(line)
    return found


def leftovers(tag: str | None = None) -> list[str]:
    """What is left of the cluster tagged `tag` (None: of any), described for an error message."""
    found = [f"process {p.pid} {' '.join(p.cmdline())[:80]}" for p in _processes(tag)]
    found += [f"network namespace {ns}" for ns in _namespaces(tag)]
    if tag:
        veth = names_of(tag)[1]
        if _ip("link", "show", veth, check=False).returncode == 0:
            found.append(f"veth {veth}")
    found += [f"user {entry.pw_name}" for entry in _users(tag)]
    found += [
        f"line in {path}: {line}"
        for path in (HOSTS, GLOBAL_KNOWN_HOSTS)
        for line in _marked_lines(path, tag)
    ]
    found += [f"directory {path}" for path in _run_dirs(tag)]
    return found


def cleanup(tag: str | None = None) -> None:
    """Remove every trace of the cluster tagged `tag`, or of every cluster (None: a leftover
    sweep, only safe while holding LOCK_FILE). Idempotent."""
    _kill(_processes(tag))
    for ns in _namespaces(tag):
        _ip("netns", "del", ns, check=False)
    if tag:
        _ip("link", "del", names_of(tag)[1], check=False)
    for entry in _users(tag):
        manage_users(["userdel", "-f", "-r", entry.pw_name])
        home = Path(entry.pw_dir)
        if home.parent == Path("/home") and home.name == entry.pw_name:
            shutil.rmtree(home, ignore_errors=True)
    _remove_marked_lines(HOSTS, tag)
    _remove_marked_lines(GLOBAL_KNOWN_HOSTS, tag, drop_if_empty=True)
    for path in _run_dirs(tag):
        shutil.rmtree(path, ignore_errors=True)


def _kill(victims: list[psutil.Process]) -> None:
    """SIGKILL and wait until each is gone or a zombie: the daemons are the test session's
    children, and only it can reap them (psutil.wait_procs would wait out its timeout)."""
    for proc in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    with contextlib.suppress(RuntimeError):
        _poll(lambda: not any(_alive(proc) for proc in victims), 10, "killed processes to exit")


def add_marked_lines(path: Path, lines: list[str], tag: str) -> None:
    """Append `lines` to a system file, in place (the file may be a bind mount: no rename)."""
    with open(path, "a+") as fh:
        fh.seek(0)
        text = fh.read()
        if text and not text.endswith("\n"):
            fh.write("\n")
        fh.write("".join(f"{line}  # {MARK} {tag}\n" for line in lines))
    os.chmod(path, 0o644)


def _remove_marked_lines(path: Path, tag: str | None, drop_if_empty: bool = False) -> None:
    marked = set(_marked_lines(path, tag))
    if not marked:
        return
    kept = [
        line
        for line in path.read_text().splitlines(keepends=True)
        if line.rstrip("\n") not in marked
    ]
    if drop_if_empty and not "".join(kept).strip():
        path.unlink()
        return
    with open(path, "r+") as fh:
        fh.write("".join(kept))
        fh.truncate()


# --------------------------------------------------------------------------------------------------
# the lock and the reaper


def acquire_lock(wait: float = LOCK_WAIT_S) -> IO[str]:
    """The machine-wide cluster lock (an open file holding a flock); its text names the holder."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    fh = open(LOCK_FILE, "a+")  # noqa: SIM115 - the open file holds the flock; the caller closes it
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                fh.close()
                raise RuntimeError(
                    f"another test session runs the Slurm test cluster ({holder}; lock "
                    f"{LOCK_FILE}); waited {wait:.0f} s. Only one can run on a machine at a time."
                ) from None
            time.sleep(0.5)
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n")
    fh.flush()
    return fh


def start_reaper(tag: str, log: Path, lock: IO[str] | None) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m tests.slurm_cleanup --reap TAG`: waits for EOF on its stdin, then cleans up. It
    shares the lock (the flock stays held until it is done) and gets the only write end of its
    stdin, returned here: close it (or die) and the cluster goes away."""
    read_end, write_end = os.pipe()
    pass_fds = (lock.fileno(),) if lock else ()
    with open(log, "ab") as log_fh:
        reaper = subprocess.Popen(
            [sys.executable, "-m", "tests.slurm_cleanup", "--reap", tag],
            stdin=read_end,
            stdout=log_fh,
            stderr=log_fh,
            cwd=REPO,
            env=server_environ(),
            pass_fds=pass_fds,
            start_new_session=True,  # Ctrl-C in the terminal must not kill it
        )
    os.close(read_end)
    return reaper, write_end


def _reap(tag: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.stdin.buffer.read()  # EOF: the owner closed its end or died
    started = time.monotonic()
    cleanup(tag)
    left = leftovers(tag)
    print(f"reaper: cleaned up cluster {tag} in {time.monotonic() - started:.2f} s", flush=True)
    if left:
        print("reaper: left behind:\n  " + "\n  ".join(left), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reap"] and len(sys.argv) == 3:
        sys.exit(_reap(sys.argv[2]))
    print("usage: python -m tests.slurm_cleanup --reap TAG", file=sys.stderr)
    sys.exit(2)
