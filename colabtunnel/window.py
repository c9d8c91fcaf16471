"""An SSH channel window that follows the link: 2 × rate × round-trip time, 2 to 16 MiB.

A fixed window caps one connection at window / RTT: OpenSSH's 2 MiB gives about 40 MB/s at 50 ms.
A large fixed window is no cure: when this end is the slower one (a fast loopback link), the
server's send buffer fills up to the window and sshd's cost per byte climbs (measured: 1.4 s/GB at
2 MiB, 11 s/GB at 32 MiB). So the window starts at 2 MiB and grows only while data arrives faster
than the window allows for the measured RTT and this end keeps up with it. Each decision
uses the rate over about one RTT, so a 2 -> 16 MiB ramp takes a handful of round trips.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

MIN_WINDOW = 2 * 1024 * 1024  # paramiko's and OpenSSH's default
MAX_WINDOW = 16 * 1024 * 1024  # the most one connection may have in flight (and so in memory)
MIN_INTERVAL_S = 0.05
GROWTH = 2.0  # 1.5 was measured too: slower ramp-up, lower throughput on the 50 ms link


class TunedChannel:
    """A paramiko Channel for the forwarder's pump: the same recv/sendall/fileno/shutdown_write/close,
    with the window grown as the measured bandwidth-delay product requires."""

    def __init__(self, channel: paramiko.Channel, rtt_s: Callable[[], float]) -> None:
        self.channel = channel
        self.rtt_s = rtt_s  # read at each decision: heartbeats keep refining it
        self.window = channel.in_window_size
        self.interval = max(MIN_INTERVAL_S, rtt_s())
        self._received = 0
        self._since = time.monotonic()

    def fileno(self) -> int:
        return self.channel.fileno()

    def recv(self, nbytes: int) -> bytes:
        data = self.channel.recv(nbytes)
        self._count(len(data))
        return data

    def consumed(self, nbytes: int) -> None:
        """`nbytes` left paramiko's buffer other than by recv() (see delivery.py): grant the
        window back as recv() would, and count them for the rate."""
        ack: int = self.channel._check_add_window(nbytes)  # type: ignore[attr-defined]  # paramiko private, pinned <6
        if ack > 0:
            _send_window_adjust(self.channel, ack)
        self._count(nbytes)

    def _count(self, nbytes: int) -> None:
        self._received += nbytes
        now = time.monotonic()
        if now - self._since >= self.interval:
            rate = self._received / (now - self._since)
            self._received, self._since = 0, now
            self._adapt(rate)

    def _adapt(self, rate: float) -> None:
        want = min(MAX_WINDOW, int(GROWTH * rate * self.rtt_s()))
        # Grow only when this end keeps up (little left unread): otherwise a bigger window would
        # only pile data up in sshd's buffers, which makes the sender slower, not faster.
        if want < self.window * 5 // 4 or len(self.channel.in_buffer) > self.window // 4:
            return
        grow(self.channel, want - self.window)
        self.window = want

    def sendall(self, data: bytes) -> None:
        self.channel.sendall(data)

    def shutdown_write(self) -> None:
        self.channel.shutdown_write()

    def close(self) -> None:
        self.channel.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


def grow(channel: paramiko.Channel, delta: int) -> None:
    """Give the server `delta` more bytes of window, and make paramiko's own re-grants match."""
    with channel.lock:
        if channel.closed or channel.eof_received:
            return
        channel.in_window_size += delta
        channel.in_window_threshold = channel.in_window_size // 10
    _send_window_adjust(channel, delta)


def _send_window_adjust(channel: paramiko.Channel, delta: int) -> None:
    from paramiko import Message
    from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST

    message = Message()
    message.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
    message.add_int(channel.remote_chanid)
    message.add_int(delta)
    transport = channel.transport
    assert transport is not None
    transport._send_user_message(message)  # type: ignore[attr-defined]  # paramiko private, pinned <6
