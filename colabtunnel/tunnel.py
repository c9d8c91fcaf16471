"""One profile's tunnel from start to finish: connect, ready Jupyter, forward, prove it, tear down.

Used in-process by `up --foreground` and inside the background keeper; the caller decides where
progress goes (a Reporter) and how long it lives.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from colabtunnel import forwarder, hostconfig, jupyter, redact, state
from colabtunnel.connection import Connection
from colabtunnel.credentials import Credentials
from colabtunnel.errors import ColabtunnelError
from colabtunnel.flavours import COLAB_ORIGIN, choose
from colabtunnel.hosts import Host, LocalHost, SSHHost
from colabtunnel.profiles import Profile
from colabtunnel.supervisor import Health, Supervisor

if TYPE_CHECKING:
    from colabtunnel.sshtarget import SSHTarget

log = logging.getLogger("colabtunnel")

CONNECTION_WAIT_S = 20.0


class Reporter(Protocol):
    def step(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...


@dataclass(frozen=True)
class UpOptions:
    accept_new: bool = False
    timeout: float = 120.0
    probe: bool = True
    prefer_local_port: int | None = None  # the port a previous keeper used, so the URL survives


@dataclass(frozen=True)
class Opened:
    local_port: int
    remote_port: int
    token: str
    flavour: str
    host: str
    reattached: bool


def local_jupyter(profile: Profile) -> Profile:
    """For `local`, prefer the jupyter installed beside this Python (the venv colabtunnel runs in)."""
    from dataclasses import replace

    if profile.jupyter != "jupyter":
        return profile
    candidate = Path(sys.executable).with_name("jupyter")
    return replace(profile, jupyter=str(candidate)) if candidate.exists() else profile


class Tunnel:
    def __init__(
        self,
        profile: Profile,
        options: UpOptions,
        reporter: Reporter,
        creds: Credentials | None = None,
    ) -> None:
        self.profile = local_jupyter(profile) if profile.is_local else profile
        self.options = options
        self.reporter = reporter
        # Secrets that worked stay here (memory only) so a reconnect needs no terminal.
        self.creds = creds or Credentials(profile.name)
        self.connection: Connection | None = None
        self.host: Host | None = None
        self.forwarder: forwarder.Forwarder | None = None
        self.opened: Opened | None = None
        self.host_info: jupyter.HostInfo | None = None  # the inspection's answer: GPUs, Python
        self._connected = threading.Event()
        self._started_remote = False
        self._target_label = "local"

    # -- start ---------------------------------------------------------------------------------

    def open(self) -> Opened:
        listener = None if self.profile.is_local else self._bind_local()
        try:
            self.host = self.connect_host()
            server = self._ensure_server()
            if listener is not None:
                self.forwarder = forwarder.Forwarder(listener, self._open_channel).start()
                listener = None
                local_port = self.forwarder.port
            else:
                local_port = server.port
            self.opened = Opened(
                local_port,
                server.port,
                server.token,
                server.flavour,
                self._target_label,
                server.reattached,
            )
            if self.options.probe:
                self._probe(local_port, server.token)
            return self.opened
        finally:
            if listener is not None:
                listener.close()

    def _bind_local(self) -> socket.socket:
        pinned = self.profile.local_port
        port = pinned or self.options.prefer_local_port
        if port is not None:
            try:
                return forwarder.bind_listener(port)
            except forwarder.PortBusy as busy:
                if pinned:
                    by = f" by {busy.holder}" if busy.holder else ""
                    raise ColabtunnelError(
                        f"local port {pinned} is already in use on this machine{by}",
                        hint='stop what holds it, pass --local-port N, or set local_port = "auto"',
                    ) from None
                self.reporter.note(f"port {port} is taken now; the URL gets a new port")
        return forwarder.bind_listener(forwarder.pick_local_port(None))

    def connect_host(self) -> Host:
        if self.profile.is_local:
            return LocalHost()
        from colabtunnel import sshtarget

        target = sshtarget.resolve(self.profile)
        hops = sshtarget.route(target)
        self._target_label = target.label
        via = f" ({sshtarget.describe(hops)})" if len(hops) > 1 or target.proxy_command else ""
        self.reporter.step(f"connecting to {self._target_label}{via}")
        if any(hop.strict_host_key_checking == "false" for hop in hops):
            self.reporter.note(
                "StrictHostKeyChecking=no (ssh_config) is not honoured: "
                "colabtunnel always verifies host keys"
            )
        return self._login(target, accept_new=self.options.accept_new, hops=hops)

    def _login(
        self, target: SSHTarget, accept_new: bool, hops: list[SSHTarget] | None = None
    ) -> Host:
        from colabtunnel import connection

        self.connection = connection.connect(
            target, self.profile.name, accept_new=accept_new, creds=self.creds, hops=hops
        )
        self._connected.set()
        return SSHHost(self.connection, self.profile.host)

    def _ensure_server(self) -> jupyter.RemoteServer:
        assert self.host is not None
        profile = self.profile
        want = profile.remote_port
        if profile.is_local:
            want = profile.local_port or forwarder.pick_local_port(self.options.prefer_local_port)
        self.reporter.step(f"inspecting {self.host.name}")
        info = jupyter.inspect(self.host, profile, want_port=want)
        self.host_info = info
        reusable = jupyter.reusable(info)
        if reusable is not None:
            self.reporter.step(f"re-attaching to the running Jupyter (port {reusable.port})")
            return reusable
        if info.existing is not None:
            jupyter.stop(self.host, profile)
            self.reporter.note(
                "the previous Jupyter for this profile was gone or not answering: "
                "starting a new one; the URL (token) changes and its kernels are lost"
            )
        flavour = choose(profile.app, info.versions, jupyter.install_hint(profile))
        refused = hostconfig.token_error(info.config, flavour, f"on {self.host.name}")
        if refused is not None:
            raise refused
        for note in jupyter.config_notes(info, flavour):
            self.reporter.note(note)
        _require_kernel(info, profile)
        port = self._remote_port(info, want)
        token = redact.new_token()
        self.reporter.step(f"starting {flavour.label} on {self.host.name}, port {port}")
        self._started_remote = True
        if self.options.probe:
            from colabtunnel import probe

            probe.preload()  # while Jupyter starts, this process only waits
        return jupyter.start(self.host, profile, info, flavour, port, token, self.options.timeout)

    def _remote_port(self, info: jupyter.HostInfo, want: int | None) -> int:
        if want is None or info.want_port_free is not False:
            return want or info.free_port
        pinned = self.profile.local_port if self.profile.is_local else self.profile.remote_port
        if pinned is None:  # an automatic choice was taken meanwhile: take the host's free one
            return info.free_port
        where = "this machine" if self.profile.is_local else self.profile.host
        key = "local_port" if self.profile.is_local else "remote_port"
        holder = forwarder.port_holder(pinned) if self.profile.is_local else None
        raise ColabtunnelError(
            f"port {pinned} is already in use on {where}" + (f" by {holder}" if holder else ""),
            hint=f'set {key} = "auto" in the profile (or drop --{key.replace("_", "-")}), '
            "or free the port",
        )

    def _open_channel(self, origin: tuple[str, int]) -> object:
        # While reconnecting, a new connection waits (bounded) instead of failing at once.
        if not self._connected.wait(CONNECTION_WAIT_S) or self.connection is None:
            raise ColabtunnelError(f"the SSH connection is down (waited {CONNECTION_WAIT_S:.0f} s)")
        assert self.opened is not None
        return self.connection.open_tuned_forward(self.opened.remote_port, origin)

    def _probe(self, local_port: int, token: str) -> None:
        from colabtunnel import probe

        self.reporter.step("checking it the way Colab's page will use it")
        report = probe.run_probe(
            f"http://127.0.0.1:{local_port}/",
            token,
            origin=COLAB_ORIGIN,
            timeout=min(self.options.timeout, 60),
            wait_for_cleanup=False,  # the kernel is deleted while the URL is shown
        )
        failure = report.first_failure()
        if failure is not None:
            report.settle(10)
            raise ColabtunnelError(
                f"Colab check {failure.name!r} failed: {failure.detail}", hint=failure.fix
            )

    # -- life ----------------------------------------------------------------------------------

    def serve(self, stop: threading.Event, on_health: Callable[[Health], None]) -> None:
        """Keep the tunnel up until `stop` is set (see supervisor.py)."""
        Supervisor(self, on_health).run(stop)

    def connection_ok(self, timeout: float) -> bool:
        """True while the SSH connection answers within `timeout` (always true for `local`)."""
        if self.profile.is_local:
            return True
        return self.connection is not None and self.connection.ping(timeout)

    def remote_alive(self) -> bool | None:
        """Whether Jupyter still accepts connections on the host; None when that cannot be told."""
        if self.opened is None:
            return None
        port = self.opened.remote_port
        if self.profile.is_local:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except OSError:
                return False
            return True
        import paramiko

        if self.connection is None:
            return None
        try:
            self.connection.open_forward(port, ("127.0.0.1", 0)).close()
        except paramiko.ChannelException:
            return False  # the host refused the connection to Jupyter's port
        except (paramiko.SSHException, EOFError, OSError):
            return None
        return True

    def drop_connection(self) -> None:
        self._connected.clear()
        if self.connection is not None:
            self.connection.close()

    def reconnect(self) -> str:
        """One attempt: "ok", "needs-login" (a person must answer) or "failed"."""
        from colabtunnel import sshtarget
        from colabtunnel.auth import LoginNeeded

        try:
            self.host = self._login(sshtarget.resolve(self.profile), accept_new=False)
        except LoginNeeded as exc:
            log.warning("reconnect needs a login: %s", exc.message)
            return "needs-login"
        except ColabtunnelError as exc:
            log.warning("reconnect failed: %s", exc.message)
            return "failed"
        return "ok"

    # -- stop ----------------------------------------------------------------------------------

    def close(self, stop_remote: bool) -> bool | None:
        """Tear down the listener, then (when asked) the remote Jupyter.

        True: it was stopped; False: none was running; None: it could not be reached or stopped.
        """
        stopped: bool | None = False
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        if stop_remote and self.host is not None:
            try:
                stopped = jupyter.stop(self.host, self.profile)
            except (ColabtunnelError, OSError, EOFError) as exc:
                log.warning("could not stop Jupyter on %s: %s", self.host.name, exc)
                stopped = None
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        return stopped

    def abandon_on_failure(self) -> None:
        """After a failed open(): remove what this attempt started, leave what it found running."""
        self.close(stop_remote=self._started_remote)

    def record(self, keeper_pid: int, foreground: bool) -> state.Record:
        assert self.opened is not None
        started = state.process_identity(keeper_pid) or time.time()
        return state.Record(
            profile=self.profile.name,
            keeper_pid=keeper_pid,
            keeper_started=started,
            host=self.opened.host,
            local_port=self.opened.local_port,
            remote_port=self.opened.remote_port,
            token=self.opened.token,
            flavour=self.opened.flavour,
            foreground=foreground,
            gpu_report=self.host_info.gpus.to_json() if self.host_info else {},
        )


def _require_kernel(info: jupyter.HostInfo, profile: Profile) -> None:
    if info.versions.get("ipykernel"):
        return
    where = "this machine" if profile.is_local else profile.host
    raise ColabtunnelError(
        f"ipykernel is not installed on {where}: Jupyter would start but no kernel could run",
        hint=jupyter.LOCAL_INSTALL_HINT
        if profile.is_local
        else "pip install ipykernel (in the environment `activate` selects)",
    )
