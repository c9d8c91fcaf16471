"""What the launchers that run Jupyter as a process of their own (direct, local, container) do
the same way: re-attach to the server an earlier `up` left, and start one on a port, trying the
next ports when an automatic one was taken before Jupyter bound it. How one start is made, and
how a server is stopped, is each launcher's own and comes in as a function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from colabtunnel.errors import ColabtunnelError
from colabtunnel.jupyter import diagnoses
from colabtunnel.jupyter.flavours import Flavour
from colabtunnel.jupyter.inspection import HostInfo, stage_error
from colabtunnel.launchers import Progress, Server
from colabtunnel.profiles import Profile

log = logging.getLogger("colabtunnel")

# An automatic port found free can be taken before Jupyter binds it (another `up` starting at the
# same moment picks the same one): then the next ports are tried, as Jupyter itself would.
AUTO_PORT_TRIES = 3

# One start on a port: the host's answer (wait.py's JSON) and what it said on stderr
StartOnce = Callable[[int], tuple[dict[str, Any], str]]


def reattach(
    info: HostInfo, progress: Progress, stop: Callable[[], object], handle: dict[str, Any]
) -> Server | None:
    """The server an earlier `up` left, if it is alive, answering and its token known. One that is
    gone or not answering is stopped (what it left holds a token nobody can use)."""
    found = info.existing
    if found and found.alive and found.answering and found.token:
        return Server(
            endpoint=("127.0.0.1", found.port),
            token=found.token,
            flavour=found.flavour or "?",
            handle=handle,
            reattached=True,
        )
    if found is not None:
        stop()
        progress.note(
            "the previous Jupyter for this profile was gone or not answering: "
            "starting a new one; the URL (token) changes and its kernels are lost"
        )
    return None


def start_with_retries(
    where: str,
    profile: Profile,
    info: HostInfo,
    flavour: Flavour,
    token: str,
    want_port: int | None,
    progress: Progress,
    once: StartOnce,
    tail: Callable[[], str],
    stop: Callable[[], object],
    timeout: float,
) -> Server:
    """Start Jupyter on the port to start on (retrying an automatic one that was taken), wait
    until it answers Colab's way, or stop what was started and fail with the diagnosis."""
    port = port_to_start(profile, info, want_port)
    tries = 1 if pinned(profile) is not None else AUTO_PORT_TRIES
    for attempt in range(1, tries + 1):
        progress.step(f"starting {flavour.label} on {where}, port {port}")
        progress.started()
        data, stderr = once(port)
        if data.get("ok"):
            return Server(
                endpoint=("127.0.0.1", port),
                token=token,
                flavour=flavour.key,
                handle={"pid": data.get("pid")},
                reattached=False,
                ready_s=data.get("ready_s"),
                colab_answers=data.get("colab"),
            )
        said = tail()
        stop()
        if attempt < tries and data.get("stage") == "exited" and diagnoses.port_taken(said):
            log.info("port %d was taken before Jupyter bound it; trying %d", port, port + 1)
            port += 1
            continue
        if data.get("stage") in diagnoses.STAGES:
            raise diagnoses.start_error(
                diagnoses.Failed(data, profile, flavour, port, timeout, said)
            )
        raise stage_error(data.get("stage", "?"), profile, stderr)
    raise AssertionError("unreachable: the last attempt returns or raises")


def pinned(profile: Profile) -> int | None:
    """The port the profile (or a --local-port/--remote-port) fixes for Jupyter; None = auto."""
    return profile.local_port if profile.is_local else profile.remote_port


def port_to_start(profile: Profile, info: HostInfo, want: int | None) -> int:
    """The port to start on: the one asked for when it is free, else the one the host found."""
    if want is None or info.want_port_free is not False:
        return want or info.free_port
    fixed = pinned(profile)
    if fixed is None:  # an automatic choice was taken meanwhile: take the host's free one
        return info.free_port
    from colabtunnel.ssh import forwarder

    where = "this machine" if profile.is_local else profile.host
    key = "local_port" if profile.is_local else "remote_port"
    holder = forwarder.port_holder(fixed) if profile.is_local else None
    raise ColabtunnelError(
        f"port {fixed} is already in use on {where}" + (f" by {holder}" if holder else ""),
        hint=f'set {key} = "auto" in the profile (or drop --{key.replace("_", "-")}), '
        "or free the port",
    )
