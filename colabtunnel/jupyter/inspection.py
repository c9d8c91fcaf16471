"""What the host has, in one round trip: Python, Jupyter's flavours, ipykernel, GPUs, the settings
of its Jupyter config that colabtunnel watches, a free port, and a server an earlier `up` left.

Runs remote/preamble.sh (the profile's `activate` and `workdir`, then the Python behind `jupyter`)
and remote/inspect.py. Every launcher starts from this answer: where Jupyter runs is theirs to say.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from colabtunnel import remote
from colabtunnel.errors import ColabtunnelError
from colabtunnel.jupyter import flavours, hostconfig
from colabtunnel.jupyter.flavours import Flavour
from colabtunnel.jupyter.gpus import GpuReport
from colabtunnel.profiles import Profile
from colabtunnel.redact import mask, register
from colabtunnel.ssh.hosts import Host

log = logging.getLogger("colabtunnel")

INSPECT_TIMEOUT = 60.0
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
    jupyter_path: str  # the `jupyter` the profile names, found after `activate`
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
    # What the launcher found beside Jupyter, by name (a container's engine, image, state)
    facts: dict[str, str] = field(default_factory=dict)


def install_hint(profile: Profile) -> str:
    """What to install when Jupyter is missing or unusable: beside colabtunnel, or on the host."""
    return LOCAL_INSTALL_HINT if profile.is_local else flavours.INSTALL_HINT


def preamble_values(profile: Profile, lock: str = ":") -> dict[str, str]:
    """The placeholders of rundir.sh and preamble.sh for `profile` (`lock`: start_lock.sh)."""
    return {
        "profile": remote.quote(profile.name),
        "activate": profile.activate or ":",
        "workdir": remote.shell_path(profile.workdir),
        "jupyter": remote.quote(profile.jupyter),
        "lock": lock,
    }


def result(host: Host, script: str, timeout: float, what: str) -> tuple[dict[str, Any], str]:
    done = host.run_script(script, timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(remote.MARKER):
            return json.loads(line[len(remote.MARKER) :]), done.stderr
    raise ColabtunnelError(
        f"{what} on {host.name} failed (exit {done.code}): {tail(done.stderr or done.stdout)}",
        hint="is bash installed on the host? run with --debug for the full output",
    )


def tail(text: str, lines: int = 12) -> str:
    return mask("\n".join(text.strip().splitlines()[-lines:]))


def stage_error(stage: str, profile: Profile, output: str) -> ColabtunnelError:
    """Turn a failed preamble stage into the user's fix."""
    where = f"on {profile.host}" if not profile.is_local else "on this machine"
    messages = {
        "rundir": (
            f"cannot create colabtunnel's run directory {where}",
            "check that the home directory is writable and not full",
        ),
        "activate": (
            f"the profile's `activate` line failed {where}:\n{tail(output)}",
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


def inspect(
    host: Host, profile: Profile, want_port: int | None = None, progress: object = None
) -> HostInfo:
    """Everything `up` and `doctor` need to know about the host, in one round trip (nothing to
    fetch: `progress` is not used)."""
    template = "".join(remote.text(n) for n in ("rundir.sh", "preamble.sh", "jupyter_python.sh"))
    template += remote.heredoc("inspect.py", '"$RUN_DIR" __CT_WANT_PORT__ "$JPATH" __CT_WATCH__')
    script = remote.render(
        template,
        want_port=want_port or 0,
        watch=remote.quote(watched()),
        **preamble_values(profile),
    )
    data, stderr = result(host, script, INSPECT_TIMEOUT, "inspecting the host")
    return from_answer(data, profile, stderr)


def watched() -> str:
    """inspect.py's WATCH argument: the Jupyter config settings colabtunnel looks for."""
    return json.dumps(
        {"sections": hostconfig.WATCHED_SECTIONS, "traits": hostconfig.WATCHED_TRAITS}
    )


def from_answer(data: dict[str, Any], profile: Profile, stderr: str) -> HostInfo:
    """inspect.py's answer (or a failed stage before it), as HostInfo."""
    if not data.get("ok"):
        raise stage_error(data.get("stage", "?"), profile, stderr)
    existing = data.get("existing")
    if existing and existing.get("token"):
        register(existing["token"])
    return HostInfo(
        python=data["python"],
        python_path=data.get("python_path") or "python3",
        jupyter_path=data.get("jupyter_path") or profile.jupyter,
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
