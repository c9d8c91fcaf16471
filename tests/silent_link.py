"""A link that can go silent: a TCP proxy on 127.0.0.1 between the SSH client and the test sshd.

This kernel has no netem, so the faults a laptop meets (lid closed, Wi-Fi gone, a NAT that forgot
the connection) are made here in userspace:

- `hold()`: every byte in both directions is kept back while all sockets stay open. Neither end
  sees an error or a close; packets simply stop arriving. New connections are accepted and held
  too (their sshd's banner never arrives), as a connect through a dead Wi-Fi would hang.
- `release()`: what was held flows on, in order, as if the link had come back.
- `cut()`: every connection is reset at once (as a NAT that drops state and answers RST), held
  bytes included. `refuse_for(s)`: for the next s seconds new connections are reset as soon as
  they are accepted (a network that is not back yet), so reconnect attempts fail.

`accepted` counts connections (`accept_times` says when each came), so a test can tell a ridden-through silence (no new connection)
from a reconnect.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

CHUNK = 256 * 1024


class SilentLink:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Condition()
        self._held = False
        self._generation = 0  # bumped by cut(): pumps of an older generation stop
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.accept_times: list[float] = []  # time.monotonic() of each accept, refused ones too
        self._refuse_until = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="silent-link", daemon=True)
        self._thread.start()

    # -- faults ---------------------------------------------------------------------------------

    def hold(self) -> None:
        with self._flowing:
            self._held = True

    def release(self) -> None:
        with self._flowing:
            self._held = False
            self._flowing.notify_all()

    @property
    def held(self) -> bool:
        return self._held

    def cut(self) -> None:
        """Reset every connection now (SO_LINGER 0: an RST, not a polite FIN)."""
        with self._flowing:
            self._generation += 1
            pairs, self._pairs = self._pairs, []
            self._flowing.notify_all()
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def refuse_for(self, seconds: float) -> None:
        self._refuse_until = time.monotonic() + seconds

    @contextlib.contextmanager
    def silent(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.release()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.release()
        self.cut()
        self._thread.join(5)

    # -- plumbing -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accept_times.append(time.monotonic())
            if time.monotonic() < self._refuse_until:
                self.accepted += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._flowing:
                self.accepted += 1
                self._pairs.append((client, upstream))
                generation = self._generation
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, generation), name="silent-pump", daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, generation: int) -> None:
        """Copy src to dst; while held, what was read waits here (and the kernel buffers the
        rest), so the far end hears nothing until release()."""
        while True:
            try:
                data = src.recv(CHUNK)
            except OSError:
                data = b""
            with self._flowing:
                while self._held and self._generation == generation:
                    self._flowing.wait()
                if self._generation != generation:
                    return
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes a pump blocked in recv(); sends nothing
    with contextlib.suppress(OSError):
        sock.close()  # with SO_LINGER 0: an RST
