"""The direct launcher: Jupyter runs on the SSH host itself, detached (setsid nohup), its PID,
port, token and log in a 0700 run directory there (remote/rundir.sh), so it survives SSH drops
and a sleeping laptop and an `up` after a lost keeper finds it again.

Start-up and the readiness/auth checks are one script and one round trip (remote/start.sh then
remote/wait.py, on the host). The token reaches Jupyter through that script on stdin as
JUPYTER_TOKEN: never a command line, never read back from Jupyter's banner.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from colabtunnel import remote
from colabtunnel.jupyter import flavours, hostconfig
from colabtunnel.jupyter.colab_calls import HOST_SIDE
from colabtunnel.jupyter.flavours import COLAB_ORIGIN, Flavour
from colabtunnel.jupyter.inspection import (
    INSPECT_TIMEOUT,
    HostInfo,
    preamble_values,
    result,
)

# The host's inspection, which every launcher offers (a re-export: Launcher.inspect)
from colabtunnel.jupyter.inspection import inspect as inspect
from colabtunnel.launchers import (
    ConnectionReach,
    Finding,
    Opener,
    Progress,
    Reach,
    Server,
    starting,
    stream_masked,
)
from colabtunnel.profiles import Profile
from colabtunnel.redact import mask
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.hosts import Host, SSHHost

log = logging.getLogger("colabtunnel")

NAME = "direct"
STOP_GRACE_S = 10


def find(host: Host, profile: Profile, info: HostInfo, progress: Progress) -> Server | None:
    """The server an earlier `up` left, if it is alive, answering and its token known. One that is
    gone or not answering is stopped (its run directory holds a token nobody can use)."""
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
    """Start Jupyter on the host, wait until it answers Colab's way (on the host), or fail."""
    return starting.start_with_retries(
        host.name,
        profile,
        info,
        flavour,
        token,
        want_port,
        progress,
        once=lambda port: _start_on(host, profile, info, flavour, token, port, timeout),
        tail=lambda: log_tail(host, profile, 15),
        stop=lambda: stop(host, profile, None),
        timeout=timeout,
    )


def _start_on(
    host: Host,
    profile: Profile,
    info: HostInfo,
    flavour: Flavour,
    token: str,
    port: int,
    timeout: float,
) -> tuple[dict[str, Any], str]:
    """One start of Jupyter on `port`: the start script and its wait, one round trip."""
    shimmed = hostconfig.shimmed(info.config, flavour)
    args = flavours.server_args(
        flavour,
        port,
        allow_root=info.uid == 0,
        shimmed=shimmed,
        extra=profile.jupyter_args,
        idle_timeout=profile.idle_timeout,
    )
    exports = [f"export {name}={remote.quote(value)}" for name, value in profile.env.items()]
    exports.append(f"export JUPYTER_TOKEN={remote.quote(token)}")
    fragments = ["rundir.sh", "preamble.sh", "jupyter_python.sh", "started.sh", "start.sh"]
    if profile.idle_timeout:
        fragments += ["idle_line.sh", "idle_watch.sh"]
    template = "".join(remote.text(name) for name in fragments)
    template += remote.heredoc("wait.py", '"$CT_PID" __CT_PORT__ __CT_TIMEOUT__ __CT_REQUESTS__')
    script = remote.render(
        template,
        exports="\n".join(exports),
        port=port,
        flavour=remote.quote(flavour.key),
        args=" ".join(remote.quote(a) for a in args),
        timeout=timeout,
        requests=remote.quote(json.dumps([r.to_json(COLAB_ORIGIN) for r in HOST_SIDE])),
        **preamble_values(profile, lock=remote.text("start_lock.sh")),
    )
    log.info("starting %s on port %d: jupyter %s", flavour.label, port, " ".join(args))
    return result(host, script, timeout + INSPECT_TIMEOUT, "starting Jupyter")


def attach(host: Host, profile: Profile, server: Server, creds: Credentials) -> Reach | None:
    """Jupyter is on the host: the login connection's own channels reach it."""
    if not isinstance(host, SSHHost):
        return None
    connection = host.connection
    return ConnectionReach(connection.transport, connection.link_rtt, owned=False)


def alive(opener: Opener, server: Server) -> bool | None:
    """Whether Jupyter still accepts connections; None when that cannot be told (link down)."""
    return opener.reaches(server.endpoint)


def stop(host: Host, profile: Profile, handle: dict[str, Any] | None) -> bool:
    """Stop the profile's server (TERM, then KILL after a grace period). True if one was running.

    The run directory says which process it is, so `handle` is not needed here."""
    script = remote.script(
        "started.sh", "stop.sh", profile=remote.quote(profile.name), grace_ticks=STOP_GRACE_S * 10
    )
    data, _ = result(host, script, STOP_GRACE_S + INSPECT_TIMEOUT, "stopping Jupyter")
    return bool(data.get("was_running"))


def ended(host: Host, profile: Profile, handle: dict[str, Any]) -> str | None:
    """Why the server is gone when its port refuses: "idle" when Jupyter ended itself for
    having nothing to do (idle_timeout), else None (a crash, a kill: not known)."""
    script = remote.script("idle_line.sh", "ended.sh", profile=remote.quote(profile.name))
    data, _ = result(host, script, INSPECT_TIMEOUT, "asking why Jupyter ended")
    return "idle" if data.get("ended") == "idle" else None


def log_tail(host: Host, profile: Profile, lines: int = 50) -> str:
    script = remote.script(
        "log_tail.sh", profile=remote.quote(profile.name), lines=lines, follow=""
    )
    return mask(host.run_script(script, INSPECT_TIMEOUT).stdout.rstrip())


def logs(
    host: Host, profile: Profile, lines: int, follow: bool, sink: Callable[[str], None]
) -> int:
    """Pass the log's last `lines` lines (and, with `follow`, new ones) to `sink`, masked, per
    line. Exit status 3: there is no log for this profile on the host."""
    script = remote.script(
        "log_tail.sh",
        profile=remote.quote(profile.name),
        lines=lines,
        follow="-F" if follow else "",
    )
    return stream_masked(host, script, sink)


def node_host(host: Host, server: Server) -> Host:
    """Jupyter runs on the host itself."""
    return host


def details(host: Host, profile: Profile, handle: dict[str, Any]) -> dict[str, Any] | None:
    """Nothing beyond the tunnel: Jupyter runs on the host for as long as nobody stops it."""
    return None


def check(host: Host, profile: Profile, info: HostInfo) -> list[Finding]:
    """doctor's findings about where this launcher would run Jupyter: the port, an earlier server."""
    found = [_port_finding(profile, info)]
    if info.existing and info.existing.alive:
        answering = info.existing.answering
        found.append(
            Finding(
                "running",
                "pass" if answering else "warn",
                f"a Jupyter from an earlier `up` runs on port {info.existing.port} "
                f"({'answering' if answering else 'NOT answering'})",
                None if answering else f"colabtunnel down {profile.name}",
            )
        )
    return found


def _port_finding(profile: Profile, info: HostInfo) -> Finding:
    if profile.remote_port is None:
        return Finding("remote-port", "pass", f"auto: port {info.free_port} is free on the host")
    if info.want_port_free is False:
        return Finding(
            "remote-port",
            "fail",
            f"remote_port {profile.remote_port} is in use",
            'set remote_port = "auto" or free the port',
        )
    return Finding("remote-port", "pass", f"remote_port {profile.remote_port} is free")
