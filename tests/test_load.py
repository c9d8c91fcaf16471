"""Load through the real tunnel (real sshd, real Jupyter, the real background keeper from `up`):
concurrency, a large byte-exact download, no fd/thread leak in the keeper, half-close.

Each test brings its tunnel up with `up gpu --json`; the `env` fixture's teardown runs `down` and
checks that nothing was left running.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import PROFILE, Env
from tests.load_helpers import (
    KernelSocket,
    ReadToEofServer,
    Up,
    baseline,
    bring_up,
    fd_count,
    json_ok,
    recv_until_eof,
    session,
    settle,
    split_http,
    thread_count,
)

pytestmark = pytest.mark.timeout(120)

HTTP_REQUESTS = 50
KERNELS = 5
BIG_FILE_MB = 200
SEQUENTIAL_CONNECTIONS = 500
SLACK = 2  # allowed drift of the keeper's fd and thread counts


def remote_file(env: Env, size: int, chunk: int = 4 << 20) -> tuple[Path, str]:
    """A random file of `size` bytes in the remote HOME (Jupyter's root dir); its sha256."""
    assert env.sshd is not None
    path = env.sshd.remote_home / f"load-{uuid.uuid4().hex[:8]}.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(chunk, left))
            digest.update(block)
            fh.write(block)
            left -= len(block)
    return path, digest.hexdigest()


@pytest.fixture
def big_file(env: Env) -> Iterator[tuple[Path, str]]:
    path, digest = remote_file(env, BIG_FILE_MB << 20)
    yield path, digest
    path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------


def _http_task(up: Up, n: int, start: threading.Barrier) -> str:
    """One Colab-style request on its own connection (so 50 channels are open at once)."""
    start.wait(30)
    with session() as s:
        if n % 2:
            data = json_ok(s.get(f"{up.base}/api/kernelspecs", params=up.params, timeout=60))
            assert data["default"] in data["kernelspecs"], data
            return "kernelspecs"
        data = json_ok(s.get(f"{up.base}/api/contents", params=up.params, timeout=60))
        assert data["type"] == "directory", data
        return "contents"


def test_concurrent_http_and_kernel_websockets(env: Env) -> None:
    up = bring_up(env)
    with session() as s:
        kernel_ids = []
        for _ in range(KERNELS):
            resp = s.post(f"{up.base}/api/kernels", params=up.params, json={}, timeout=60)
            assert resp.status_code == 201, resp.text
            kernel_ids.append(resp.json()["id"])
    # All five websockets are open (as Colab keeps its kernel socket open) while the 50 requests
    # run: a forwarder that served connections one at a time would hang here.
    sockets = [KernelSocket(up, kernel_id) for kernel_id in kernel_ids]
    try:
        start = threading.Barrier(HTTP_REQUESTS + KERNELS)

        def execute(ks: KernelSocket, i: int) -> str:
            start.wait(30)
            return ks.run(f"i = {i}\nprint(i*i)")

        started = time.monotonic()
        with ThreadPoolExecutor(HTTP_REQUESTS + KERNELS) as pool:
            http = [pool.submit(_http_task, up, n, start) for n in range(HTTP_REQUESTS)]
            ws = [pool.submit(execute, ks, i) for i, ks in enumerate(sockets, start=11)]
            answers = [f.result(timeout=90) for f in http]
            outputs = [f.result(timeout=90) for f in ws]
        elapsed = time.monotonic() - started
    finally:
        for ks in sockets:
            ks.close()
    assert sorted(set(answers)) == ["contents", "kernelspecs"]
    assert len(answers) == HTTP_REQUESTS
    assert outputs == [f"{i * i}\n" for i in range(11, 11 + KERNELS)]
    print(f"\n{HTTP_REQUESTS} requests + {KERNELS} kernel executions at once in {elapsed:.1f} s")
    # all kernels still there (nothing crashed under load), then removed
    with session() as s:
        listed = {k["id"] for k in json_ok(s.get(f"{up.base}/api/kernels", params=up.params))}
        assert set(kernel_ids) <= listed
        for kernel_id in kernel_ids:
            resp = s.delete(f"{up.base}/api/kernels/{kernel_id}", params=up.params, timeout=60)
            assert resp.status_code == 204


def test_200mb_file_arrives_byte_exact(env: Env, big_file: tuple[Path, str]) -> None:
    path, expected = big_file
    up = bring_up(env)
    digest = hashlib.sha256()
    size = 0
    started = time.monotonic()
    with (
        session() as s,
        s.get(f"{up.base}/files/{path.name}", params=up.params, stream=True, timeout=(10, 20)) as r,
    ):
        assert r.status_code == 200, r.status_code
        assert int(r.headers["Content-Length"]) == BIG_FILE_MB << 20
        for block in r.iter_content(1 << 20):
            digest.update(block)
            size += len(block)
    elapsed = time.monotonic() - started
    assert size == BIG_FILE_MB << 20
    assert digest.hexdigest() == expected
    print(f"\n{BIG_FILE_MB} MB in {elapsed:.1f} s: {BIG_FILE_MB / elapsed:.1f} MB/s")


def _status_once(up: Up) -> None:
    """A full request/response on a connection of its own, closed afterwards."""
    conn = http.client.HTTPConnection("127.0.0.1", up.local_port, timeout=30)
    try:
        conn.request("GET", f"/api/status?token={up.token}", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, resp.status
        assert "started" in json.loads(body)
    finally:
        conn.close()


def test_keeper_fds_and_threads_return_after_500_connections(env: Env) -> None:
    up = bring_up(env)
    for _ in range(5):  # warm up: anything created lazily on the first forwarded connection
        _status_once(up)
    fds_before = baseline(lambda: fd_count(up.keeper_pid))
    threads_before = baseline(lambda: thread_count(up.keeper_pid))
    started = time.monotonic()
    for _ in range(SEQUENTIAL_CONNECTIONS):
        _status_once(up)
    elapsed = time.monotonic() - started
    fds_peak = fd_count(up.keeper_pid)
    # wait (bounded) for the exact resting value, then allow the slack
    fds_after = settle(lambda: fd_count(up.keeper_pid), fds_before, 0, timeout=5)
    threads_after = settle(lambda: thread_count(up.keeper_pid), threads_before, 0, timeout=5)
    print(
        f"\n{SEQUENTIAL_CONNECTIONS} connections in {elapsed:.1f} s; keeper fds "
        f"{fds_before} -> {fds_peak} right after -> {fds_after} settled; threads "
        f"{threads_before} -> {threads_after}"
    )
    assert abs(fds_after - fds_before) <= SLACK, (fds_before, fds_after)
    assert abs(threads_after - threads_before) <= SLACK, (threads_before, threads_after)


def _half_closed_get(
    port: int, target: str, *, wait_for_answer: bool, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send a whole HTTP/1.0 request, shut the write side, read the answer to EOF.

    With `wait_for_answer`, the write side is shut only once the first byte of the answer is
    back (see the Jupyter test below for why)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        sock.sendall(head.encode("ascii") + b"\r\n" + body)
        first = sock.recv(1) if wait_for_answer else b""
        sock.shutdown(socket.SHUT_WR)
        return split_http(first + recv_until_eof(sock))


def test_half_closed_client_gets_whole_jupyter_response_through_keeper(env: Env) -> None:
    """The real keeper: after the client shuts its write side, the rest of Jupyter's answer
    still comes back, and the end of the answer reaches the client as EOF.

    Jupyter (Tornado) itself drops a request whose client half-closes before the answer is
    written: measured straight to Jupyter, without any tunnel, GET /api/kernelspecs with an
    immediate SHUT_WR got an empty answer 30 times out of 30. So the client here shuts its write
    side once the answer has begun; the test below sends the FIN immediately, to a server that
    needs it."""
    up = bring_up(env)
    for target in ("/api/status", "/api/kernelspecs", "/api/contents"):
        status, headers, body = _half_closed_get(
            up.local_port, f"{target}?token={up.token}", wait_for_answer=True
        )
        assert status == 200, (target, status)
        assert len(body) == int(headers["content-length"]), target
        assert json.loads(body), target


def test_half_close_reaches_the_server_over_real_ssh(env: Env) -> None:
    """An immediate half-close over the path the keeper uses (colabtunnel's own connect to the
    real sshd, Connection.open_forward, the Forwarder): the server sees the request end, and its
    whole 8 MB answer arrives byte-exact."""
    from colabtunnel.profiles import get_profile
    from colabtunnel.ssh import connection, sshtarget
    from colabtunnel.ssh.forwarder import Forwarder, bind_listener

    answer = os.urandom(8 << 20)
    server = ReadToEofServer(answer)
    profile = get_profile(PROFILE)
    conn = connection.connect(sshtarget.resolve(profile), profile.name)
    fwd = Forwarder(
        bind_listener(0), lambda peer: conn.open_forward(("127.0.0.1", server.port), peer)
    ).start()
    try:
        request_body = os.urandom(100_000)
        for _ in range(3):
            status, headers, body = _half_closed_get(
                fwd.port, "/upload", wait_for_answer=False, body=request_body
            )
            assert status == 200
            assert len(body) == len(answer)
            assert hashlib.sha256(body).digest() == hashlib.sha256(answer).digest()
            sent = hashlib.sha256(
                f"GET /upload HTTP/1.0\r\nHost: 127.0.0.1:{fwd.port}\r\n"
                f"Content-Length: {len(request_body)}\r\n\r\n".encode("ascii")
                + request_body
            ).hexdigest()
            assert headers["x-request-sha256"] == sent
        assert settle(lambda: fwd.active_connections, 0, 0, timeout=5) == 0
    finally:
        fwd.stop()
        conn.close()
        server.close()
