"""The SSH connection's socket, read in large pieces.

paramiko reads each packet with two recv() calls (its first block, then the rest), and as it
gives the socket a timeout, each recv() is a poll() and a recv() system call: four per packet,
for a 64-byte websocket message as for a 32 KiB bulk one. Reading whatever has arrived (up to
256 KiB) at once and handing it out from memory makes that one call per burst.
"""

from __future__ import annotations

import socket
from typing import Any

READ_SIZE = 256 * 1024
ENABLED = True  # benchmarks/forwarder_proc.py turns it off to measure what it buys


class ReadAheadSocket:
    """A socket.socket for paramiko's Transport, whose only reader is the transport's thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # One buffer for the life of the connection: a fresh 256 KiB bytes object per recv()
        # would be an mmap() and munmap() each time.
        self._view = memoryview(bytearray(READ_SIZE))
        self._at = self._end = 0

    def recv(self, nbytes: int) -> bytes:
        if self._at == self._end:
            got = self.sock.recv_into(self._view)
            if got == 0:
                return b""
            self._at, self._end = 0, got
        take = min(nbytes, self._end - self._at)
        out = bytes(self._view[self._at : self._at + take])
        self._at += take
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def wrap(sock: Any) -> Any:
    return ReadAheadSocket(sock) if ENABLED and isinstance(sock, socket.socket) else sock
