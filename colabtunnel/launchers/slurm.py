"""The slurm launcher: Jupyter inside a Slurm job on a compute node, behind the login node.

`up` asks Slurm for the profile's resources with `sbatch`, waits while the job is queued (saying
why, and when Slurm expects it to start), and once the job runs, waits for the in-job launcher
(remote/slurm_launch.py) to report that Jupyter serves on the node's own 127.0.0.1. The tunnel
then reaches it by one more SSH hop from the login node (nested_ssh.py): a private sshd started
in the job with `srun --overlap` (access "srun"), the node's own sshd (access "node-ssh"), or,
only when asked, the node's cluster address (access "network", the token the only guard).

No secret reaches Slurm: the token is in a 0600 file of a 0700 session directory that login and
compute nodes share (`session_root`), the batch script goes on sbatch's stdin and holds none, and
the job is submitted under umask 077. Finished jobs vanish from squeue and many sites have no
accounting database, so the job's own event file says what happened last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colabtunnel import durations, paths, remote
from colabtunnel.errors import ColabtunnelError
from colabtunnel.findings import FAIL, PASS, WARN, Finding
from colabtunnel.jupyter import flavours, hostconfig
from colabtunnel.jupyter.flavours import Flavour
from colabtunnel.jupyter.gpus import GpuReport
from colabtunnel.jupyter.inspection import INSPECT_TIMEOUT, HostInfo, result
from colabtunnel.jupyter.inspection import inspect as inspect  # Launcher.inspect: the login node
from colabtunnel.launchers import ConnectionReach, Opener, Progress, Reach, Server, stream_masked
from colabtunnel.launchers import slurm_queue as queue
from colabtunnel.profiles import Profile
from colabtunnel.redact import mask, register
from colabtunnel.slurm_settings import SlurmSettings
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.hosts import Host, InnerHost, SSHHost

log = logging.getLogger("colabtunnel")

NAME = "slurm"
POLL_FIRST_S = 2.0  # squeue is asked gently: from 2 s, backing off to 30 s while queued
POLL_MAX_S = 30.0
CANCEL_WAIT_S = 60.0
SQUEUE_LIMIT_S = 5  # slurm_status.sh's squeue limit: a status is never held by the scheduler
# slurm_cancel.sh's limit on each squeue and scancel: past slurm.conf's MessageTimeout (10 s
# default), so a slow scheduler still answers and a silent one does not hold `down` for long
CANCEL_SCHEDULER_LIMIT_S = 15
# A job whose Jupyter ended itself (idle_timeout) gets this long to end COMPLETED before a cancel
IDLE_SETTLE_S = 20.0
WARN_LEFT_S = 600  # the job's time-limit warning (`--signal=B:USR1@600`) and status's


def _settings(profile: Profile) -> SlurmSettings:
    return profile.slurm or SlurmSettings()


def _session_values(profile: Profile) -> dict[str, str]:
    return {
        "session_root": remote.shell_path(_settings(profile).session_root),
        "profile": remote.quote(profile.name),
    }


def _run(host: Host, profile: Profile, name: str, timeout: float, **values: Any) -> str:
    script = remote.render(
        remote.text("slurm_session.sh") + remote.text(name), **_session_values(profile), **values
    )
    done = host.run_script(script, timeout)
    return done.stdout


# --- what the login node says about a session -------------------------------------------------


@dataclass(frozen=True)
class Status:
    job: str | None
    state: queue.JobState | None
    conn: dict[str, Any] | None
    events: list[queue.Event]
    token: str | None
    gpus: GpuReport | None = None  # what the job saw on its node
    accounting: queue.Accounting | None = None  # sacct, for a job gone from squeue
    # squeue did not answer (slurmctld down or busy): the job's state is unknown, not "gone"
    unreachable: str | None = None


def _sections(text: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:]
            found[current] = []
        elif current is not None:
            found[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def status(host: Host, profile: Profile, with_token: bool = False) -> Status:
    """The session's job, its line in squeue, its connection file and events: one round trip."""
    out = _run(
        host,
        profile,
        "slurm_status.sh",
        INSPECT_TIMEOUT,
        format=remote.quote(queue.SQUEUE_FORMAT),
        sacct_fields=queue.SACCT_FIELDS,
        with_token="yes" if with_token else "no",
        squeue_limit=SQUEUE_LIMIT_S,
    )
    parts = _sections(out)
    job = parts.get("job") or None
    conn = None
    with contextlib.suppress(ValueError):  # written atomically: unreadable means not there yet
        conn = json.loads(parts.get("conn") or "null")
    token = parts.get("token") or None
    if token:
        register(token)
    gpus = None
    with contextlib.suppress(ValueError):
        gpus = GpuReport.from_json(json.loads(parts["gpus"])) if parts.get("gpus") else None
    unreachable = None
    if parts.get("squeue-status", "0") not in ("", "0"):
        said = parts.get("squeue", "").strip().splitlines()
        if said:
            unreachable = said[-1]
        elif parts["squeue-status"] == "124":  # timeout(1): slurmctld took the call, no answer
            unreachable = f"squeue gave no answer in {SQUEUE_LIMIT_S} s"
        else:
            unreachable = f"squeue exited {parts['squeue-status']}"
    return Status(
        unreachable=unreachable,
        job=job,
        state=queue.parse_squeue(parts.get("squeue", ""), job) if job else None,
        conn=conn if isinstance(conn, dict) else None,
        events=queue.parse_events(parts.get("events", "")),
        token=token,
        gpus=gpus,
        accounting=queue.parse_sacct(parts.get("sacct", ""), job) if job else None,
    )


def _endpoint(profile: Profile, conn: dict[str, Any]) -> tuple[str, int]:
    if _settings(profile).access == "network":
        return str(conn.get("address") or conn["node"]), int(conn["port"])
    return "127.0.0.1", int(conn["port"])


# --- the protocol ----------------------------------------------------------------------------


def find(host: Host, profile: Profile, info: HostInfo, progress: Progress) -> Server | None:
    """A session an earlier `up` left: re-attach to its job (waiting for it if it is still
    queued or starting), same token, same URL; a job that ended is cleaned up."""
    found = status(host, profile, with_token=True)
    if found.job is None:
        return None
    if found.state is not None and found.state.active and found.token:
        progress.step(f"re-attaching to job {found.job} ({found.state.state})")
        handle = _handle(profile, found.job, found.state.node)
        flavour = str((found.conn or {}).get("flavour") or "?")
        progress.submitted(handle, found.token, flavour)
        return _wait(host, profile, found.job, found.token, progress, reattached=True)
    why = queue.ended_why(
        found.state.state if found.state else None, found.accounting, found.events
    )
    stop(host, profile, {"job": found.job})
    progress.note(
        f"the earlier job {found.job} is gone ({why}): submitting a new one; "
        "the URL (token) changes and its kernels are lost"
    )
    return None


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
    """Submit the job, wait in the queue, wait for Jupyter in the job: the Server, or an error
    that says why (the job is cancelled then, nothing is left on the cluster)."""
    from colabtunnel.ssh.nested_ssh import SessionKeys

    settings = _settings(profile)
    keys = SessionKeys.generate() if settings.access in ("auto", "srun") else None
    shimmed = hostconfig.shimmed(info.config, flavour)
    ip = "{ip}" if settings.access == "network" else "127.0.0.1"
    job = {
        "jupyter": info.jupyter_path,
        "args": flavours.server_args(
            flavour,
            "{port}",
            allow_root=info.uid == 0,
            shimmed=shimmed,
            extra=profile.jupyter_args,
            ip=ip,
            idle_timeout=profile.idle_timeout,
        ),
        "flavour": flavour.key,
        "classic": flavour.key == "notebook6",  # reads no token file: the launcher passes it on
        "bind": "node" if settings.access == "network" else "127.0.0.1",
        "start_timeout": settings.start_timeout_s,
    }
    session = _session_values(profile)
    batch = remote.render(
        remote.text("slurm_job.sh"),
        profile_name=profile.name.replace("\n", " "),
        session=f"{session['session_root']}/{session['profile']}",
        workdir=remote.shell_path(profile.workdir),
        activate=profile.activate or ":",
        python=remote.quote(info.python_path),
    )
    own = [
        f"--job-name={remote.quote('colabtunnel-' + profile.name)}",
        '--output="$SESSION/job.out"',
        f"--signal=B:USR1@{WARN_LEFT_S}",
    ]
    options = " ".join([*own, *(remote.quote(o) for o in settings.sbatch_options())])
    if settings.access == "network":
        progress.note(
            'access = "network": Jupyter will listen on the compute node\'s cluster address, '
            "where every user of the cluster can reach its port: the token is the only guard"
        )
    progress.step(f"submitting a job on {host.name}: {' '.join(settings.sbatch_options())}")
    progress.started()
    script = remote.render(
        remote.text("slurm_session.sh") + remote.text("slurm_submit.sh"),
        **session,
        token=remote.quote(token),
        job_json=json.dumps(job),
        launcher=remote.python("slurm_launch.py"),
        host_key=keys.host_private.strip() if keys else "",
        authorized_key=remote.quote(keys.client_public if keys else ""),
        batch_script=batch,
        options=options,
    )
    done = host.run_script(script, INSPECT_TIMEOUT)
    answer = _answer(done.stdout)
    if not answer.get("ok"):
        raise _submit_error(str(answer.get("stage")), done.stderr, host, profile)
    job_id = str(answer["job"])
    log.info("submitted job %s", job_id)
    handle = _handle(profile, job_id, None)
    if keys is not None:
        handle["keys"] = {"host": keys.host_public, "client": keys.client_private}
    progress.submitted(handle, token, flavour.key)
    # On failure the tunnel cancels the job (abandon_on_failure: launcher.stop with this handle),
    # and keeps the record when the scheduler cannot be told.
    return _wait(host, profile, job_id, token, progress, reattached=False, handle=handle)


def _handle(profile: Profile, job: str, node: str | None) -> dict[str, Any]:
    return {"job": job, "node": node, "access": _settings(profile).access}


def _answer(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(remote.MARKER):
            data: dict[str, Any] = json.loads(line[len(remote.MARKER) :])
            return data
    return {"ok": False, "stage": "no-answer"}


def _submit_error(stage: str, stderr: str, host: Host, profile: Profile) -> ColabtunnelError:
    root = _settings(profile).session_root
    if stage.startswith("missing-"):
        tool = stage.removeprefix("missing-")
        return ColabtunnelError(
            f"{tool} was not found on {host.name}: is it a Slurm login node?",
            hint='set launcher = "direct" for a host without Slurm, or load Slurm in `activate`',
        )
    if stage == "session-root":
        return ColabtunnelError(
            f"cannot create the session directory under {root} on {host.name}",
            hint="session_root must be a writable directory that the compute nodes share",
        )
    if stage == "sbatch":
        said = [line for line in stderr.strip().splitlines() if line.strip()]
        return ColabtunnelError(
            f"sbatch refused the job: {mask(said[-1]) if said else 'no message'}",
            hint="fix the request in the profile's slurm table (partition, gpus, time, ...); "
            "`colabtunnel doctor` runs sbatch --test-only with it",
        )
    return ColabtunnelError(
        f"submitting the job on {host.name} failed: {mask(stderr.strip()) or stage}",
        hint="run with --debug for the full output",
    )


def _wait(
    host: Host,
    profile: Profile,
    job: str,
    token: str,
    progress: Progress,
    *,
    reattached: bool,
    handle: dict[str, Any] | None = None,
) -> Server:
    settings = _settings(profile)
    started = time.monotonic()
    running_since: float | None = None
    pause = POLL_FIRST_S
    while True:
        found = status(host, profile)
        state = found.state
        waited = time.monotonic() - started
        if found.unreachable is not None:
            if waited > settings.queue_timeout_s:
                raise ColabtunnelError(
                    f"the scheduler did not answer for {durations.short_duration(waited)} "
                    f"(queue_timeout): {found.unreachable}; job {job} is cancelled if it can be",
                    hint="try again when the cluster's scheduler answers (`squeue` on the login node)",
                )
            progress.step(f"unknown (scheduler unreachable: {found.unreachable})")
            time.sleep(pause)
            pause = min(pause * 1.5, POLL_MAX_S)
            continue
        if state is None or not state.active:
            why = queue.ended_why(state.state if state else None, found.accounting, found.events)
            raise ColabtunnelError(
                f"job {job} ended before Jupyter was ready: {why}",
                hint=f"`colabtunnel logs {profile.name}` shows the job's output",
            )
        if state.state == "PENDING":
            if state.never_starts():
                raise ColabtunnelError(
                    f"job {job} cannot start: {state.pending_text()}; it was cancelled",
                    hint="ask for less (partition, gpus, time, account, qos) in the slurm table",
                )
            if waited > settings.queue_timeout_s:
                raise ColabtunnelError(
                    f"job {job} was still {state.pending_text()} after "
                    f"{durations.short_duration(waited)} (queue_timeout); it was cancelled",
                    hint="raise queue_timeout in the slurm table, or ask for less",
                )
            eta = f" · est. start {state.start[11:16]}" if "T" in state.start else ""
            progress.step(f"{state.pending_text()} {durations.short_duration(waited)}{eta}")
        else:
            if running_since is None:
                running_since = time.monotonic()
                progress.step(f"RUNNING on {state.node} · starting Jupyter")
            if found.conn is not None:
                node = str(found.conn.get("node") or state.node)
                server_handle = {**(handle or {}), **_handle(profile, job, node)}
                return Server(
                    endpoint=_endpoint(profile, found.conn),
                    token=token,
                    flavour=str(found.conn.get("flavour") or "?"),
                    handle=server_handle,
                    reattached=reattached,
                    ready_s=time.monotonic() - running_since,
                    gpus=found.gpus,
                )
            starting = time.monotonic() - running_since
            if starting > settings.start_timeout_s:
                raise ColabtunnelError(
                    f"job {job} runs on {state.node} but Jupyter did not start within "
                    f"{durations.short_duration(starting)} (start_timeout); it was cancelled",
                    hint=f"`colabtunnel logs {profile.name}` shows the job's output",
                )
            progress.step(
                f"RUNNING on {state.node} · starting Jupyter ({durations.short_duration(starting)})"
            )
            pause = POLL_FIRST_S
        time.sleep(pause)
        pause = min(pause * 1.5, POLL_MAX_S) if state.state == "PENDING" else POLL_FIRST_S


def attach(host: Host, profile: Profile, server: Server, creds: Credentials) -> Reach | None:
    """The session whose channels reach Jupyter on the node (see the module docstring)."""
    if not isinstance(host, SSHHost):
        return None
    connection = host.connection
    access = server.handle.get("access", "auto")
    if access == "network":
        return ConnectionReach(connection.transport, connection.link_rtt, owned=False)
    errors = []
    for mode in _access_order(profile, access):
        try:
            transport = _node_session(mode, host, profile, server, creds)
        except ColabtunnelError as exc:
            errors.append(f"{mode}: {exc.message}")
            continue
        server.handle["access_used"] = mode
        if access == "auto":
            _remember_access(profile, mode)
        return ConnectionReach(transport, connection.link_rtt, owned=True)
    raise ColabtunnelError(
        f"cannot reach Jupyter on {server.handle.get('node')}: " + "; ".join(errors),
        hint="set access in the profile's slurm table (srun, node-ssh or network)",
    )


# Measured on the test cluster (python -m benchmarks.slurm_access): SSH into the node moved 93 MB/s,
# the srun stdio relay 22 MB/s; so `auto` tries node-ssh first, and what worked last time first.
AUTO_ORDER = ("node-ssh", "srun")


def _access_file() -> Path:
    return paths.state_dir() / "slurm-access.json"


def _access_order(profile: Profile, access: str) -> list[str]:
    if access != "auto":
        return [access]
    try:
        remembered = json.loads(_access_file().read_text()).get(profile.name)
    except (OSError, ValueError, AttributeError):
        remembered = None
    first = [remembered] if remembered in AUTO_ORDER else []
    return [*first, *(mode for mode in AUTO_ORDER if mode not in first)]


def _remember_access(profile: Profile, mode: str) -> None:
    """What reached this profile's nodes, tried first next time (a 0600 file of the state dir)."""
    with contextlib.suppress(OSError, ValueError):
        path = _access_file()
        known = json.loads(path.read_text()) if path.exists() else {}
        if isinstance(known, dict) and known.get(profile.name) != mode:
            known[profile.name] = mode
            paths.private_dir(path.parent)
            temp = path.with_suffix(".tmp")
            temp.write_text(json.dumps(known))
            temp.chmod(0o600)
            temp.replace(path)


def _node_session(
    mode: str, host: SSHHost, profile: Profile, server: Server, creds: Credentials
) -> Any:
    from colabtunnel.ssh import hostkeys, nested_ssh, sshtarget

    connection = host.connection
    node = str(server.handle.get("node") or "")
    if mode == "srun":
        keys = server.handle.get("keys")
        if not keys:
            raise ColabtunnelError("this session has no keys for an sshd of its own")
        session_keys = nested_ssh.SessionKeys(
            host_private="",
            host_public=keys["host"],
            client_private=keys["client"],
            client_public="",
        )
        return nested_ssh.over_command(
            connection.transport,
            _srun_command(profile, str(server.handle["job"]), server.port),
            session_keys,
            connection.target.user,
        )
    known = hostkeys.parse(_cluster_known_hosts(host), f"the known_hosts files of {host.name}")
    # The node as ssh_config sees it, logged in to with the keys that opened the login node
    login = connection.target
    preset = [("User", login.user), *(("IdentityFile", f) for f in login.identity_files)]
    target = sshtarget.resolve_host(node, preset)
    return nested_ssh.over_channel(connection.transport, target, known, creds, profile.name)


def _srun_command(profile: Profile, job: str, port: int) -> str:
    session = _session_values(profile)
    directory = f"{session['session_root']}/{session['profile']}"
    options = " ".join(
        f"-o {option}"
        for option in (
            f'HostKey="{directory}/host_key"',
            f'AuthorizedKeysFile="{directory}/authorized_keys"',
            "StrictModes=no",
            "UsePAM=no",
            "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no",
            "AllowTcpForwarding=local",
            f"PermitOpen=127.0.0.1:{port}",
            "AllowAgentForwarding=no",
            "X11Forwarding=no",
            "PermitTTY=no",
            "PidFile=none",
            "LogLevel=ERROR",
        )
    )
    # -u: srun's stdio unbuffered, or the SSH handshake stalls (SLURM-NOTES.md)
    return (
        f"exec srun --jobid={job} --overlap -N1 -n1 -u -Q "
        f"$(command -v sshd || echo /usr/sbin/sshd) -i -f /dev/null {options}"
    )


def _cluster_known_hosts(host: Host) -> str:
    done = host.run_script(
        'cat /etc/ssh/ssh_known_hosts "$HOME/.ssh/known_hosts" 2>/dev/null; exit 0\n',
        INSPECT_TIMEOUT,
    )
    return done.stdout


def node_host(host: Host, server: Server) -> Host:
    """The job's node: scripts go through an srun step of the job."""
    job = str(server.handle.get("job"))
    enter = f"srun --jobid={remote.quote(job)} --overlap -N1 -n1 -Q bash -s"
    return InnerHost(host, server.handle.get("node") or f"the node of job {job}", enter)


def alive(opener: Opener, server: Server) -> bool | None:
    """Jupyter still accepts connections on the node (None while the link is down)."""
    return opener.reaches(server.endpoint)


def stop(host: Host, profile: Profile, handle: dict[str, Any] | None) -> bool:
    """Cancel the job, wait until Slurm has it gone, remove the session directory (the token,
    the keys). True if a job was running or queued."""
    job = str((handle or {}).get("job") or "")
    if not job:
        job = status(host, profile).job or ""
    script = remote.render(
        remote.text("slurm_session.sh")
        + remote.text("idle_line.sh")
        + remote.text("slurm_cancel.sh"),
        **_session_values(profile),
        job=remote.quote(job),
        wait_ticks=int(CANCEL_WAIT_S * 2),
        settle_ticks=int(IDLE_SETTLE_S * 2),
        scheduler_limit=CANCEL_SCHEDULER_LIMIT_S,
    )
    out = host.run_script(script, IDLE_SETTLE_S + CANCEL_WAIT_S + INSPECT_TIMEOUT).stdout
    answer = _answer(out)
    if answer.get("answered") is False:
        said = _sections(out).get("scheduler") or "no answer"
        raise ColabtunnelError(
            f"the scheduler on {host.name} did not answer ({mask(said)}): job {job} is not "
            "known to be cancelled and may still start",
            hint=f"`colabtunnel down {profile.name}` cancels it once the scheduler answers",
        )
    return bool(answer.get("was_running"))


def logs(
    host: Host, profile: Profile, lines: int, follow: bool, sink: Callable[[str], None]
) -> int:
    """The job's output and Jupyter's log, masked, line by line; 3 when there is no session."""
    script = remote.render(
        remote.text("slurm_session.sh") + remote.text("slurm_logs.sh"),
        **_session_values(profile),
        lines=lines,
        follow="-F" if follow else "",
    )
    return stream_masked(host, script, sink)


def ended(host: Host, profile: Profile, handle: dict[str, Any]) -> str | None:
    """ "idle" when the job's Jupyter ended itself for having nothing to do (idle_timeout): the
    job then ends COMPLETED and its GPUs are free. None: not known (a crash, a cancel)."""
    script = remote.render(
        remote.text("slurm_session.sh")
        + remote.text("idle_line.sh")
        + remote.text("slurm_ended.sh"),
        **_session_values(profile),
    )
    data, _ = result(host, script, INSPECT_TIMEOUT, "asking why the job's Jupyter ended")
    return "idle" if data.get("ended") == "idle" else None


def details(host: Host, profile: Profile, handle: dict[str, Any]) -> dict[str, Any] | None:
    """The job now: state, node, time used and left (a warning under 10 minutes), or why it
    ended (squeue's last word, then the job's own events)."""
    found = status(host, profile)
    job = str(handle.get("job") or found.job or "")
    if found.unreachable is not None:
        return {
            "job": job,
            "state": f"unknown (scheduler unreachable: {found.unreachable})",
            "node": handle.get("node"),
            "used": None,
            "left": None,
            "left_s": None,
            "warning": None,
            "ended": None,
        }
    state = found.state if found.job == job else None
    left_s = durations.slurm_seconds(state.left) if state else None
    ended = None
    if state is None or not state.active:
        ended = queue.ended_why(state.state if state else None, found.accounting, found.events)
    warned = any(event.name == "warn" for event in found.events)
    warning = None
    if ended is None and (warned or (left_s is not None and left_s < WARN_LEFT_S)):
        left = durations.short_duration(left_s) if left_s is not None else "little time"
        warning = (
            f"{left} left in job {job}: the kernel (its variables) ends with the job; "
            "the notebook itself stays in Colab"
        )
    return {
        "job": job,
        "state": state.state if state else None,
        "node": state.node if state else handle.get("node"),
        "used": state.used if state else None,
        "left": state.left if state else None,
        "left_s": left_s,
        "warning": warning,
        "ended": ended,
    }


def check(host: Host, profile: Profile, info: HostInfo) -> list[Finding]:
    """doctor: the Slurm commands, the partition, the request (sbatch --test-only), the session
    directory, and what `srun` access needs."""
    settings = _settings(profile)
    options = " ".join(remote.quote(o) for o in settings.sbatch_options())
    parts = _sections(_run(host, profile, "slurm_check.sh", INSPECT_TIMEOUT, options=options))
    found = []
    tools = set(parts.get("tools", "").split())
    missing = {"sbatch", "squeue", "scancel", "srun", "sinfo"} - tools
    found.append(
        Finding(
            "slurm",
            FAIL,
            f"missing on {host.name}: {', '.join(sorted(missing))}",
            "is this a Slurm login node? load Slurm in `activate` if it is a module",
        )
        if missing
        else Finding("slurm", PASS, "sbatch, squeue, scancel, srun, sinfo found")
    )
    partitions = {
        line.split()[0].rstrip("*"): line.split()[1]
        for line in parts.get("partition", "").splitlines()
        if len(line.split()) == 2
    }
    if settings.partition:
        availability = partitions.get(settings.partition)
        found.append(
            Finding("partition", PASS, f"{settings.partition} is up")
            if availability == "up"
            else Finding(
                "partition",
                FAIL,
                f"partition {settings.partition} is {availability or 'unknown here'}",
                f"partitions: {', '.join(sorted(partitions)) or 'none listed'}",
            )
        )
    test = parts.get("test-only", "")
    accepted = "to start at" in test or ("Job" in test and "error" not in test.lower())
    found.append(
        Finding("request", PASS, test.splitlines()[-1] if test else "accepted")
        if accepted
        else Finding(
            "request",
            FAIL,
            f"sbatch --test-only refuses the request: {test.splitlines()[-1] if test else '?'}",
            "fix the profile's slurm table",
        )
    )
    mode = parts.get("session-root", "")
    found.append(
        Finding("session-root", PASS, f"{settings.session_root} is writable (0{mode})")
        if mode and mode != "unwritable"
        else Finding(
            "session-root",
            FAIL,
            f"{settings.session_root} is not writable on {host.name}",
            "session_root must be a writable directory the compute nodes share",
        )
    )
    if settings.access in ("auto", "srun"):
        found.append(
            Finding("access", PASS, "sshd found for srun access")
            if parts.get("sshd")
            else Finding(
                "access",
                WARN if settings.access == "auto" else FAIL,
                "no sshd on the login node's PATH (srun access runs one in the job)",
                'use access = "node-ssh" if the nodes run sshd',
            )
        )
    return found
