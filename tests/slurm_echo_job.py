#!/usr/bin/python3
"""Batch script for tests/test_slurm_cluster.py (sent on sbatch's stdin): a TCP server on the
compute node's loopback, standing in for the Jupyter a Slurm job will run.

Binds 127.0.0.1 on a free port, then writes the port to ~/echo-<job id>.port (atomically, so a
reader never sees half a number) and answers every connection with `hello from <hostname>` and
then an echo of whatever it is sent.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path


def serve(conn: socket.socket) -> None:
    with conn:
        conn.sendall(f"hello from {socket.gethostname()}\n".encode())
        while data := conn.recv(65536):
            conn.sendall(data)


def main() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port_file = Path.home() / f"echo-{os.environ['SLURM_JOB_ID']}.port"
    partial = port_file.with_suffix(".tmp")
    partial.write_text(str(server.getsockname()[1]))
    partial.replace(port_file)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
