"""Keeping an open tunnel alive: a heartbeat with a deadline, a watch on the remote Jupyter, and
reconnection with jittered exponential backoff (1 s doubling to 30 s).

paramiko's own keepalive only sends; it never notices an answer that does not come (a laptop that
slept, a NAT that forgot us). The heartbeat here waits for the server's reply, so a silent dead
connection is found within about three keepalive intervals.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from colabtunnel.tunnel import Tunnel

log = logging.getLogger("colabtunnel")

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0


@dataclass(frozen=True)
class Health:
    state: str = "ok"  # ok | reconnecting | needs-login | remote-dead
    attempt: int = 0
    retry_at: float = 0.0  # epoch seconds of the next attempt while reconnecting


class Supervisor:
    def __init__(self, tunnel: Tunnel, on_health: Callable[[Health], None]) -> None:
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
            if self.tunnel.connection_ok(timeout=2 * self.interval):
                remote = self.tunnel.remote_alive()
                if remote is False:
                    if self.health.state != "remote-dead":
                        log.warning(
                            "the remote Jupyter is gone (port %s refuses)",
                            self.tunnel.opened.remote_port if self.tunnel.opened else "?",
                        )
                    self._set(Health("remote-dead"))
                elif remote:
                    self._set(Health("ok"))
                stop.wait(self.interval)
                continue
            log.warning("SSH connection lost; reconnecting")
            self._reconnect(stop)

    def _reconnect(self, stop: threading.Event) -> None:
        self.tunnel.drop_connection()
        delay = FIRST_DELAY_S
        attempt = 0
        while not stop.is_set():
            attempt += 1
            result = self.tunnel.reconnect()
            if result == "ok":
                log.info("reconnected after %d attempt(s)", attempt)
                self._set(Health("ok"))
                return
            wait = delay * random.uniform(0.5, 1.0)
            state = "needs-login" if result == "needs-login" else "reconnecting"
            self._set(Health(state, attempt, time.time() + wait))
            stop.wait(wait)
            delay = min(delay * 2, MAX_DELAY_S)
