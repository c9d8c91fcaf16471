"""One profile's tunnel from start to finish: connect, ready Jupyter, forward, prove it, tear down.

Used in-process by `up --foreground` and inside the background keeper; the caller decides where
progress goes (a Reporter) and how long it lives.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from colabtunnel import launchers, redact
from colabtunnel.errors import ColabtunnelError
from colabtunnel.jupyter import hostconfig, inspection
from colabtunnel.jupyter.flavours import COLAB_ORIGIN, choose
from colabtunnel.keeper import manual_stop, state
from colabtunnel.keeper.supervisor import Attempt, Health, RemoteState, Supervisor
from colabtunnel.profiles import Profile
from colabtunnel.ssh import forwarder, hosts
from colabtunnel.ssh.connection import Connection
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.hosts import Host, SSHHost

log = logging.getLogger("colabtunnel")

CONNECTION_WAIT_S = 20.0
REPLACEMENT_POLL_S = 0.1
# How long a failed start-up's clean-up may spend logging in again when its connection died.
CLEANUP_LOGIN_S = 15.0
# How long a stop waits for the connection to answer a keepalive before it counts it as dead.
STOP_PING_S = 5.0


class Cancelled(Exception):
    """The start-up was interrupted (Ctrl-C, SIGTERM): stop before the next step."""


class Reporter(Protocol):
    def step(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...


class _Progress:
    """What a launcher reports goes to the Reporter; what it starts, a failure cleans up."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def step(self, message: str) -> None:
        self.tunnel.reporter.step(message)

    def note(self, message: str) -> None:
        self.tunnel.reporter.note(message)

    def started(self) -> None:
        self.tunnel._started_remote = True
        if self.tunnel.options.probe:
            from colabtunnel.jupyter import probe

            probe.preload()  # while Jupyter starts, this process only waits

    def submitted(self, handle: dict[str, Any], token: str, flavour: str) -> None:
        self.tunnel.pending = (handle, token, flavour)
        if self.tunnel.on_submitted is not None:
            self.tunnel.on_submitted(handle, token, flavour)


@dataclass(frozen=True)
class UpOptions:
    accept_new: bool = False
    timeout: float = 120.0
    probe: bool = True
    prefer_local_port: int | None = None  # the port a previous keeper used, so the URL survives


@dataclass(frozen=True)
class Opened:
    local_port: int
    server: launchers.Server
    host: str
    launcher: str

    @property
    def remote_port(self) -> int:
        return self.server.port

    @property
    def token(self) -> str:
        return self.server.token

    @property
    def flavour(self) -> str:
        return self.server.flavour

    @property
    def reattached(self) -> bool:
        return self.server.reattached


def local_jupyter(profile: Profile) -> Profile:
    """For `local`, prefer the jupyter installed beside this Python (the venv colabtunnel runs in)."""
    if profile.jupyter != "jupyter":
        return profile
    name = "jupyter.exe" if sys.platform == "win32" else "jupyter"
    candidate = Path(sys.executable).with_name(name)
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
        self.host_info: inspection.HostInfo | None = None  # the inspection's answer: GPUs, Python
        self.launcher = launchers.for_profile(profile)
        self.reach: launchers.Reach | None = None  # whose channels reach Jupyter
        # A server on its way (a queued job): what finds it, before open() returns
        self.pending: tuple[dict[str, Any], str, str] | None = None
        self.on_submitted: Callable[[dict[str, Any], str, str], None] | None = None
        self.local_port: int | None = None
        self._connected = threading.Event()
        # Set once the supervisor keeps the tunnel: before that a dead connection is not
        # replaced, so a forwarded connection fails at once instead of waiting for it.
        self._serving = threading.Event()
        self._started_remote = False
        # local connections waiting for a login (a reconnect): for the log and the tests
        self.waiting_connections = 0
        self._waiting_lock = threading.Lock()
        self.stop_refused: str | None = None  # why the launcher could not stop what it started
        self.left_running = False  # abandon_on_failure() could not undo the start
        # False while what runs on the host was there before this `up` (a re-attach): an
        # interrupted or failed start-up must not stop it.
        self._owns_remote = False
        self._cancelled = False
        self._reached_host = False  # anything sent to the host beyond the login
        self._steps = threading.Lock()  # orders cancel() against the start of each step
        self._target_label = "local"

    @property
    def target(self) -> str:
        """user@host:port (or "local"), as progress lines and `status` name it."""
        return self._target_label

    # -- start ---------------------------------------------------------------------------------

    def _next_step(self) -> None:
        """Called before each step that acts on the host: stop here once cancel() was called."""
        with self._steps:
            if self._cancelled:
                raise Cancelled
            self._reached_host = True

    def cancel(self) -> bool:
        """Make a start-up running on another thread stop as soon as it can: the step under way
        ends early where that is safe (a Jupyter being launched is stopped, the probe's
        connections are cut) and no further step starts. Returns whether the start-up reached
        the host (if not, nothing there needs undoing). The caller then waits for the start-up
        thread and calls abandon_on_failure()."""
        with self._steps:
            self._cancelled = True
            reached = self._reached_host
        if self.forwarder is not None:
            self.forwarder.stop()
        if self._started_remote and self.host is not None:
            self._stop_remote("while it was being started")
        return reached

    def open(self) -> Opened:
        listener = None if self.profile.is_local else self._bind_local()
        try:
            self.host = self.connect_host()
            if self.connection is not None:
                # The inspection's channel and the next script's, opened at once: the start
                # script then runs as soon as the inspection's answer is in.
                self.connection.sessions.reserve(2, hosts.SCRIPT_COMMAND)
            server = self._ensure_server()
            self.reach = self.launcher.attach(self.host, self.profile, server, self.creds)
            if server.gpus is not None and self.host_info is not None:  # where Jupyter runs
                self.host_info = replace(self.host_info, gpus=server.gpus)
            if listener is not None:
                with self._steps:  # cancel() must see a forwarder started before it ran
                    if self._cancelled:
                        raise Cancelled
                    self.forwarder = forwarder.Forwarder(listener, self._open_channel).start()
                listener = None
                local_port = self.forwarder.port
            else:
                local_port = server.port
            self.opened = Opened(local_port, server, self._target_label, self.launcher.NAME)
            if self.options.probe:
                self._next_step()
                self._probe(local_port, server)
            return self.opened
        finally:
            if listener is not None:
                listener.close()
            if self.connection is not None:
                self.connection.sessions.release()

    def _bind_local(self) -> socket.socket:
        listener = self._bind_local_port()
        self.local_port = int(listener.getsockname()[1])
        return listener

    def _bind_local_port(self) -> socket.socket:
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
        return forwarder.bind_free_listener()

    def connect_host(self) -> Host:
        host = hosts.connect(
            self.profile, self.reporter, self.creds, accept_new=self.options.accept_new
        )
        self._target_label = host.label
        if isinstance(host, SSHHost):
            self.connection = host.connection
            self._connected.set()
        return host

    def _login(self, deadline: float) -> SSHHost:
        """A new login to the profile's host, as a reconnect makes it: the host key must be
        the known one (no first-use trust), the secrets that worked before are reused."""
        from colabtunnel.ssh import connection, sshtarget

        login = connection.connect(
            sshtarget.resolve(self.profile),
            self.profile.name,
            accept_new=False,
            creds=self.creds,
            deadline=deadline,
        )
        return SSHHost(login, self.profile.host)

    def _ensure_server(self) -> launchers.Server:
        """Inspect the host, then re-attach to the server an earlier `up` left or start one."""
        assert self.host is not None
        profile = self.profile
        want = profile.remote_port
        if profile.is_local:
            want = profile.local_port or forwarder.pick_local_port(self.options.prefer_local_port)
        self._next_step()
        self.reporter.step(f"inspecting {self.host.name}")
        progress = _Progress(self)
        info = self.launcher.inspect(self.host, profile, want_port=want, progress=progress)
        self.host_info = info
        found = self.launcher.find(self.host, profile, info, progress)
        if found is not None:
            self.reporter.step(f"re-attaching to the running Jupyter (port {found.port})")
            return found
        # Nothing usable was running: the run directory inspect made, and what follows, are ours.
        self._owns_remote = True
        self._next_step()
        flavour = choose(profile.app, info.versions, inspection.install_hint(profile))
        refused = hostconfig.token_error(info.config, flavour, f"on {self.host.name}")
        if refused is not None:
            raise refused
        for note in inspection.config_notes(info, flavour):
            self.reporter.note(note)
        _require_kernel(info, profile)
        token = redact.new_token()
        self._next_step()
        return self.launcher.start(
            self.host, profile, info, flavour, token, want, self.options.timeout, progress
        )

    def _open_channel(self, origin: tuple[str, int]) -> object:
        """A channel to Jupyter for a new local connection. While the link is down (or found
        dead while this waited for the channel) it waits for the reconnect, at most
        CONNECTION_WAIT_S in all; then the local connection is closed, never left hanging."""
        import paramiko

        assert self.opened is not None
        give_up = time.monotonic() + CONNECTION_WAIT_S
        while True:
            left = give_up - time.monotonic()
            waited = self._wait_connected(left)
            # Read once the link is up: read before, they may be the dropped login's
            connection, reach = self.connection, self.reach
            if not waited or connection is None or reach is None:
                raise ColabtunnelError(
                    f"the SSH connection is down (waited {CONNECTION_WAIT_S:.0f} s)"
                )
            try:
                return reach.open(self.opened.server.endpoint, origin)
            except (paramiko.SSHException, EOFError, OSError):
                if connection is self.connection and connection.alive:
                    raise  # the far end refused it: Jupyter is not there
                if not self._serving.is_set():
                    raise  # the start-up fails (and is undone): nobody would log in again
                # The connection was found dead: wait for its replacement, which the
                # supervisor makes once it notices (until then _connected is still set).
                while self.connection is connection and time.monotonic() < give_up:
                    time.sleep(REPLACEMENT_POLL_S)

    def _wait_connected(self, timeout: float) -> bool:
        """Wait (at most `timeout`) for a login with its way to Jupyter, counted while waiting."""
        if timeout <= 0:
            return False
        if self._connected.is_set():
            return True
        with self._waiting_lock:
            self.waiting_connections += 1
        try:
            return self._connected.wait(timeout)
        finally:
            with self._waiting_lock:
                self.waiting_connections -= 1

    def _probe(self, local_port: int, server: launchers.Server) -> None:
        from colabtunnel.jupyter import probe

        self.reporter.step("checking it the way Colab's page will use it")
        url, timeout = f"http://127.0.0.1:{local_port}/", min(self.options.timeout, 60)
        if server.colab_answers is not None:  # the HTTP checks were made on the host
            report = probe.run_probe_on_answers(
                url, server.token, server.colab_answers, origin=COLAB_ORIGIN, timeout=timeout
            )
        else:
            report = probe.run_probe(
                url,
                server.token,
                origin=COLAB_ORIGIN,
                timeout=timeout,
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
        self._serving.set()
        Supervisor(self, on_health).run(stop)

    def connection_ok(self, timeout: float) -> bool:
        """True while the SSH connection answers within `timeout` (always true for `local`)."""
        if self.profile.is_local:
            return True
        return self.connection is not None and self.connection.ping(timeout)

    def connection_alive(self) -> bool:
        """False once the transport has died outright (reset, EOF); no round trip."""
        if self.profile.is_local:
            return True
        return self.connection is not None and self.connection.alive

    def remote_alive(self, timeout: float) -> RemoteState:
        """Whether Jupyter still accepts connections where it runs: "up", "refused",
        "unanswered" (no answer within `timeout`), or "unknown" (the launcher cannot tell)."""
        if self.opened is None:
            return "unknown"
        server = self.opened.server

        def ask() -> RemoteState:
            verdict = self.launcher.alive(self, server)
            return "unknown" if verdict is None else "up" if verdict else "refused"

        # paramiko's own timeout for a channel request is longer
        answer = _answer_within(timeout, ask)
        return answer[0] if answer else "unanswered"

    def ended(self, timeout: float) -> str | None:
        """Why Jupyter is gone, asked where it ran: "idle" (it ended itself), else None. Only
        asked for a profile with idle_timeout: nothing else ends Jupyter by itself."""
        if self.opened is None or self.host is None or not self.profile.idle_timeout:
            return None
        host, handle = self.host, self.opened.server.handle

        def ask() -> str | None:
            try:
                return self.launcher.ended(host, self.profile, handle)
            except Exception as exc:  # a link that died meanwhile: the next check sees it
                log.info("could not ask why Jupyter ended: %s", exc)
                return None

        answer = _answer_within(timeout, ask)
        log.info("why Jupyter ended, as the host says: %s", answer[0] if answer else "no answer")
        return answer[0] if answer else None

    def reaches(self, endpoint: tuple[str, int]) -> bool | None:
        """Does `endpoint` accept a connection through the tunnel's far end? None: the link is
        down, so it cannot be told."""
        if self.profile.is_local:
            try:
                socket.create_connection(endpoint, timeout=5).close()
            except OSError:
                return False
            return True
        return None if self.reach is None else self.reach.reaches(endpoint)

    def node_host(self) -> Host | None:
        """Where Jupyter runs, to run a command there (the host itself, or a job's node)."""
        if self.host is None or self.opened is None:
            return None
        return self.launcher.node_host(self.host, self.opened.server)

    def launcher_details(self) -> dict[str, Any] | None:
        """What the launcher says beyond the tunnel (a job's state and time left) for `status`."""
        if self.host is None or self.opened is None:
            return None
        return self.launcher.details(self.host, self.profile, self.opened.server.handle)

    def activity(self, timeout: float) -> dict[str, Any]:
        """When Jupyter was last used (its own /api/status), asked through the forwarded port:
        the connection the keeper holds, no new login."""
        from colabtunnel.jupyter import activity

        if self.opened is None:
            return {"ok": False, "reason": "the tunnel is not open"}
        if self.connection is not None and not self.connection.alive:
            return {"ok": False, "reason": "the SSH connection is down (reconnecting)"}
        try:
            found = activity.ask(self.opened.local_port, self.opened.server.token, timeout)
        except activity.Unknown as exc:
            return {"ok": False, "reason": str(exc)}
        return {"ok": True, **found.to_json(), "idle_timeout": self.profile.idle_timeout}

    def drop_connection(self) -> None:
        self._connected.clear()
        if self.connection is not None:
            self.connection.close()

    def reconnect(self, deadline: float, attach: bool = True) -> Attempt:
        """One attempt, all of it (every hop's TCP connect, banner, key exchange, login) done by
        `deadline` (time.monotonic()). Without `attach` only the login is made (enough to run
        a script on the host), not the way to Jupyter."""
        import paramiko

        from colabtunnel.ssh.auth import LoginNeeded
        from colabtunnel.ssh.hostkeys import ChangedHostKey

        try:
            host = self._login(deadline)
            reach = self.reach
            if attach and self.opened is not None:  # the new login's way to Jupyter (a srun bridge)
                try:
                    reach = self.launcher.attach(host, self.profile, self.opened.server, self.creds)
                except BaseException:
                    host.close()  # no use without its way in; the next attempt logs in afresh
                    raise
            # Handed out together, and only now: a forwarded connection that pairs the new login
            # with the dropped one's way in (a dead bridge) would be refused.
            old_reach = self.reach
            self.host, self.connection, self.reach = host, host.connection, reach
            if old_reach is not None and old_reach is not reach:
                old_reach.close()
            self._connected.set()
        except LoginNeeded as exc:
            log.warning("reconnect needs a login: %s", exc.message)
            return Attempt("needs-login", exc.message)
        except ChangedHostKey as exc:
            return Attempt("host-key-changed", exc.message)
        except ColabtunnelError as exc:
            log.warning("reconnect failed: %s", exc.message)
            return Attempt("failed", exc.message)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.warning("reconnect failed: %s", exc)
            return Attempt("failed", str(exc) or type(exc).__name__)
        return Attempt("ok")

    # -- stop ----------------------------------------------------------------------------------

    def close(self, stop_remote: bool) -> bool | None:
        """Tear down the listener, then (when asked) the remote Jupyter.

        True: it was stopped; False: none was running; None: it could not be reached or stopped.
        """
        stopped: bool | None = False
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        if self.reach is not None:
            self.reach.close()
            self.reach = None
        if stop_remote and self.host is not None:
            stopped = self._stop_remote("")
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        return stopped

    def _stop_remote(self, when: str) -> bool | None:
        """The launcher's stop, or None (logged) when the host cannot be reached to do it."""
        assert self.host is not None
        if not self.connection_alive():
            log.warning("could not stop Jupyter on %s: the SSH connection is down", self.host.name)
            return None
        if not self.connection_ok(STOP_PING_S):
            # A silent link (Wi-Fi gone, a lid closed) would hold the stop for its whole
            # timeout; it is dropped instead, so that what follows knows it is gone.
            log.warning(
                "could not stop Jupyter on %s: no answer on the SSH connection in %.0f s",
                self.host.name,
                STOP_PING_S,
            )
            if self.connection is not None:
                self.connection.close()
            return None
        handle = self.opened.server.handle if self.opened else None
        if handle is None and self.pending is not None:
            handle = self.pending[0]  # a queued job: what finds it
        try:
            return self.launcher.stop(self.host, self.profile, handle)
        except ColabtunnelError as exc:  # the host answered, the launcher could not stop it
            log.warning("could not stop Jupyter on %s %s: %s", self.host.name, when, exc.message)
            self.stop_refused = exc.message
            return None
        except Exception as exc:  # paramiko's own errors included: this runs during clean-up
            log.warning("could not stop Jupyter on %s %s: %s", self.host.name, when, exc)
            return None

    def abandon_on_failure(self) -> None:
        """After a failed or interrupted open(): remove what this attempt made on the host (the
        Jupyter it started, the run directory it created), leave what it found running.

        When the host could not be told (the connection died meanwhile: a dropped link, perhaps
        why the user pressed Ctrl-C), one new login, within CLEANUP_LOGIN_S, does it. If even
        that fails, the user is told what may still run there and how to stop it."""
        stop_remote = self._owns_remote or self._started_remote
        stopped = self.close(stop_remote=stop_remote)
        if not stop_remote or stopped is not None or self.host is None:
            return
        if not self.profile.is_local and self.stop_refused is None:
            log.warning("Jupyter could not be stopped over the connection: logging in again")
            attempt = self.reconnect(time.monotonic() + CLEANUP_LOGIN_S, attach=False)
            if attempt.state == "ok" and self.close(stop_remote=True) is not None:
                return
        # A new login would not help a host that answered and could not stop it (a Slurm
        # scheduler that does not answer): the record stays for `down` (leftover_record).
        self.left_running = True
        why = self.stop_refused or f"{self.host.name} could not be reached to undo this start"
        with contextlib.suppress(OSError):  # `up` may be gone: the log has it anyway
            self.reporter.note(manual_stop.advice(self.profile.name, why))

    def leftover_record(self, keeper_pid: int) -> state.Record | None:
        """After abandon_on_failure() could not undo a submitted job: the record that lets
        `down` try again once the host can do it (None when nothing may be left)."""
        if not self.left_running or self.pending is None:
            return None
        record = self.provisional_record(keeper_pid, *self.pending)
        record.health = "stop-failed"
        record.detail = self.stop_refused or ""
        return record

    def provisional_record(
        self, keeper_pid: int, handle: dict[str, Any], token: str, flavour: str
    ) -> state.Record:
        """While a server is on its way (a queued job): enough for `status` and for `down`."""
        started = state.process_identity(keeper_pid) or time.time()
        return state.Record(
            profile=self.profile.name,
            keeper_pid=keeper_pid,
            keeper_started=started,
            host=self._target_label,
            local_port=self.local_port or 0,
            remote_port=0,
            token=token,
            flavour=flavour,
            health="starting",
            launcher=self.launcher.NAME,
            handle=handle,
        )

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
            launcher=self.opened.launcher,
            handle=self.opened.server.handle,
            foreground=foreground,
            gpu_report=self.host_info.gpus.to_json() if self.host_info else {},
        )


def _require_kernel(info: inspection.HostInfo, profile: Profile) -> None:
    if info.versions.get("ipykernel"):
        return
    where = "this machine" if profile.is_local else profile.host
    raise ColabtunnelError(
        f"ipykernel is not installed on {where}: Jupyter would start but no kernel could run",
        hint=inspection.LOCAL_INSTALL_HINT
        if profile.is_local
        else "pip install ipykernel (in the environment `activate` selects)",
    )


_T = TypeVar("_T")


def _answer_within(timeout: float, ask: Callable[[], _T]) -> list[_T]:
    """ask() on a thread of its own: [its answer], or [] when none came within `timeout` (the
    thread is left to finish; a late answer is dropped)."""
    answer: list[_T] = []
    asker = threading.Thread(target=lambda: answer.append(ask()), daemon=True)
    asker.start()
    asker.join(timeout)
    return answer[:1]
