"""The SSH socket read in large pieces: what paramiko asks for, in order, to the last byte."""

from __future__ import annotations

import socket

from colabtunnel.readahead import READ_SIZE, ReadAheadSocket


def test_reads_hand_out_exactly_what_arrived_then_eof() -> None:
    left, right = socket.socketpair()
    reader = ReadAheadSocket(left)
    burst = bytes(range(256)) * 9  # several "packets" in one burst
    right.sendall(burst)
    got = b""
    for size in (16, 100, 1000, 500, 10_000):  # header-sized and body-sized asks
        got += reader.recv(size)
    assert got == burst
    right.sendall(b"x" * (READ_SIZE + 10))  # more than one read-ahead
    right.close()
    rest = b""
    while chunk := reader.recv(4096):
        rest += chunk
    assert rest == b"x" * (READ_SIZE + 10)
    assert reader.recv(16) == b""
    assert reader.fileno() == left.fileno()  # everything else is the socket's own
    left.close()


def test_one_system_call_serves_a_whole_burst() -> None:
    left, right = socket.socketpair()
    calls = []

    class Counting:
        def recv_into(self, view: memoryview) -> int:
            calls.append(len(view))
            return left.recv_into(view)

    reader = ReadAheadSocket(Counting())  # type: ignore[arg-type]
    right.sendall(b"a" * 16 + b"b" * 48 + b"c" * 16 + b"d" * 48)  # two small packets
    parts = [reader.recv(16), reader.recv(48), reader.recv(16), reader.recv(48)]
    assert parts == [b"a" * 16, b"b" * 48, b"c" * 16, b"d" * 48]
    assert len(calls) == 1
    left.close()
    right.close()
