"""Keeping an open tunnel alive: a heartbeat with a deadline, a watch on the remote Jupyter, and
reconnection with jittered exponential backoff (1 s doubling to 30 s).

paramiko's own keepalive only sends; it never notices an answer that does not come (a laptop that
slept, a NAT that forgot us, a silent Wi-Fi). The heartbeat here waits for the server's reply: one
keepalive is sent every interval, and an answer that has not come within 1.5 intervals means the
link is dead, so a silent link is found within 2.5 intervals while a silence shorter than 1.5
intervals rides through. The health is written the moment that is decided, before anything else is
tried, and every reconnect attempt has a deadline of its own (TCP connect, banner, key exchange,
login), so what `status` says is true at every moment.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from colabtunnel.profiles import Profile

log = logging.getLogger("colabtunnel")

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
HEARTBEAT_INTERVALS = 1.5  # an answer later than this (in keepalive intervals) means a dead link
ATTEMPT_INTERVALS = 2.0  # each reconnect attempt's deadline, in keepalive intervals
TRANSPORT_POLL_S = 0.5  # a transport that died outright (reset, EOF) is noticed this fast


RemoteState = Literal["up", "refused", "unanswered", "unknown"]


@dataclass(frozen=True)
class Attempt:
    """How one reconnect attempt ended: "ok", "failed", "needs-login" or "host-key-changed"."""

    state: str
    detail: str = ""


class _RemotePort(Protocol):
    @property
    def remote_port(self) -> int: ...


class Kept(Protocol):
    """What the supervisor needs of a tunnel (tunnel.Tunnel is the one there is)."""

    @property
    def profile(self) -> Profile: ...

    @property
    def opened(self) -> _RemotePort | None: ...

    @property
    def target(self) -> str: ...

    def connection_ok(self, timeout: float) -> bool: ...

    def connection_alive(self) -> bool: ...

    def remote_alive(self, timeout: float) -> RemoteState: ...

    def ended(self, timeout: float) -> str | None: ...

    def drop_connection(self) -> None: ...

    def reconnect(self, deadline: float) -> Attempt: ...


@dataclass(frozen=True)
class Health:
    state: str = "ok"  # ok | reconnecting | needs-login | remote-dead | host-key-changed | ended
    attempt: int = 0
    retry_at: float = 0.0  # epoch seconds of the next attempt; 0 while one is under way
    detail: str = ""  # what the attempt waits for, why the last one failed, or the new host key


class Supervisor:
    def __init__(self, tunnel: Kept, on_health: Callable[[Health], None]) -> None:
        self.tunnel = tunnel
        self.on_health = on_health
        self.interval = float(max(1, tunnel.profile.keepalive))
        self.health = Health()

    def _set(self, health: Health) -> None:
        if health != self.health:
            self.health = health
            self.on_health(health)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            began = time.monotonic()
            lost = self._check()
            if self.health.state == "ended":
                return  # Jupyter ended itself (idle_timeout): nothing left to keep
            if lost is None:
                self._idle(stop, until=began + self.interval)
                continue
            log.warning("SSH connection lost (%s); reconnecting", lost)
            if self._reconnect(stop, lost) == "host-key-changed":
                stop.wait()  # stop trying; `status` says why until `down` or a new `up`

    def _check(self) -> str | None:
        """None while the link answers (the Jupyter watch updated), else why it is deemed dead."""
        deadline = HEARTBEAT_INTERVALS * self.interval
        if not self.tunnel.connection_ok(timeout=deadline):
            return f"no answer to a keepalive within {deadline:.0f} s"
        remote = self.tunnel.remote_alive(timeout=deadline)
        if remote == "unanswered":
            return f"no answer to a channel request within {deadline:.0f} s"
        if remote == "refused" and self.health.state != "remote-dead":
            why = self.tunnel.ended(timeout=deadline)
            if why == "idle":
                log.info("Jupyter ended itself: nothing to do for the profile's idle_timeout")
                self._set(Health("ended", detail="idle"))
                return None
        if remote == "refused":
            if self.health.state != "remote-dead":
                log.warning(
                    "the remote Jupyter is gone (port %s refuses)",
                    self.tunnel.opened.remote_port if self.tunnel.opened else "?",
                )
            self._set(Health("remote-dead"))
        elif remote == "up":
            self._set(Health("ok"))
        return None

    def _idle(self, stop: threading.Event, until: float) -> None:
        """Wait for the next heartbeat, but not past a transport that died outright."""
        while not stop.is_set():
            left = until - time.monotonic()
            if left <= 0 or not self.tunnel.connection_alive():
                return
            stop.wait(min(TRANSPORT_POLL_S, left))

    def _reconnect(self, stop: threading.Event, why: str) -> str:
        """Attempts with backoff until one works, a person must act, or `stop`. Returns the end
        state ("ok", "host-key-changed", or "stopped")."""
        attempt = 1
        # Said before anything else: dropping the old connection or the first attempt may take
        # a while on a silent link, and `status` must not say `ok` meanwhile.
        self._set(Health("reconnecting", attempt, 0.0, f"{why}; reconnecting"))
        self.tunnel.drop_connection()
        delay = FIRST_DELAY_S
        # Once a login has asked for a person (a one-time code), the state stays needs-login
        # through the attempts after it, until one gets in: `up` reuses a keeper that says
        # reconnecting, and would hand out the URL of a tunnel that cannot come back by itself.
        needs_login = ""
        while not stop.is_set():
            state = "needs-login" if needs_login else "reconnecting"
            detail = needs_login or f"connecting to {self.tunnel.target}"
            self._set(Health(state, attempt, 0.0, detail))
            deadline = time.monotonic() + ATTEMPT_INTERVALS * self.interval
            outcome = self.tunnel.reconnect(deadline)
            if outcome.state == "ok":
                log.info("reconnected after %d attempt(s)", attempt)
                self._set(Health("ok"))
                return "ok"
            if outcome.state == "host-key-changed":
                log.error("not reconnecting: %s", outcome.detail)
                self._set(Health("host-key-changed", attempt, 0.0, outcome.detail))
                return "host-key-changed"
            wait = delay * random.uniform(0.5, 1.0)
            if outcome.state == "needs-login":
                needs_login = outcome.detail
            state = "needs-login" if needs_login else "reconnecting"
            self._set(Health(state, attempt, time.time() + wait, needs_login or outcome.detail))
            stop.wait(wait)
            delay = min(delay * 2, MAX_DELAY_S)
            attempt += 1
        return "stopped"
