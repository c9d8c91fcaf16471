"""The Jupyter server on the host: inspect, start (or re-attach to), prove ready and locked, stop.

Each operation is one script and one round trip. The token reaches Jupyter through the script on
stdin as JUPYTER_TOKEN; it is never on a command line and never read back from Jupyter's banner.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from colabtunnel import diagnoses, flavours, hostconfig, remote_scripts
from colabtunnel.errors import ColabtunnelError
from colabtunnel.flavours import Flavour
from colabtunnel.gpus import GpuReport
from colabtunnel.hosts import Host
from colabtunnel.profiles import Profile
from colabtunnel.redact import mask, register
from colabtunnel.remote_scripts import quote, render

log = logging.getLogger("colabtunnel")

INSPECT_TIMEOUT = 60.0
STOP_GRACE_S = 10
LOCAL_INSTALL_HINT = (
    "install a Colab runtime beside colabtunnel: pip install 'colabtunnel-ssh[local]' "
    "(from a clone: pip install '.[local]'; with pipx: pipx inject colabtunnel-ssh notebook "
    "ipykernel)"
)


@dataclass(frozen=True)
class Existing:
    pid: int
    port: int
    alive: bool
    answering: bool = False
    token: str | None = None
    flavour: str | None = None


@dataclass(frozen=True)
class HostInfo:
    python: str
    python_path: str
    versions: dict[str, str | None]
    uid: int
    user: str | None
    run_dir: str
    free_port: int
    want_port_free: bool | None
    existing: Existing | None
    gpus: GpuReport
    config: list[hostconfig.Setting]  # watched settings in the host's Jupyter config files
    config_dirs: list[str]  # where they were looked for
    config_problem: str | None = None  # why that list may be incomplete


@dataclass(frozen=True)
class RemoteServer:
    port: int
    token: str
    flavour: str
    reattached: bool
    ready_s: float | None = None


def install_hint(profile: Profile) -> str:
    """What to install when Jupyter is missing or unusable: beside colabtunnel, or on the host."""
    return LOCAL_INSTALL_HINT if profile.is_local else flavours.INSTALL_HINT


def _placeholders(profile: Profile) -> dict[str, str]:
    return {
        "profile": quote(profile.name),
        "activate": profile.activate or ":",
        "workdir": _shell_path(profile.workdir),
        "jupyter": quote(profile.jupyter),
        "lock": "",
    }


def _shell_path(path: str | None) -> str:
    """Quote a host path but keep `~` meaning the host user's home, as a user would expect."""
    if not path or path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + quote(path[2:])
    return quote(path)


def _result(host: Host, script: str, timeout: float, what: str) -> tuple[dict[str, Any], str]:
    done = host.run_script(script, timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(remote_scripts.MARKER):
            return json.loads(line[len(remote_scripts.MARKER) :]), done.stderr
    raise ColabtunnelError(
        f"{what} on {host.name} failed (exit {done.code}): {_tail(done.stderr or done.stdout)}",
        hint="is bash installed on the host? run with --debug for the full output",
    )


def _tail(text: str, lines: int = 12) -> str:
    return mask("\n".join(text.strip().splitlines()[-lines:]))


def _stage_error(stage: str, profile: Profile, output: str) -> ColabtunnelError:
    """Turn a failed preamble stage into the user's fix."""
    where = f"on {profile.host}" if not profile.is_local else "on this machine"
    messages = {
        "rundir": (
            f"cannot create colabtunnel's run directory {where}",
            "check that the home directory is writable and not full",
        ),
        "activate": (
            f"the profile's `activate` line failed {where}:\n{_tail(output)}",
            f"fix `activate` in profile {profile.name!r}; try it in an ssh session first",
        ),
        "workdir": (
            f"workdir {profile.workdir!r} does not exist {where}",
            f"create it, or fix `workdir` in profile {profile.name!r}",
        ),
        "jupyter-missing": (
            f"{profile.jupyter!r} was not found {where} (after `activate`)",
            LOCAL_INSTALL_HINT
            if profile.is_local
            else flavours.INSTALL_HINT + ", or set `jupyter`/`activate` in the profile",
        ),
        "python-missing": (
            f"no Python found for {profile.jupyter!r} {where}",
            "install Python 3 and Jupyter on the host",
        ),
    }
    message, hint = messages.get(stage, (f"host preparation failed at {stage!r}", None))
    return ColabtunnelError(message, hint=hint)


def inspect(host: Host, profile: Profile, want_port: int | None = None) -> HostInfo:
    watch = {"sections": hostconfig.WATCHED_SECTIONS, "traits": hostconfig.WATCHED_TRAITS}
    script = render(
        remote_scripts.INSPECT,
        want_port=want_port or 0,
        watch=quote(json.dumps(watch)),
        **_placeholders(profile),
    )
    data, stderr = _result(host, script, INSPECT_TIMEOUT, "inspecting the host")
    if not data.get("ok"):
        raise _stage_error(data.get("stage", "?"), profile, stderr)
    existing = data.get("existing")
    if existing and existing.get("token"):
        register(existing["token"])
    return HostInfo(
        python=data["python"],
        python_path=data.get("python_path") or "python3",
        versions=data["versions"],
        uid=data["uid"],
        user=data.get("user"),
        run_dir=data["run_dir"],
        free_port=data["free_port"],
        want_port_free=data.get("want_port_free"),
        existing=Existing(**existing) if existing else None,
        gpus=GpuReport.from_json(data.get("gpus")),
        config=hostconfig.parse(data["config"]["settings"]),
        config_dirs=data["config"]["dirs"],
        config_problem=data["config"]["problem"],
    )


def config_notes(info: HostInfo, flavour: Flavour | None) -> list[str]:
    """What to tell the user about the host's Jupyter config: each setting overridden, and a
    scan that could not list every config directory."""
    notes = [
        hostconfig.override_note(s, flavour) for s in hostconfig.overridden(info.config, flavour)
    ]
    if info.config_problem:
        notes.append(info.config_problem)
    return notes


def reusable(info: HostInfo) -> RemoteServer | None:
    """The server a previous `up` left running, if it is alive, answering and its token known."""
    found = info.existing
    if not (found and found.alive and found.answering and found.token):
        return None
    return RemoteServer(found.port, found.token, found.flavour or "?", reattached=True)


def start(
    host: Host,
    profile: Profile,
    info: HostInfo,
    flavour: Flavour,
    port: int,
    token: str,
    timeout: float,
) -> RemoteServer:
    shimmed = hostconfig.shimmed(info.config, flavour)
    args = flavours.server_args(
        flavour, port, allow_root=info.uid == 0, shimmed=shimmed, extra=profile.jupyter_args
    )
    exports = [f"export {name}={quote(value)}" for name, value in profile.env.items()]
    exports.append(f"export JUPYTER_TOKEN={quote(token)}")
    script = render(
        remote_scripts.START,
        exports="\n".join(exports),
        port=port,
        flavour=quote(flavour.key),
        args=" ".join(quote(a) for a in args),
        timeout=timeout,
        **{**_placeholders(profile), "lock": remote_scripts.START_LOCK},
    )
    log.info("starting %s on port %d: jupyter %s", flavour.label, port, " ".join(args))
    data, stderr = _result(host, script, timeout + INSPECT_TIMEOUT, "starting Jupyter")
    if data.get("ok"):
        return RemoteServer(port, token, flavour.key, reattached=False, ready_s=data.get("ready_s"))
    tail = log_tail(host, profile, 15)
    stop(host, profile)
    if data.get("stage") in diagnoses.STAGES:
        raise diagnoses.start_error(diagnoses.Failed(data, profile, flavour, port, timeout, tail))
    raise _stage_error(data.get("stage", "?"), profile, stderr)


def stop(host: Host, profile: Profile) -> bool:
    """Stop the profile's server (TERM, then KILL after a grace period). True if one was running."""
    script = render(remote_scripts.STOP, profile=quote(profile.name), grace_ticks=STOP_GRACE_S * 10)
    data, _ = _result(host, script, STOP_GRACE_S + INSPECT_TIMEOUT, "stopping Jupyter")
    return bool(data.get("was_running"))


def log_tail(host: Host, profile: Profile, lines: int = 50) -> str:
    script = render(remote_scripts.LOG_TAIL, profile=quote(profile.name), lines=lines, follow="")
    return mask(host.run_script(script, INSPECT_TIMEOUT).stdout.rstrip())


def stream_log(
    host: Host, profile: Profile, lines: int, follow: bool, sink: Callable[[str], None]
) -> int:
    """Pass the log's last `lines` lines (and, with `follow`, new ones) to `sink`, masked, per line."""
    script = render(
        remote_scripts.LOG_TAIL,
        profile=quote(profile.name),
        lines=lines,
        follow="-F" if follow else "",
    )
    pending = b""

    def feed(chunk: bytes) -> None:
        nonlocal pending
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            sink(mask(line.decode(errors="replace")))

    code = host.stream_script(script, feed)
    if pending:
        sink(mask(pending.decode(errors="replace")))
    return code
