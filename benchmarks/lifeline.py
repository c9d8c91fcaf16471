"""Helpers shared by the benchmark's child processes: die with the parent, report a port, serve."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Callable


def when_parent_goes(action: Callable[[], object]) -> None:
    """Call `action` when stdin reaches EOF: the harness holds the pipe's other end, so its death,
    even by SIGKILL, reaches this process too."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        action()

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def exit_when_parent_goes() -> None:
    """Exit (hard) when the harness goes."""
    when_parent_goes(lambda: os._exit(0))


def announce(**fields: object) -> None:
    """One JSON line on stdout: how the harness learns a child's port (and anything else)."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def serve_forever(handle: Callable[[socket.socket], object]) -> None:
    """Listen on a free 127.0.0.1 port, announce it, and run `handle(conn)` on a thread of its own
    for every connection, until the harness goes."""
    exit_when_parent_goes()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    announce(port=listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
