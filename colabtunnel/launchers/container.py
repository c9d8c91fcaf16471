"""The container launcher: Jupyter inside a Docker or Podman container on the SSH host, for hosts
set up for containers (an NGC image, a team's image, Colab's own runtime image) with no Jupyter
outside them.

The host side is remote/container_*.sh. The container is found again by its label
(colabtunnel.profile=NAME). Its Jupyter is published on the host's 127.0.0.1 only. The token
sits in the profile's 0700 run directory on the host, mounted read-only into the container and
read there into Jupyter's own environment: never `-e` (the container's configuration, which
`ENGINE inspect` shows to everyone who may use the engine), never a command line. The inspection
(inspect.py) runs inside the image, so the flags are those of the flavour found there.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from colabtunnel import remote
from colabtunnel.container_settings import ContainerSettings
from colabtunnel.errors import ColabtunnelError
from colabtunnel.jupyter import diagnoses, flavours, hostconfig, inspection
from colabtunnel.jupyter.colab_calls import HOST_SIDE
from colabtunnel.jupyter.flavours import COLAB_ORIGIN, Flavour
from colabtunnel.jupyter.inspection import INSPECT_TIMEOUT, HostInfo
from colabtunnel.launchers import Finding, Opener, Progress, Server, direct, starting, stream_masked
from colabtunnel.profiles import Profile
from colabtunnel.redact import mask, register
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.hosts import Host, InnerHost

log = logging.getLogger("colabtunnel")

NAME = "container"
STOP_GRACE_S = direct.STOP_GRACE_S
PIDFILE = "/tmp/colabtunnel-jupyter.pid"  # inside the container: entry.sh writes it
ANSWER_CHECK_S = 5  # a running container's Jupyter, asked with the recorded token
FACT = "__COLABTUNNEL_FACT__"
PROGRESS_EVERY_S = 1.0
# Lines of `docker pull` / `podman pull` that say a layer is done, and how big a blob is
# Docker says "ID: Pulling fs layer" ... "ID: Pull complete"; Podman (no terminal) says
# "Copying blob ID" once per layer ("... skipped: already exists" or "... done" when it is over)
# and "Copying config" once every layer is in.
_DOCKER_LAYER = re.compile(r"^(?P<id>[0-9a-f]{12,64}): (?P<state>.+)$")
_PODMAN_LAYER = re.compile(r"^Copying blob (?:sha256:)?(?P<id>[0-9a-f]{12,64})(?P<state>.*)$")
_DONE_STATES = ("pull complete", "already exists", "done")


def settings_of(profile: Profile) -> ContainerSettings:
    if profile.container is None:  # profiles.py pairs launcher = "container" with its table
        raise ColabtunnelError(f"profile {profile.name!r} has no [profiles.NAME.container] table")
    return profile.container


def engine_kind(facts: dict[str, str]) -> str:
    """ "podman" or "docker", from `ENGINE --version` (a `docker` that is Podman says so)."""
    return "podman" if "podman" in facts.get("version", "").lower() else "docker"


def _values(profile: Profile) -> dict[str, str | int | float]:
    settings = settings_of(profile)
    return {
        "profile": remote.quote(profile.name),
        "engine": " ".join(remote.quote(word) for word in settings.engine),
    }


def run_args(settings: ContainerSettings, kind: str) -> list[str]:
    """What every `ENGINE run` of the profile takes: GPUs, mounts, environment, extra_args."""
    args = settings.gpu_args(kind)
    for mount in settings.mounts:
        args += ["-v", mount]
    for name, value in settings.env:
        args += ["-e", f"{name}={value}"]
    return [*args, *settings.extra_args]


def _words(args: list[str]) -> str:
    return " ".join(remote.quote(arg) for arg in args)


def _inside(*names: str) -> str:
    """A script for inside the container: container_inside.sh, then `names`, as sh takes it."""
    return "".join(remote.text(name) for name in ("container_inside.sh", *names))


def _run(
    host: Host, script: str, timeout: float, what: str
) -> tuple[list[Any], dict[str, str], str]:
    """Run a container script: every result line's JSON, in order, its facts, its stderr."""
    done = host.run_script(script, timeout)
    results, facts = parse(done.stdout)
    if not results:
        raise ColabtunnelError(
            f"{what} on {host.name} failed (exit {done.code}): "
            f"{inspection.tail(done.stderr or done.stdout)}",
            hint="is bash installed on the host? run with --debug for the full output",
        )
    return results, facts, done.stderr


def parse(stdout: str) -> tuple[list[Any], dict[str, str]]:
    results: list[Any] = []
    facts: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith(remote.MARKER):
            results.append(json.loads(line[len(remote.MARKER) :]))
        elif line.startswith(FACT + " ") and "=" in line:
            name, _, value = line[len(FACT) + 1 :].partition("=")
            facts[name] = value.strip()
    return results, facts


# -- what the host and the image have --------------------------------------------------------------


def inspect(
    host: Host, profile: Profile, want_port: int | None = None, progress: Progress | None = None
) -> HostInfo:
    """The engine, the image (pulled here when the profile lets it and `progress` is given: `up`
    pulls, `doctor` does not), the profile's container, and the inspection inside the image."""
    settings = settings_of(profile)
    results, facts, stderr = _inspect_once(host, profile, settings)
    missing = results[-1].get("image") == "missing"
    if missing or (settings.pull == "always" and facts.get("state") != "running" and progress):
        if settings.pull == "never" or progress is None:
            raise _image_missing(host, profile, settings)
        pull(host, profile, settings, progress)
        results, facts, stderr = _inspect_once(host, profile, settings)
        if results[-1].get("image") == "missing":
            raise _image_missing(host, profile, settings)
    data = results[0]
    if not data.get("ok"):
        raise stage_error(data.get("stage", "?"), host, profile, stderr)
    info = inspection.from_answer(data, profile, stderr)
    return replace(info, existing=_existing(facts, results[1:]), facts=facts)


def _inspect_once(
    host: Host, profile: Profile, settings: ContainerSettings
) -> tuple[list[Any], dict[str, str], str]:
    jupyter = remote.quote(settings.jupyter)
    inside = remote.render(_inside("jupyter_python.sh"), jupyter=jupyter) + remote.heredoc(
        "inspect.py", f'/nonexistent {settings.port} "$JPATH" {remote.quote(inspection.watched())}'
    )
    script = remote.render(
        _host_script("container_args.sh", "container_inspect.sh"),
        **_values(profile),
        **_args_values(profile),
        image=remote.quote(settings.image),
        cport=settings.port,
        inside=inside,
        inside_running=inside + _wait_inside(settings, ANSWER_CHECK_S, requests=[]),
    )
    return _run(host, script, INSPECT_TIMEOUT, "inspecting the host's containers")


def _host_script(*names: str) -> str:
    """A host script of this launcher: rundir.sh, started.sh, container_engine.sh, `names`."""
    return "".join(
        remote.text(name) for name in ("rundir.sh", "started.sh", "container_engine.sh", *names)
    )


def _args_values(profile: Profile) -> dict[str, str | int | float]:
    """container_args.sh's placeholders: the run arguments for each engine, the workdir."""
    settings = settings_of(profile)
    return {
        "docker_args": _words(run_args(settings, "docker")),
        "podman_args": _words(run_args(settings, "podman")),
        "workdir": remote.shell_path(profile.workdir),
    }


def _wait_inside(settings: ContainerSettings, timeout: float, requests: list[Any]) -> str:
    """wait.py inside the container: Jupyter answers Colab's way with the recorded token."""
    pidfile = PIDFILE if settings.start == "colabtunnel" else ""
    text = remote.render(remote.text("container_wait.sh"), pidfile=remote.quote(pidfile))
    return text + remote.heredoc(
        "wait.py",
        f'"$CT_PID" {settings.port} {timeout} {remote.quote(json.dumps(requests))}',
    )


def _existing(facts: dict[str, str], checks: list[Any]) -> inspection.Existing | None:
    """This profile's container, as inspection.Existing: alive when running, answering when its
    Jupyter accepted the recorded token, with the port it is published on."""
    if not facts.get("container"):
        return None
    running = facts.get("state") == "running"
    port = facts.get("host_port") or ""
    token = facts.get("token") or None
    if token:
        register(token)
    answering = bool(running and checks and checks[-1].get("ok"))
    return inspection.Existing(
        pid=int(checks[-1].get("pid") or 0) if checks else 0,
        port=int(port) if port.isdigit() else 0,
        alive=running,
        answering=answering and port.isdigit(),
        token=token,
        flavour=facts.get("flavour") or None,
    )


def _image_missing(host: Host, profile: Profile, settings: ContainerSettings) -> ColabtunnelError:
    pull_line = f"{settings.engine_line} pull {settings.image}"
    if settings.pull == "never":
        hint = f'pull it there first ({pull_line}), or set pull = "missing" in the container table'
    else:
        hint = f"`colabtunnel up {profile.name}` pulls it; or pull it there first: {pull_line}"
    return ColabtunnelError(f"image {settings.image} is not on {host.name}", hint=hint)


def stage_error(stage: str, host: Host, profile: Profile, output: str) -> ColabtunnelError:
    """A failed step of a container script, as the user's fix."""
    settings = settings_of(profile)
    engine = settings.engine_line
    table = f"[profiles.{profile.name}.container]"
    said = inspection.tail(output, 5)
    messages = {
        "engine-missing": (
            f"{settings.engine[0]!r} is not installed on {host.name}",
            f"install Docker or Podman there, or set engine in {table}",
        ),
        "engine-unusable": (
            f"{engine} does not run for this user on {host.name}: {said}",
            "for Docker: add the user to the docker group (then log in again) or set "
            'engine = "sudo docker"; for Podman: check `podman info` there (rootless needs '
            "/etc/subuid entries)",
        ),
        "container-run": (
            f"{engine} could not start a container of {settings.image}: {said}",
            _run_hint(settings, output),
        ),
        "jupyter-missing": (
            f"the image {settings.image} has no {settings.jupyter!r} on its PATH",
            f'set jupyter = "/path/to/jupyter" in {table} (where the image has it), or use '
            "an image with Jupyter and ipykernel",
        ),
        "python-missing": (
            f"no Python found for {settings.jupyter!r} in the image {settings.image}",
            f"set jupyter in {table} to the image's own jupyter",
        ),
        "workdir": (
            f"workdir {profile.workdir!r} does not exist on {host.name}",
            f"create it, or fix `workdir` in profile {profile.name!r}",
        ),
        "token-unreadable": (
            f"the container cannot read the token file colabtunnel mounts into it ({said})",
            'the image runs as a user that cannot read it: add extra_args = ["--user", "0"] '
            f"in {table}",
        ),
        "token-not-printed": (
            f"the image {settings.image} printed no URL with a token",
            f'see `colabtunnel logs {profile.name}`; for an image that does not, drop start = "image"',
        ),
        "rundir": (
            f"cannot create colabtunnel's run directory on {host.name}",
            "check that the home directory is writable and not full",
        ),
    }
    message, hint = messages.get(stage, (f"the container step failed at {stage!r}: {said}", None))
    return ColabtunnelError(message, hint=hint)


def _run_hint(settings: ContainerSettings, output: str) -> str:
    lowered = output.lower()
    if "nvidia" in lowered or "cdi" in lowered or "gpu" in lowered:
        return (
            "the host's engine cannot give the container GPUs: install the NVIDIA Container "
            'Toolkit there (Podman: `nvidia-ctk cdi generate`), or set gpus = "none"'
        )
    if "address already in use" in lowered or "port is already allocated" in lowered:
        return 'the port is taken on the host: set remote_port = "auto"'
    return "fix what the engine says; try the same `run` by hand on the host"


# -- pulling ---------------------------------------------------------------------------------------


class PullProgress:
    """The engine's pull output, line by line, as one progress line now and then."""

    def __init__(self, image: str, show: Callable[[str], None]) -> None:
        self.image, self.show = image, show
        self.seen: set[str] = set()
        self.done: set[str] = set()
        self.last_line = ""
        self.shown_at = 0.0
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self.lines = [*self.lines[-20:], text]
        self.count(text)
        now = time.monotonic()
        if now - self.shown_at >= PROGRESS_EVERY_S:
            self.shown_at = now
            self.show(self.summary(text))

    def count(self, text: str) -> None:
        """Note the layer a line is about, and whether that layer is in."""
        found = _DOCKER_LAYER.match(text) or _PODMAN_LAYER.match(text)
        if found is None:
            if text.startswith("Copying config"):
                self.done |= self.seen
            return
        layer, state = found["id"][:12], found["state"].strip().lower()
        self.seen.add(layer)
        if state.endswith(_DONE_STATES):
            self.done.add(layer)

    def summary(self, text: str) -> str:
        total = len(self.seen)
        layers = f"{len(self.done)} of {total} layers in" if total else "starting"
        return f"pulling {self.image}: {layers} ({mask(text)[:80]})"


def pull(host: Host, profile: Profile, settings: ContainerSettings, progress: Progress) -> None:
    """Pull the image on the host, showing progress. Started as something a failure (Ctrl-C)
    must clean up: the stop script stops the pull (its PID is in the run directory)."""
    progress.started()
    progress.step(f"pulling {settings.image} on {host.name} (not counted in --timeout)")
    shown = PullProgress(settings.image, progress.step)
    results: list[Any] = []
    pending = b""

    def feed(chunk: bytes) -> None:
        nonlocal pending
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace")
            if line.startswith(remote.MARKER):
                results.append(json.loads(line[len(remote.MARKER) :]))
            else:
                shown.line(line)

    script = remote.render(
        _host_script("container_pull.sh"), **_values(profile), image=remote.quote(settings.image)
    )
    host.stream_script(script, feed)
    if pending.startswith(remote.MARKER.encode()):
        results.append(json.loads(pending[len(remote.MARKER) :]))
    if not results or not results[-1].get("ok"):
        said = " / ".join(shown.lines[-3:]) or "no output"
        raise ColabtunnelError(
            f"pulling {settings.image} on {host.name} failed: {mask(said)}",
            hint="check the image name, and that the host reaches its registry "
            f"({settings.engine_line} login REGISTRY for a private one)",
        )
    progress.step(f"pulled {settings.image}")


# -- the launcher ----------------------------------------------------------------------------------


def _handle(settings: ContainerSettings, container: str) -> dict[str, Any]:
    """What the state record keeps: the container, its image, the engine to reach it with."""
    return {"container": container, "image": settings.image, "engine": list(settings.engine)}


def find(host: Host, profile: Profile, info: HostInfo, progress: Progress) -> Server | None:
    """The container an earlier `up` left, found by its label: re-attached when its Jupyter
    answers with the recorded token (same URL, kernels kept); otherwise removed."""
    handle = _handle(settings_of(profile), info.facts.get("container", ""))
    return starting.reattach(info, progress, lambda: stop(host, profile, None), handle)


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
    """Start the container, wait until its Jupyter answers Colab's way, or stop it and fail."""
    settings = settings_of(profile)
    progress.step(f"starting {flavour.label} in a container of {settings.image} on {host.name}")
    progress.started()
    own = settings.start == "colabtunnel"
    if own:
        args = flavours.server_args(
            flavour,
            settings.port,
            allow_root=info.uid == 0,
            ip="0.0.0.0",  # inside the container's own network: the host publishes 127.0.0.1 only
            shimmed=hostconfig.shimmed(info.config, flavour),
            extra=profile.jupyter_args,
            idle_timeout=profile.idle_timeout,
        )
        command = ["--entrypoint", "sh", settings.image, "/run/colabtunnel/entry.sh", *args]
        log.info("starting %s in %s: jupyter %s", flavour.label, settings.image, " ".join(args))
    else:
        command = [settings.image]
        log.info("starting %s with its own start-up", settings.image)
    entry = remote.render(
        _inside("jupyter_python.sh", "container_entry.sh"), jupyter=remote.quote(settings.jupyter)
    )
    wait = remote.render(
        _inside("jupyter_python.sh"), jupyter=remote.quote(settings.jupyter)
    ) + _wait_inside(settings, timeout, [r.to_json(COLAB_ORIGIN) for r in HOST_SIDE])
    exports = f"export JUPYTER_TOKEN={remote.quote(token)}" if own else ":"
    script = remote.render(
        _host_script("container_args.sh", "container_start.sh"),
        **_values(profile),
        **_args_values(profile),
        exports=exports,
        cport=settings.port,
        flavour=remote.quote(flavour.key),
        entry=entry,
        host_port=want_port or "",
        command=_words(command),
        token_from="given" if own else "log",
        timeout_ticks=int(timeout * 2),
        wait=wait,
    )
    results, facts, stderr = _run(host, script, timeout + INSPECT_TIMEOUT, "starting the container")
    data = results[-1]
    if data.get("ok") and facts.get("host_port", "").isdigit():
        token = facts.get("token") or token
        register(token)
        return Server(
            endpoint=("127.0.0.1", int(facts["host_port"])),
            token=token,
            flavour=flavour.key,
            handle=_handle(settings, facts.get("container", "")),
            reattached=False,
            ready_s=data.get("ready_s"),
            colab_answers=data.get("colab"),
        )
    tail = log_tail(host, profile, 15)
    stop(host, profile, None)
    stage = data.get("stage", "?")
    if stage in diagnoses.STAGES:
        raise diagnoses.start_error(
            diagnoses.Failed(data, profile, flavour, settings.port, timeout, tail)
        )
    raise stage_error(stage, host, profile, stderr)


def attach(host: Host, profile: Profile, server: Server, creds: Credentials) -> Any:
    """The published port is on the host's loopback: the login connection's channels reach it."""
    return direct.attach(host, profile, server, creds)


def alive(opener: Opener, server: Server) -> bool | None:
    return opener.reaches(server.endpoint)


def stop(host: Host, profile: Profile, handle: dict[str, Any] | None) -> bool:
    """Stop a pull under way and the profile's container (stop, then remove), and delete the
    run directory (the token). True if a container was running."""
    script = remote.render(
        _host_script("container_stop.sh"),
        **_values(profile),
        grace=STOP_GRACE_S,
    )
    results, _, _ = _run(host, script, 3 * STOP_GRACE_S + INSPECT_TIMEOUT, "stopping the container")
    return bool(results[-1].get("was_running"))


def ended(host: Host, profile: Profile, handle: dict[str, Any]) -> str | None:
    """ "idle" when the container's Jupyter ended itself for having nothing to do, else None."""
    script = remote.render(
        _host_script("idle_line.sh", "container_ended.sh"),
        **_values(profile),
    )
    results, _, _ = _run(host, script, INSPECT_TIMEOUT, "asking why the container ended")
    return "idle" if results[-1].get("ended") == "idle" else None


def _logs_script(profile: Profile, lines: int, follow: bool) -> str:
    return remote.render(
        _host_script("container_logs.sh"),
        **_values(profile),
        lines=lines,
        follow="-f" if follow else "",
    )


def log_tail(host: Host, profile: Profile, lines: int = 50) -> str:
    return mask(
        host.run_script(_logs_script(profile, lines, False), INSPECT_TIMEOUT).stdout.rstrip()
    )


def logs(
    host: Host, profile: Profile, lines: int, follow: bool, sink: Callable[[str], None]
) -> int:
    """`ENGINE logs` of the profile's container, masked, line by line; 3 when there is none."""
    return stream_masked(host, _logs_script(profile, lines, follow), sink)


def node_host(host: Host, server: Server) -> Host:
    """Where Jupyter runs: inside the container (the GPUs' use for `status` is the container's)."""
    engine = " ".join(remote.quote(word) for word in server.handle.get("engine") or ("docker",))
    container = str(server.handle.get("container") or "")
    enter = f"{engine} exec -i {remote.quote(container)} sh -s"
    return InnerHost(host, f"container {container[:12]}", enter)


def details(host: Host, profile: Profile, handle: dict[str, Any]) -> dict[str, Any] | None:
    """What `status` shows: the container's short ID, its image, how long it has run."""
    script = remote.render(_host_script("container_details.sh"), **_values(profile))
    _, facts, _ = _run(host, script, INSPECT_TIMEOUT, "asking about the container")
    started, now = facts.get("started", ""), facts.get("now", "")
    up_s = int(now) - int(started) if started.isdigit() and now.isdigit() else None
    return {
        "container": facts.get("container", "")[:12],
        "image": settings_of(profile).image,
        "state": facts.get("state") or "gone",
        "up_s": up_s,
    }


def check(host: Host, profile: Profile, info: HostInfo) -> list[Finding]:
    """doctor's findings: the engine and whether it runs for this user, which GPU flags it takes,
    the image and its size, a port published on 127.0.0.1 by the inspection's own container."""
    settings = settings_of(profile)
    kind = engine_kind(info.facts)
    size = info.facts.get("image_size", "")
    gpu_flags = " ".join(settings.gpu_args(kind)) or 'none (gpus = "none")'
    found = [
        Finding("engine", "pass", f"{info.facts.get('version') or kind} runs for this user"),
        Finding(
            "image",
            "pass",
            f"{settings.image} is on the host"
            + (f" ({int(size) / 1e9:.1f} GB)" if size.isdigit() else ""),
        ),
        Finding(
            "container-gpus",
            "pass",
            f"{kind} GPU flags: {gpu_flags}; a container started with them",
        ),
        Finding(
            "publish",
            "pass",
            f"a container published container port {settings.port} on the host's 127.0.0.1",
        ),
    ]
    if info.existing and info.existing.alive:
        answering = info.existing.answering
        found.append(
            Finding(
                "running",
                "pass" if answering else "warn",
                f"the container of an earlier `up` runs ({info.facts.get('container', '')[:12]}, "
                f"{'answering' if answering else 'NOT answering'})",
                None if answering else f"colabtunnel down {profile.name}",
            )
        )
    return found
