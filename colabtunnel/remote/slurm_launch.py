"""Inside a Slurm job, on the compute node: start Jupyter for one colabtunnel session.

Run by the job's batch script as `python slurm_launch.py SESSION_DIR` after the profile's
`activate`. Everything it needs is in SESSION_DIR (0700, shared with the login node):
  job.json   what to run: the jupyter command, its arguments (with {port}), the address to bind
  token      the token (0600); it reaches Jupyter through JUPYTER_TOKEN_FILE, or (classic
             Notebook, which cannot read a file) this process's child environment: never argv
It writes there:
  events     `EPOCH NAME DETAIL` lines: start, jupyter, warn (time limit near), term, exit
             (finished jobs vanish from squeue, and sacct needs a database many sites lack)
  conn.json  node, port, pid, flavour: written atomically once Jupyter has bound its port
  gpus.json  the node's GPUs as nvidia-smi (or rocm-smi) sees them inside the job
  jupyter.log

It picks a free port on the node, and if another process takes it first (Jupyter then says the
port "is not available"), picks another. It must run on the Pythons clusters have (3.6+):
standard library only, no newer syntax.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, Optional

# The node's GPUs (those this job may use): the query starts here, beside Jupyter's start-up.
from colabtunnel.remote.gpu_query import gpus  # host: inline

PORT_TRIES = 5


class Session:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        with open(os.path.join(directory, "job.json")) as fh:
            self.job: Dict[str, Any] = json.load(fh)
        self.jupyter: Optional[subprocess.Popen[bytes]] = None
        # Set by the signal handler, acted on by the main loop: a handler that waited for Jupyter
        # itself would deadlock with Popen.wait() in progress on the same thread.
        self.stop_signal = 0

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def event(self, name: str, detail: str = "") -> None:
        with open(self.path("events"), "a") as fh:
            fh.write(f"{time.time():.3f} {name} {detail}\n")

    def write_json(self, name: str, data: Dict[str, Any]) -> None:
        temp = self.path(name + ".tmp")
        with open(temp, "w") as fh:
            json.dump(data, fh)
        os.rename(temp, self.path(name))

    def write_conn(self, port: int, pid: int) -> None:
        data = {
            "node": socket.gethostname(),
            "address": bind_address(self),  # where Jupyter listens, as seen on the node
            "port": port,
            "pid": pid,
            "flavour": self.job["flavour"],
        }
        self.write_json("conn.json", data)


def bind_address(session: Session) -> str:
    """127.0.0.1, or the node's own address when the profile asked for network access."""
    if session.job.get("bind") == "node":
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


def free_port(bind: str) -> int:
    sock = socket.socket()
    try:
        sock.bind((bind, 0))
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def child_environment(session: Session) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("JUPYTER_TOKEN", None)
    env["JUPYTER_RUNTIME_DIR"] = session.path("runtime")
    token_file = session.path("token")
    if session.job.get("classic"):
        with open(token_file) as fh:
            env["JUPYTER_TOKEN"] = fh.read()
    else:
        env["JUPYTER_TOKEN_FILE"] = token_file
    return env


def server_file(session: Session, pid: int) -> Optional[Dict[str, Any]]:
    """Jupyter's own runtime file for `pid`: written once it serves (the proof it has bound)."""
    for prefix in ("jpserver", "nbserver"):
        name = os.path.join(session.path("runtime"), f"{prefix}-{pid}.json")
        if os.path.exists(name):
            try:
                with open(name) as fh:
                    data: Dict[str, Any] = json.load(fh)
                    return data
            except ValueError:  # being written
                return None
    return None


def start(session: Session, port: int) -> "subprocess.Popen[bytes]":
    ip = bind_address(session)
    argv = [session.job["jupyter"]]
    argv += [arg.replace("{port}", str(port)).replace("{ip}", ip) for arg in session.job["args"]]
    with open(session.path("jupyter.log"), "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_environment(session),
            start_new_session=True,
        )


def log_says_port_taken(session: Session) -> bool:
    try:
        with open(session.path("jupyter.log"), "rb") as fh:
            tail = fh.read()[-4000:].decode("utf-8", "replace")
    except OSError:
        return False
    return "is not available" in tail or "Address already in use" in tail


def wait_until_serving(
    session: Session, process: "subprocess.Popen[bytes]", deadline: float
) -> Optional[int]:
    """The port Jupyter serves on, or None if it exited (or the deadline passed)."""
    while time.time() < deadline and not session.stop_signal:
        if process.poll() is not None:
            return None
        info = server_file(session, process.pid)
        if info and info.get("port"):
            return int(info["port"])
        time.sleep(0.1)
    return None


def stop(process: Optional["subprocess.Popen[bytes]"], grace: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except OSError:
        return
    end = time.time() + grace
    while time.time() < end and process.poll() is None:
        time.sleep(0.1)
    if process.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(directory: str) -> int:
    session = Session(directory)
    os.makedirs(session.path("runtime"), mode=0o700, exist_ok=True)
    session.event("start", socket.gethostname())

    def on_warning(signum: int, frame: Any) -> None:
        session.event("warn", "the job's time limit is near")

    def on_stop(signum: int, frame: Any) -> None:
        session.stop_signal = signum

    signal.signal(signal.SIGUSR1, on_warning)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)

    deadline = time.time() + float(session.job.get("start_timeout", 600))
    bind = bind_address(session)
    process = None
    for _ in range(PORT_TRIES):
        process = session.jupyter = start(session, free_port(bind))
        port = wait_until_serving(session, process, deadline)
        if session.stop_signal:
            return stopped(session)
        if port is not None:
            session.write_json("gpus.json", gpus())  # before conn.json: read together
            session.write_conn(port, process.pid)
            session.event("jupyter", f"port {port} pid {process.pid}")
            break
        if process.poll() is None:  # no answer in time
            stop(process)
            session.event("exit", "jupyter did not start within the start timeout")
            return 1
        if not log_says_port_taken(session):
            session.event("exit", f"jupyter exited at start (status {process.returncode})")
            return 1
    else:
        session.event("exit", f"no free port after {PORT_TRIES} tries")
        return 1
    assert process is not None
    while process.poll() is None and not session.stop_signal:
        time.sleep(0.2)
    if session.stop_signal:
        return stopped(session)
    session.event("exit", f"jupyter exited (status {process.returncode})")
    return process.returncode


def stopped(session: Session) -> int:
    """Told to stop (scancel, the time limit, preemption): stop Jupyter and its kernels."""
    session.event("term", f"signal {session.stop_signal}")
    stop(session.jupyter)
    session.event("exit", "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
