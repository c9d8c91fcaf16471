"""Helpers shared by the benchmark's child processes: die with the parent, report a port."""

from __future__ import annotations

import json
import os
import sys
import threading


def exit_when_parent_goes() -> None:
    """Exit (hard) when stdin reaches EOF: the harness holds the pipe's other end, so its death,
    even by SIGKILL, ends this process too."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def announce(**fields: object) -> None:
    """One JSON line on stdout: how the harness learns a child's port (and anything else)."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()
