"""A userspace long link: a TCP proxy that delays every byte by DELAY seconds in each direction.

This machine has no netem. Each chunk read is stamped with its arrival time and written out DELAY
later by a separate writer thread, so many chunks are in flight at once and the pipe stays full: the
proxy adds latency, not a bandwidth limit (a sleep per chunk would cap throughput at chunk/DELAY).
Queued bytes per direction are capped (--cap, default 64 MiB, i.e. 2.7 GB/s at 25 ms) only so that
a flood cannot eat the machine's memory.

What it does not model: loss, and the sender's TCP congestion window over a real long path (the
kernel's TCP only ever sees the loopback hops on either side of the proxy). So the only end-to-end
flow control on the emulated link is the application's own, which for SSH is the channel window:
exactly what the benchmark wants to expose.

With --trace FILE it also writes one line per chunk read, "CONN DIR T BYTES" (DIR ">" towards the
target, "<" back; T on CLOCK_BOOTTIME, the clock the start-up benchmark stamps `up`'s steps with),
from which benchmarks/roundtrips.py counts the round trips each step of `up` waits for.

Run: python -m benchmarks.delayproxy --target PORT --delay 0.025  (prints {"port": N})
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import IO

from benchmarks.lifeline import serve_forever

CHUNK = 1 << 20


class Trace:
    """Where each chunk read was seen, for counting round trips (None: not traced)."""

    def __init__(self, out: IO[str] | None) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def seen(self, conn: int, way: str, nbytes: int) -> None:
        if self.out is None:
            return
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
        with self.lock:
            self.out.write(f"{conn} {way} {now:.6f} {nbytes}\n")
            self.out.flush()


class Direction:
    def __init__(
        self,
        src: socket.socket,
        dst: socket.socket,
        delay: float,
        cap: int,
        seen: Callable[[int], None],
    ) -> None:
        self.src, self.dst, self.delay, self.cap = src, dst, delay, cap
        self.seen = seen
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.cv = threading.Condition()
        self.failed = False

    def read(self) -> None:
        try:
            while True:
                try:
                    data = self.src.recv(CHUNK)
                except OSError:
                    data = b""
                if data:
                    self.seen(len(data))
                with self.cv:
                    while self.queued > self.cap and not self.failed:
                        self.cv.wait()
                    self.queue.append((time.monotonic() + self.delay, data))
                    self.queued += len(data)
                    self.cv.notify_all()
                if not data:
                    return
        finally:
            with self.cv:
                self.cv.notify_all()

    def write(self) -> None:
        try:
            while True:
                with self.cv:
                    while not self.queue:
                        self.cv.wait()
                    due = self.queue[0][0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                # everything already due goes out in one write
                now = time.monotonic()
                parts: list[bytes] = []
                eof = False
                with self.cv:
                    while self.queue and self.queue[0][0] <= now:
                        _, data = self.queue.popleft()
                        if not data:
                            eof = True
                            break
                        parts.append(data)
                        self.queued -= len(data)
                    self.cv.notify_all()
                if parts:
                    self.dst.sendall(parts[0] if len(parts) == 1 else b"".join(parts))
                if eof:
                    with contextlib.suppress(OSError):
                        self.dst.shutdown(socket.SHUT_WR)
                    return
        except OSError:
            with self.cv:
                self.failed = True
                self.cv.notify_all()
            for sock in (self.src, self.dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def handle(
    client: socket.socket, target: tuple[str, int], delay: float, cap: int, trace: Trace
) -> None:
    conn = next(trace.ids)
    try:
        upstream = socket.create_connection(target)
    except OSError:
        client.close()
        return
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threads = []
    for src, dst, way in ((client, upstream, ">"), (upstream, client, "<")):
        direction = Direction(src, dst, delay, cap, functools.partial(trace.seen, conn, way))
        threads += [
            threading.Thread(target=direction.read, daemon=True),
            threading.Thread(target=direction.write, daemon=True),
        ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sock in (client, upstream):
        with contextlib.suppress(OSError):
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--delay", type=float, default=0.025, help="seconds, each way")
    parser.add_argument("--cap", type=int, default=64 << 20, help="max queued bytes per direction")
    parser.add_argument("--trace", help="write one line per chunk read to this file")
    args = parser.parse_args()
    target = ("127.0.0.1", args.target)
    trace = Trace(open(args.trace, "a") if args.trace else None)  # noqa: SIM115 (lives as long as we do)
    serve_forever(lambda conn: handle(conn, target, args.delay, args.cap, trace))


if __name__ == "__main__":
    main()
