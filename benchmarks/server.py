"""The benchmark's test server ("Jupyter" stand-in): a TCP server with a one-byte protocol.

On accept it sends b"H" (so a client knows the whole path, tunnel included, is up), then reads a
mode byte:

  b"D" + u64 n   download: sends n bytes, then half-closes
  b"U" + u64 n   upload: reads n bytes, then answers b"K"
  b"P" + u32 m   ping-pong: echoes m-byte messages until EOF

Run: python -m benchmarks.server  (prints {"port": N}; exits when stdin closes)
"""

from __future__ import annotations

import contextlib
import socket
import struct

from benchmarks.lifeline import serve_forever

BLOCK = 1 << 20
PAYLOAD = memoryview(bytes(range(256)) * (BLOCK // 256))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise EOFError("connection closed early")
        got += k
    return bytes(buf)


def serve(conn: socket.socket) -> None:
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"H")
        mode = recv_exact(conn, 1)
        if mode == b"D":
            (n,) = struct.unpack("!Q", recv_exact(conn, 8))
            while n > 0:
                k = min(n, BLOCK)
                conn.sendall(PAYLOAD[:k])
                n -= k
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
        elif mode == b"U":
            (n,) = struct.unpack("!Q", recv_exact(conn, 8))
            buf = memoryview(bytearray(BLOCK))
            while n > 0:
                k = conn.recv_into(buf, min(n, BLOCK))
                if not k:
                    raise EOFError
                n -= k
            conn.sendall(b"K")
            while conn.recv(65536):
                pass
        elif mode == b"P":
            (m,) = struct.unpack("!I", recv_exact(conn, 4))
            buf = bytearray(m)
            view = memoryview(buf)
            while True:
                got = 0
                while got < m:
                    k = conn.recv_into(view[got:])
                    if not k:
                        return
                    got += k
                conn.sendall(buf)
    except (OSError, EOFError):
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.close()


def main() -> None:
    serve_forever(serve)


if __name__ == "__main__":
    main()
