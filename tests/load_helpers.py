"""Helpers for the load tests: a tunnel brought up by `up --json`, Colab-style clients through it,
and the keeper's resource counts read from /proc."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from colabtunnel.jupyter.colab_calls import COLAB_ORIGIN, execute_request
from colabtunnel.jupyter.probe_transport import Execution
from tests.conftest import PROFILE, Env
from tests.tcp_servers import TcpServer


@dataclass(frozen=True)
class Up:
    """What `up --json` said about the tunnel."""

    local_port: int
    remote_port: int
    keeper_pid: int
    token: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def params(self) -> dict[str, str]:
        return {"token": self.token}


def bring_up(env: Env) -> Up:
    done = env.run("up", PROFILE, "--json")
    assert done.returncode == 0, f"up failed: {done.stdout!r} {done.stderr!r}"
    tunnel = json.loads(done.stdout)["tunnel"]
    token = tunnel["url"].split("token=", 1)[1]
    return Up(
        int(tunnel["local_port"]), int(tunnel["remote_port"]), int(tunnel["keeper_pid"]), token
    )


def session() -> requests.Session:
    """A requests session that talks straight to 127.0.0.1 (no proxy from the environment),
    carrying Colab's Origin like the Colab page does."""
    s = requests.Session()
    s.trust_env = False
    s.headers["Origin"] = COLAB_ORIGIN
    return s


class KernelSocket:
    """A kernel's websocket through the tunnel, opened the way Colab's page opens it.

    Messages are built by the probe's execute_request and replies read by its Execution, so the
    protocol is the one colabtunnel itself speaks."""

    def __init__(self, up: Up, kernel_id: str, timeout: float = 60) -> None:
        import websocket

        self.session_id = uuid.uuid4().hex
        url = (
            f"ws://127.0.0.1:{up.local_port}/api/kernels/{kernel_id}/channels"
            f"?session_id={self.session_id}&token={up.token}"
        )
        # Connect the TCP socket ourselves so websocket-client never routes via an http_proxy.
        sock = socket.create_connection(("127.0.0.1", up.local_port), timeout=timeout)
        self.ws = websocket.create_connection(
            url, origin=COLAB_ORIGIN, timeout=timeout, socket=sock
        )

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute `code`; return its stdout."""
        msg = execute_request(code, self.session_id)
        msg_id = msg["header"]["msg_id"]
        result = Execution()
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while not (result.idle and result.reply_status is not None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{code!r}: no reply within {timeout} s ({result})")
            self.ws.settimeout(remaining)
            frame = self.ws.recv()
            if isinstance(frame, str) and frame:
                result.feed(json.loads(frame), msg_id)
        assert result.error is None, f"{code!r} failed: {result.error}"
        assert result.reply_status == "ok", f"{code!r}: reply status {result.reply_status}"
        return result.stdout

    def close(self) -> None:
        self.ws.close()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def settle(measure: Callable[[], int], target: int, slack: int, timeout: float = 15) -> int:
    """Poll `measure` until it is within `slack` of `target` (or `timeout` passes); return the
    last value. Lets forwarder threads and channels finish closing without a fixed sleep."""
    deadline = time.monotonic() + timeout
    value = measure()
    while abs(value - target) > slack and time.monotonic() < deadline:
        time.sleep(0.1)
        value = measure()
    return value


def baseline(measure: Callable[[], int], window: float = 1.5, interval: float = 0.05) -> int:
    """The lowest value `measure` returns over `window` seconds: the keeper's resting count, not
    one caught during its periodic heartbeat/remote check (which briefly holds ~3 fds and a
    thread)."""
    deadline = time.monotonic() + window
    low = measure()
    while time.monotonic() < deadline:
        time.sleep(interval)
        low = min(low, measure())
    return low


def recv_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def split_http(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of headers in {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def json_ok(resp: requests.Response) -> Any:
    where = f"{resp.request.method} {resp.url.split('?')[0]}"
    assert resp.status_code == 200, f"{where} -> {resp.status_code}"
    assert resp.headers.get("Access-Control-Allow-Origin") == COLAB_ORIGIN
    return resp.json()


class ReadToEofServer:
    """A plain HTTP/1.0 server on the "remote" loopback that reads the request to EOF before it
    answers (so it only answers if the client's half-close reaches it), with `body` and the
    request's sha256 in a header. Unlike Jupyter (Tornado), it does not abandon its answer when
    it sees the client's FIN."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._server = TcpServer(self._answer)
        self.port = self._server.port
        self.close = self._server.close

    def _answer(self, conn: socket.socket) -> None:
        request = recv_until_eof(conn)
        digest = hashlib.sha256(request).hexdigest()
        conn.sendall(
            f"HTTP/1.0 200 OK\r\nContent-Length: {len(self.body)}\r\n"
            f"X-Request-Sha256: {digest}\r\n\r\n".encode("ascii")
        )
        conn.sendall(self.body)
