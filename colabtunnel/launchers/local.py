"""The local launcher: Jupyter on this machine for a `local` profile, with no shell in between.

The direct launcher's host side is bash (remote/*.sh); a laptop may have none (native Windows).
Here the same steps are Python: the run directory (0700, beside the state records), Jupyter
started as a subprocess in its own session or process group with the token in its environment
(never on its command line), and the host's own Python files (remote/inspect.py, wait.py) run by
the Python behind `jupyter`, fed on stdin as they are over SSH. A profile with `activate` (a
shell line) keeps the direct launcher, which needs bash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from colabtunnel import paths, remote
from colabtunnel.errors import ColabtunnelError
from colabtunnel.jupyter import flavours, hostconfig, inspection
from colabtunnel.jupyter.colab_calls import HOST_SIDE
from colabtunnel.jupyter.flavours import COLAB_ORIGIN, Flavour
from colabtunnel.jupyter.inspection import INSPECT_TIMEOUT, HostInfo
from colabtunnel.launchers import Finding, Opener, Progress, Server, direct, starting
from colabtunnel.profiles import Profile
from colabtunnel.redact import mask
from colabtunnel.ssh.hosts import Host

log = logging.getLogger("colabtunnel")

NAME = "local"
STOP_GRACE_S = direct.STOP_GRACE_S
# The line every flavour logs just before it exits for having had nothing to do (idle_line.sh)
IDLE_LINE = re.compile(r"No kernels( or terminals)? for [0-9]+ seconds")


def run_dir(profile: Profile) -> Path:
    return paths.state_dir() / "run" / profile.name


# -- what this machine has -------------------------------------------------------------------------


def inspect(
    host: Host, profile: Profile, want_port: int | None = None, progress: Progress | None = None
) -> HostInfo:
    """inspection.inspect's answer, found without a shell: `jupyter`, its Python, inspect.py."""
    directory = paths.private_dir(run_dir(profile))
    workdir = _workdir(profile)
    jupyter = shutil.which(profile.jupyter)
    if jupyter is None:
        raise inspection.stage_error("jupyter-missing", profile, "")
    python = python_of(Path(jupyter))
    args = [str(directory), str(want_port or 0), jupyter, inspection.watched()]
    data, stderr = _host_python(python, "inspect.py", args, workdir, INSPECT_TIMEOUT)
    return inspection.from_answer(data, profile, stderr)


def _workdir(profile: Profile) -> Path:
    workdir = Path(profile.workdir or "~").expanduser()
    if not workdir.is_dir():
        raise inspection.stage_error("workdir", profile, "")
    return workdir


def python_of(jupyter: Path) -> str:
    """The Python that runs this `jupyter`: the one beside it (a venv's bin/ or Scripts\\), else
    its shebang's, else this one."""
    for name in ("python.exe", "python", "python3"):
        beside = jupyter.with_name(name)
        if beside.is_file():
            return str(beside)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        first = jupyter.read_bytes()[:512].split(b"\n", 1)[0].decode()
        if first.startswith("#!") and "/env " not in first:
            candidate = first[2:].strip().split()[0]
            if Path(candidate).is_file():
                return candidate
    return sys.executable


def _host_python(
    python: str, name: str, args: list[str], cwd: Path, timeout: float, env: Any = None
) -> tuple[dict[str, Any], str]:
    """Run one of remote/'s Python files as a host does (`python - ARGS`, the file on stdin)."""
    try:
        done = subprocess.run(
            [python, "-", *args],
            input=remote.python(name).encode(),
            capture_output=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise ColabtunnelError(f"{name} did not finish within {timeout:.0f} s") from exc
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    for line in reversed(out.splitlines()):
        if line.startswith(remote.MARKER):
            return json.loads(line[len(remote.MARKER) :]), err
    raise ColabtunnelError(
        f"{name} failed on this machine (exit {done.returncode}): {inspection.tail(err or out)}",
        hint="run with --debug for the full output",
    )


# -- the launcher ----------------------------------------------------------------------------------


def find(host: Host, profile: Profile, info: HostInfo, progress: Progress) -> Server | None:
    """As the direct launcher: the server an earlier `up` left, if alive, answering and known."""
    pid = info.existing.pid if info.existing else None
    return starting.reattach(info, progress, lambda: stop(host, profile, None), {"pid": pid})


def start(
    host: Host,
    profile: Profile,
    info: HostInfo,
    flavour: Flavour,
    token: str,
    want_port: int | None,
    timeout: float,
    progress: Progress,
) -> Server:
    """Start Jupyter here, wait until it answers Colab's way, or fail (as the direct launcher)."""
    return starting.start_with_retries(
        host.name,
        profile,
        info,
        flavour,
        token,
        want_port,
        progress,
        once=lambda port: _start_once(profile, info, flavour, token, port, timeout),
        tail=lambda: log_tail(host, profile, 15),
        stop=lambda: stop(host, profile, None),
        timeout=timeout,
    )


def _start_once(
    profile: Profile, info: HostInfo, flavour: Flavour, token: str, port: int, timeout: float
) -> tuple[dict[str, Any], str]:
    directory = paths.private_dir(run_dir(profile))
    args = flavours.server_args(
        flavour,
        port,
        allow_root=info.uid == 0,
        shimmed=hostconfig.shimmed(info.config, flavour),
        extra=profile.jupyter_args,
        idle_timeout=profile.idle_timeout,
    )
    env = {**os.environ, **profile.env, "JUPYTER_TOKEN": token}
    (directory / "token").unlink(missing_ok=True)
    _write(directory / "token", token)
    _write(directory / "port", f"{port}\n")
    _write(directory / "flavour", f"{flavour.key}\n")
    log.info("starting %s on port %d: jupyter %s", flavour.label, port, " ".join(args))
    with open(directory / "jupyter.log", "wb") as jupyter_log:
        process = subprocess.Popen(
            [info.jupyter_path, *args],
            stdin=subprocess.DEVNULL,
            stdout=jupyter_log,
            stderr=subprocess.STDOUT,
            cwd=_workdir(profile),
            env=env,
            **_detached(),
        )
    _write(directory / "jupyter.pid", f"{process.pid}\n")
    _write(directory / "jupyter.started", f"{_started(process.pid)}\n")
    requests = json.dumps([r.to_json(COLAB_ORIGIN) for r in HOST_SIDE])
    wait_args = [str(process.pid), str(port), str(timeout), requests]
    return _host_python(
        info.python_path, "wait.py", wait_args, directory, timeout + INSPECT_TIMEOUT, env
    )


def _detached() -> dict[str, Any]:
    """Its own session (POSIX) or process group (Windows), so the whole of it can be stopped and
    the terminal that ran `up` can close."""
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        return {"creationflags": flags}
    return {"start_new_session": True}


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _started(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).create_time())


def _read(directory: Path, name: str) -> str | None:
    try:
        return (directory / name).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def attach(host: Host, profile: Profile, server: Server, creds: Any) -> None:
    """Jupyter listens on this machine's loopback: nothing to forward."""
    return None


def alive(opener: Opener, server: Server) -> bool | None:
    return opener.reaches(server.endpoint)


def stop(host: Host, profile: Profile, handle: dict[str, Any] | None) -> bool:
    """Stop the profile's Jupyter (its session or group: TERM, KILL after the grace) and remove
    the run directory (the token). The PID counts only with its start time: a PID alone may be
    another process's by now."""
    import psutil

    directory = run_dir(profile)
    pid, started = _read(directory, "jupyter.pid"), _read(directory, "jupyter.started")
    was_running = False
    if pid and pid.isdigit() and started:
        try:
            process = psutil.Process(int(pid))
            was_running = abs(process.create_time() - float(started)) < 1.0
        except (psutil.Error, ValueError):
            was_running = False
        if was_running:
            _stop_tree(process)
    shutil.rmtree(directory, ignore_errors=True)
    return was_running


def _stop_tree(process: Any) -> None:
    import psutil

    tree = [process, *process.children(recursive=True)]
    try:
        if sys.platform == "win32":
            raise OSError("no process groups to signal")
        os.killpg(process.pid, signal.SIGTERM)  # its session: kernels included
    except OSError:  # not a group of its own (started otherwise): each process then
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.terminate()
    _, left = psutil.wait_procs(tree, timeout=STOP_GRACE_S)
    for member in left:
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(left, timeout=5)


def stop_command(profile: Profile) -> str:
    """What the user runs to stop it by hand, should `down` not manage (manual_stop.py)."""
    directory = run_dir(profile)
    pid = _read(directory, "jupyter.pid") or "PID"
    if sys.platform == "win32":
        return f'taskkill /PID {pid} /T /F & rmdir /S /Q "{directory}"'
    import shlex

    return f"kill -TERM -- -{pid}; rm -rf {shlex.quote(str(directory))}"


def ended(host: Host, profile: Profile, handle: dict[str, Any]) -> str | None:
    """ "idle" when Jupyter's log says it ended itself for having nothing to do, else None."""
    said = _read(run_dir(profile), "jupyter.log") or ""
    return "idle" if IDLE_LINE.search(said) else None


def log_tail(host: Host, profile: Profile, lines: int = 50) -> str:
    said = _read(run_dir(profile), "jupyter.log") or ""
    return mask("\n".join(said.splitlines()[-lines:]))


def logs(
    host: Host, profile: Profile, lines: int, follow: bool, sink: Callable[[str], None]
) -> int:
    """The log's last `lines` lines and, with `follow`, new ones, masked; 3 when there is none."""
    path = run_dir(profile) / "jupyter.log"
    try:
        fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115  (kept open to follow)
    except OSError:
        return 3
    with fh:
        for line in fh.read().splitlines()[-lines:] if lines else []:
            sink(mask(line))
        while follow:
            line = fh.readline()
            if line:
                sink(mask(line.rstrip("\n")))
            else:
                time.sleep(0.2)
    return 0


def node_host(host: Host, server: Server) -> Host:
    return host


def details(host: Host, profile: Profile, handle: dict[str, Any]) -> dict[str, Any] | None:
    return None


def check(host: Host, profile: Profile, info: HostInfo) -> list[Finding]:
    return direct.check(host, profile, info)
