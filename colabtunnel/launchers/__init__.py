"""Where Jupyter runs: a family of interchangeable launchers behind one small protocol (SPEC §8).

Every launcher starts from the host inspection (inspection.py) and answers with a Server: where
Jupyter listens as the far end of the tunnel sees it (`endpoint`, host and port) and what finds
it again (`handle`, kept in the state record: a PID, or a job id and node). The tunnel, the
keeper, `down`, `logs` and `doctor` ask the launcher a record or profile names, and never branch
on which one it is: a new launcher is one module and one line in LAUNCHERS.

- direct: Jupyter on the SSH host itself (setsid nohup), the original behaviour.
- slurm: Jupyter inside a Slurm job on a compute node, reached through the login node.
- local: Jupyter on this machine for a `local` profile, with no shell (no bash needed).
- container: Jupyter inside a Docker or Podman container on the SSH host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from colabtunnel.errors import ConfigError
from colabtunnel.findings import Finding
from colabtunnel.jupyter.gpus import GpuReport

if TYPE_CHECKING:
    from colabtunnel.jupyter.flavours import Flavour
    from colabtunnel.jupyter.inspection import HostInfo
    from colabtunnel.profiles import Profile
    from colabtunnel.ssh.credentials import Credentials
    from colabtunnel.ssh.hosts import Host

__all__ = [
    "ConnectionReach",
    "Finding",
    "Launcher",
    "Opener",
    "Progress",
    "Reach",
    "Server",
    "get",
]


@dataclass(frozen=True)
class Server:
    """A Jupyter a launcher started or found."""

    endpoint: tuple[str, int]  # where the tunnel's far end connects
    token: str
    flavour: str
    handle: dict[str, Any] = field(default_factory=dict)  # the launcher's own: pid, job, node
    reattached: bool = False
    ready_s: float | None = None
    # The GPUs where Jupyter runs, when that is not the inspected host (a job's compute node)
    gpus: GpuReport | None = None
    # The Colab probe's HTTP requests as the host answered them, beside Jupyter
    # (colab_calls.HOST_SIDE, by key); None: the probe makes them all through the tunnel
    colab_answers: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return self.endpoint[1]


class Progress(Protocol):
    """What a launcher tells the person waiting (tunnel.Reporter), and that it started something."""

    def step(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...

    def started(self) -> None:
        """Something is being started that a failure must clean up (and Jupyter is on its way)."""

    def submitted(self, handle: dict[str, Any], token: str, flavour: str) -> None:
        """A server is on its way and `handle` finds it (a queued job): record it now, so that
        `down` can stop it even if `up` dies while it waits."""


class Opener(Protocol):
    """How the tunnel reaches an endpoint: a channel per connection, and a yes/no probe."""

    def reaches(self, endpoint: tuple[str, int]) -> bool | None: ...


class Reach(Protocol):
    """The SSH session whose channels reach the server's endpoint: the login connection itself
    for a Jupyter on the host, a session on a compute node for one inside a Slurm job."""

    def open(self, endpoint: tuple[str, int], origin: tuple[str, int]) -> Any:
        """A channel (a TunedChannel) to `endpoint`."""

    def reaches(self, endpoint: tuple[str, int]) -> bool | None:
        """Does `endpoint` accept a connection? None: cannot be told (the session is down)."""

    def close(self) -> None: ...


class ConnectionReach:
    """Channels of one SSH session to endpoints as its far end sees them."""

    def __init__(self, transport: Any, link_rtt: Callable[[], float], owned: bool) -> None:
        self.transport = transport
        self.link_rtt = link_rtt
        self.owned = owned  # a session of its own (a node's): closed with this reach

    def open(self, endpoint: tuple[str, int], origin: tuple[str, int]) -> Any:
        from colabtunnel.ssh.connection import CONNECT_TIMEOUT
        from colabtunnel.ssh.window import TunedChannel

        channel = self.transport.open_channel(
            "direct-tcpip", endpoint, origin, timeout=CONNECT_TIMEOUT
        )
        return TunedChannel(channel, self.link_rtt)

    def reaches(self, endpoint: tuple[str, int]) -> bool | None:
        import paramiko

        if self.owned and not self.transport.is_active():
            # a node session of its own ended while the login connection lives: what it ran in
            # (a job step, the job) is gone; a new `up` finds out whether the job still runs
            return False
        try:
            self.open(endpoint, ("127.0.0.1", 0)).close()
        except paramiko.ChannelException:
            return False  # the far end refused the connection to Jupyter's port
        except (paramiko.SSHException, EOFError, OSError):
            return None
        return True

    def close(self) -> None:
        if self.owned:
            self.transport.close()


class Launcher(Protocol):
    """A launcher module's functions (launchers/direct.py is the reference)."""

    NAME: str

    def inspect(
        self,
        host: Host,
        profile: Profile,
        want_port: int | None = None,
        progress: Progress | None = None,
    ) -> HostInfo:
        """What the host has (inspection.py's answer); where Jupyter would run is the rest.
        With `progress` (`up`, not `doctor`) it may also fetch what is missing (an image)."""

    def find(
        self, host: Host, profile: Profile, info: HostInfo, progress: Progress
    ) -> Server | None:
        """The server an earlier `up` left, to re-attach to (same token, same URL), or None."""

    def start(
        self,
        host: Host,
        profile: Profile,
        info: HostInfo,
        flavour: Flavour,
        token: str,
        want_port: int | None,
        timeout: float,
        progress: Progress,
    ) -> Server:
        """Start Jupyter with the Colab flags and `token`; return once it answers, or raise."""

    def alive(self, opener: Opener, server: Server) -> bool | None:
        """Is it still there? None when that cannot be told now (the link is down)."""

    def stop(self, host: Host, profile: Profile, handle: dict[str, Any] | None) -> bool:
        """Stop it and remove what holds its token; True if something was running."""

    def ended(self, host: Host, profile: Profile, handle: dict[str, Any]) -> str | None:
        """Why it is gone, once it is: "idle" (it ended itself: idle_timeout), else None."""

    def logs(
        self, host: Host, profile: Profile, lines: int, follow: bool, sink: Callable[[str], None]
    ) -> int:
        """Jupyter's log, masked, line by line; 3 when there is none."""

    def attach(
        self, host: Host, profile: Profile, server: Server, creds: Credentials
    ) -> Reach | None:
        """The session whose channels reach `server` (None on this machine: a plain socket).
        Called again after every reconnect of the login connection."""

    def check(self, host: Host, profile: Profile, info: HostInfo) -> list[Finding]:
        """doctor's findings about this launcher's pre-conditions."""

    def node_host(self, host: Host, server: Server) -> Host:
        """Where Jupyter runs, to run a command there (the GPUs' use now for `status`)."""

    def details(
        self, host: Host, profile: Profile, handle: dict[str, Any]
    ) -> dict[str, Any] | None:
        """What `status` shows beyond the tunnel (a job: state, node, time left, why it ended)."""


def stream_masked(host: Host, script: str, sink: Callable[[str], None]) -> int:
    """Run a log-tailing script on `host`, passing its output to `sink` line by line, masked."""
    from colabtunnel.redact import mask

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


def _load() -> dict[str, ModuleType]:
    from colabtunnel.launchers import container, direct, local, slurm

    return {direct.NAME: direct, slurm.NAME: slurm, local.NAME: local, container.NAME: container}


def for_profile(profile: Profile) -> Launcher:
    """The launcher a profile asks for. `local` without `activate` (a shell line) needs no
    shell: the local launcher, in Python."""
    if profile.is_local and profile.launcher == "direct" and not profile.activate:
        return get("local")
    return get(profile.launcher)


class _Started(Protocol):
    """A state record, as far as choosing its launcher goes (keeper/state.py's Record)."""

    @property
    def launcher(self) -> str: ...


def for_record(record: _Started | None, profile: Profile) -> Launcher:
    """The launcher that started a tunnel: the record's (a choice made at `up` wins later), else
    the profile's."""
    return get(record.launcher) if record is not None else for_profile(profile)


def get(name: str) -> Launcher:
    """The launcher called `name` (from a profile or a state record)."""
    modules = _load()
    if name not in modules:
        raise ConfigError(
            f"unknown launcher {name!r}", hint=f"use one of: {', '.join(sorted(modules))}"
        )
    module: Launcher = modules[name]  # a module satisfies the protocol
    return module
