"""colabtunnel's forwarder in a process of its own, on the real code path.

    python -m benchmarks.forwarder_proc PROFILE REMOTE_PORT

Resolves PROFILE (profiles.toml + ssh_config of the HOME/COLABTUNNEL_HOME it is given) with
`colabtunnel.ssh.sshtarget.resolve`, logs in with `colabtunnel.ssh.connection.connect`, and serves
`colabtunnel.ssh.forwarder.Forwarder` on a free 127.0.0.1 port forwarding to 127.0.0.1:REMOTE_PORT on
the host. Prints one JSON line ({"port": ..., "cipher": ...}) and serves until stdin closes or
SIGTERM.

Experiments, in this process only (colabtunnel/ is not touched):
  BENCH_WINDOW=8M     the SSH channel window this client advertises (paramiko default 2M)
  BENCH_PACKET=64K    the max packet size it advertises (paramiko default 32K)
  BENCH_CIPHER=NAME   put this cipher first in paramiko's preference list
  BENCH_TUNE=0        colabtunnel's fixed window (no growth to the bandwidth-delay product)
  BENCH_DIRECT=0      no direct delivery (colabtunnel/ssh/delivery.py): every byte from the server
                      goes through paramiko's buffer and the pump thread
  BENCH_HOPWINDOW=0   a jump host's channel (which carries the target's session) keeps
                      paramiko's fixed 2 MiB window
  BENCH_TRACE_WINDOW=1  log every window growth (time, channel, new window, rate) to stderr
  BENCH_WINDOW_RULE=F:U:K  colabtunnel/ssh/window.py's FILLED, UNDERUSED, KEEP (U=0: never
                      takes a window back)
  BENCH_RAMP=NAME     another window growth: "rate"
                      (to 2 × rate × RTT, steps of 25 % or to the cap), "nocap" (issue 6's: the
                      same, but stops short of the cap when the last step is under 25 %)
  BENCH_PIPE=fast     replace paramiko's BufferedPipe (whose read() is O(bytes buffered): it deletes
                      from the front of one array) with one that keeps a list of chunks
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

from benchmarks.lifeline import announce, when_parent_goes


def size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def patch_cipher(name: str) -> None:
    import paramiko

    prefs = paramiko.Transport._preferred_ciphers
    if name not in prefs:
        raise SystemExit(f"BENCH_CIPHER={name}: paramiko offers {', '.join(prefs)}")
    paramiko.Transport._preferred_ciphers = (name, *(c for c in prefs if c != name))


def patch_pipe() -> None:
    """A BufferedPipe with O(chunk) reads: a deque of chunks instead of one array trimmed at the
    front. Same interface and semantics as paramiko.buffered_pipe.BufferedPipe."""
    import collections
    import time

    from paramiko import buffered_pipe, channel

    class ChunkPipe(buffered_pipe.BufferedPipe):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._chunks: collections.deque[bytes] = collections.deque()
            self._size = 0

        def _buffer_frombytes(self, data: bytes) -> None:
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)

        def read_ready(self) -> bool:
            with self._lock:
                return self._size > 0

        def __len__(self) -> int:
            with self._lock:
                return self._size

        def empty(self) -> bytes:
            with self._lock:
                out = b"".join(self._chunks)
                self._chunks.clear()
                self._size = 0
                if self._event is not None and not self._closed:
                    self._event.clear()
                return out

        def read(self, nbytes: int, timeout: float | None = None) -> bytes:
            with self._lock:
                if self._size == 0:
                    if self._closed:
                        return b""
                    if timeout == 0.0:
                        raise buffered_pipe.PipeTimeout()
                    while self._size == 0 and not self._closed:
                        then = time.time()
                        self._cv.wait(timeout)
                        if timeout is not None:
                            timeout -= time.time() - then
                            if timeout <= 0.0:
                                raise buffered_pipe.PipeTimeout()
                parts = []
                want = nbytes
                while self._chunks and want > 0:
                    head = self._chunks[0]
                    if len(head) <= want:
                        parts.append(self._chunks.popleft())
                        want -= len(head)
                    else:
                        parts.append(head[:want])
                        self._chunks[0] = head[want:]
                        want = 0
                out = parts[0] if len(parts) == 1 else b"".join(parts)
                self._size -= len(out)
                if self._size == 0 and self._event is not None and not self._closed:
                    self._event.clear()
                return out

    # set_event() reads len(self._buffer): keep that array empty and answer from _size instead
    def set_event(self: ChunkPipe, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size > 0:
                event.set()
            else:
                event.clear()

    ChunkPipe.set_event = set_event
    channel.BufferedPipe = ChunkPipe


def trace_window() -> None:
    import time

    from colabtunnel.ssh import window

    adapt = window.TunedChannel._adapt

    def traced(self: window.TunedChannel, rate: float) -> None:
        before = self.window
        adapt(self, rate)
        print(
            f"{time.monotonic():.3f} chan {self.channel.chanid} rate {rate / 1e6:.1f} MB/s "
            f"rtt {self.rtt_s() * 1000:.1f} ms window {before >> 10} -> {self.window >> 10} KiB "
            f"buffered {len(self.channel.in_buffer) >> 10} KiB",
            file=sys.stderr,
            flush=True,
        )

    window.TunedChannel._adapt = traced  # type: ignore[method-assign]


def patch_ramp(name: str) -> None:
    from colabtunnel.ssh import window

    def rate_based(self: window.TunedChannel, rate: float, to_cap: bool) -> None:
        want = min(window.MAX_WINDOW, int(window.GROWTH * rate * self.rtt_s()))
        small = want < self.window * 5 // 4 and (want < window.MAX_WINDOW or not to_cap)
        if want <= self.window or small or len(self.channel.in_buffer) > self.window // 4:
            return
        window.grow(self.channel, want - self.window)
        self.window = want

    ramps: dict[str, Callable[[window.TunedChannel, float], None]] = {
        "rate": lambda self, rate: rate_based(self, rate, True),
        "nocap": lambda self, rate: rate_based(self, rate, False),
    }
    if name not in ramps:
        raise SystemExit(f"BENCH_RAMP={name}: one of {', '.join(ramps)}")
    window.TunedChannel._adapt = ramps[name]  # type: ignore[method-assign]


def main() -> None:
    profile_name, remote_port = sys.argv[1], int(sys.argv[2])
    if os.environ.get("BENCH_RAMP"):
        patch_ramp(os.environ["BENCH_RAMP"])
    if os.environ.get("BENCH_WINDOW_RULE"):
        from colabtunnel.ssh import window

        rule = os.environ["BENCH_WINDOW_RULE"].split(":")
        window.FILLED, window.UNDERUSED, window.KEEP = (float(x) for x in rule)
    if os.environ.get("BENCH_HOPWINDOW") == "0":
        from colabtunnel.ssh import connection as connection_module

        walk = connection_module.walk

        def untuned_walk(*args: object, **kwargs: object) -> object:
            kwargs["link_rtt"] = None
            return walk(*args, **kwargs)  # type: ignore[arg-type]

        connection_module.walk = untuned_walk  # type: ignore[assignment]
    if os.environ.get("BENCH_TRACE_WINDOW"):
        trace_window()
    if os.environ.get("BENCH_CIPHER"):
        patch_cipher(os.environ["BENCH_CIPHER"])
    if os.environ.get("BENCH_PIPE") == "fast":
        patch_pipe()
    if os.environ.get("BENCH_DIRECT") == "0":
        from colabtunnel.ssh import delivery

        delivery.DONTWAIT = None

    from colabtunnel import profiles
    from colabtunnel.ssh import connection, forwarder, sshtarget
    from colabtunnel.ssh.credentials import Credentials

    profile = profiles.get_profile(profile_name)
    target = sshtarget.resolve(profile)
    conn = connection.connect(target, profile.name, creds=Credentials(profile.name))
    transport = conn.transport
    if os.environ.get("BENCH_WINDOW"):
        transport.default_window_size = size(os.environ["BENCH_WINDOW"])
    if os.environ.get("BENCH_PACKET"):
        transport.default_max_packet_size = size(os.environ["BENCH_PACKET"])
    # BENCH_TUNE=0: the fixed paramiko window, to measure what the adaptive window buys.
    tuned = os.environ.get("BENCH_TUNE", "1") != "0"
    opener = conn.open_tuned_forward if tuned else conn.open_forward
    fwd = forwarder.Forwarder(
        forwarder.bind_listener(0), lambda origin: opener(("127.0.0.1", remote_port), origin)
    ).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    when_parent_goes(stop.set)
    announce(
        port=fwd.port,
        cipher=transport.local_cipher,
        mac=transport.local_mac,
        window=transport.default_window_size,
        packet=transport.default_max_packet_size,
        pid=os.getpid(),
    )
    stop.wait()
    fwd.stop()
    conn.close()


if __name__ == "__main__":
    main()
