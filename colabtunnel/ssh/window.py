"""An SSH channel window that follows the link: from 2 MiB, doubled every round trip while the link
fills it, up to 16 MiB.

A fixed window caps one connection at window / RTT: OpenSSH's 2 MiB gives about 40 MB/s at 50 ms.
A large fixed window is no cure: when this end is the slower one (a fast loopback link), the
server's send buffer fills up to the window and sshd's cost per byte climbs (measured: 1.4 s/GB at
2 MiB, 11 s/GB at 32 MiB). So the window starts at 2 MiB and grows only while what arrives in a
round trip fills the window that let it through, and this end keeps up with it (on loopback a
round trip carries a sliver of the window: it never grows there). A grant takes a round trip to
show in what arrives, so each decision compares the bytes of the last round trip with the window
of the decision before the last; doubling every decision (TCP's slow start), 2 -> 16 MiB takes
three. (Issue 6's rule, 2 × the rate × RTT with steps of at least 25 %, grew every other round
trip and stopped at 13.4 MiB at 100 ms: 92 against 105 MB/s at 100 ms, 94 against 157 at 50 ms,
same run; benchmarks/forwarder_proc.py BENCH_RAMP keeps it.)
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
# The window doubles when a round trip carried FILLED of the window in effect, and is taken
# back to KEEP × what it carried when that was under UNDERUSED of it (benchmarks/forwarder_proc.py
# BENCH_WINDOW_RULE sets them).
FILLED = 0.75
UNDERUSED = 0.5
KEEP = 2.0
GROWTH = 2  # per decision (1.5 was measured in issue 6: slower ramp-up, lower throughput)


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
        # The window after each of the last two decisions: what arrived since the last one was
        # let through by the older (a grant takes a round trip to show)
        self._granted = (self.window, self.window)

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
        in_effect = self._granted[0]
        carried = rate * self.rtt_s()  # bytes in flight over a round trip
        # Grow only while the window is what limits, and this end keeps up (little left unread):
        # otherwise a bigger window would only pile data up in sshd's buffers, which makes the
        # sender slower, not faster.
        if (
            carried >= in_effect * FILLED
            and len(self.channel.in_buffer) <= self.window // 4
            and self.window < MAX_WINDOW
        ):
            want = min(MAX_WINDOW, GROWTH * self.window)
            grow(self.channel, want - self.window)
            self.window = want
        elif carried < in_effect * UNDERUSED:
            # The link carries less than the window: what the window allows beyond that waits
            # in sshd, and sshd's cost per byte climbs with that queue until the transfer
            # collapses (13 s of sshd CPU per GB instead of 1.4). Take the excess back.
            want = max(MIN_WINDOW, int(KEEP * carried))
            if want < self.window * 3 // 4:
                shrink(self.channel, self.window - want)
                self.window = want
        self._granted = (self._granted[1], self.window)

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


def shrink(channel: paramiko.Channel, delta: int) -> None:
    """Take `delta` bytes of window back (a grant cannot be revoked: the next `delta` bytes
    this end reads are not granted again)."""
    with channel.lock:
        channel.in_window_size -= delta
        channel.in_window_threshold = channel.in_window_size // 10
        channel.in_window_sofar -= delta  # paramiko private, pinned <6


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
