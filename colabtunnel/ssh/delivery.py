"""Server-to-client bytes delivered by paramiko's reader thread itself, when that is safe.

paramiko's reader thread decrypts a channel's data into a buffer and wakes whoever reads the
channel; the forwarder's pump thread then wakes up, takes the bytes and writes them to the local
socket. On a kernel's small websocket messages that hand-over (an OS pipe write, a select wake-up,
a thread switch) costs 15-30 µs of each round trip and CPU on bulk data. So when the buffer is
empty and nobody else is writing to the local socket, the reader thread writes the bytes to the
socket itself, without blocking (MSG_DONTWAIT); whatever does not fit goes to the buffer as
before, and the pump sends it. Order is kept by one lock, held by whoever writes to the socket.

Only where the OS has MSG_DONTWAIT (Linux, macOS, the BSDs); elsewhere the usual path is used.
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from colabtunnel.ssh.window import TunedChannel

DONTWAIT: int | None = getattr(socket, "MSG_DONTWAIT", None)


class DirectDelivery:
    """Stands in for a channel's `in_buffer` (paramiko's BufferedPipe), which it wraps."""

    def __init__(self, tuned: TunedChannel, sock: socket.socket) -> None:
        self.tuned = tuned
        self.sock = sock
        self.buffer = tuned.channel.in_buffer
        self.lock = threading.Lock()  # held by whoever writes to `sock`
        transport = tuned.channel.transport
        assert transport is not None  # an open channel has one
        self.clear_to_send = transport.clear_to_send
        self.direct = 0  # bytes written to the socket here
        self.buffered = 0  # bytes left to the pump

    def feed(self, data: bytes) -> None:
        """Called by paramiko's reader thread with each data packet of the channel."""
        # Never wait here: the reader thread serves every channel of the connection. A writer
        # already at work (the pump) gets the bytes through the buffer, after its own.
        if not self.lock.acquire(blocking=False):
            self.buffered += len(data)
            self.buffer.feed(data)
            return
        try:
            # During a key exchange no window adjustment may be sent: leave it to the pump.
            if len(self.buffer) == 0 and self.clear_to_send.is_set():
                try:
                    sent = self.sock.send(data, DONTWAIT or 0)
                except OSError:  # full (EAGAIN) or broken: the pump sees for itself
                    sent = 0
                if sent:
                    self.direct += sent
                    self.tuned.consumed(sent)
                    data = data[sent:]
            if data:
                self.buffered += len(data)
                self.buffer.feed(data)
        finally:
            self.lock.release()

    def __len__(self) -> int:
        return len(self.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.buffer, name)


def install(tuned: TunedChannel, sock: socket.socket) -> threading.Lock | None:
    """Deliver `tuned`'s data straight to `sock` where the OS allows. Returns the lock the pump
    must hold while it moves bytes from the channel to `sock` (None: nothing installed)."""
    if DONTWAIT is None:
        return None
    delivery = DirectDelivery(tuned, sock)
    tuned.channel.in_buffer = delivery  # type: ignore[assignment]  # duck-typed stand-in
    return delivery.lock
