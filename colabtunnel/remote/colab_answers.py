"""The HTTP requests of the Colab probe, made on the host beside Jupyter, answers recorded.

Host code (Python 3.7+), inlined into wait.py. The laptop sends the requests
(colab_calls.HOST_SIDE, without the token: it is added here from JUPYTER_TOKEN) and judges the
answers exactly as it judges answers through the tunnel (probe.run_probe_on_answers). Here they
cost no round trip of the SSH link each: a 100 ms link made them a second of `up`.
"""

import base64
import http.client
import json
import os
import socket
import urllib.parse
import uuid
from typing import Any, Dict, List

BODY_LIMIT = 1 << 20


def answer(port: int, token: str, request: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    # One request as requests.Session.request() sends it for the probe: no redirects followed.
    path = "/" + request["path"]
    if request["token"]:
        path += "?" + urllib.parse.urlencode({"token": token})
    headers = dict(request["headers"])
    body = request["body"]
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(request["method"], path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read(BODY_LIMIT)
        return {
            "status": resp.status,
            "headers": resp.getheaders(),
            "body": data.decode("utf-8", "replace"),
        }
    except (OSError, http.client.HTTPException) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def answers(
    port: int, token: str, requests: List[Dict[str, Any]], timeout: float = 30.0
) -> Dict[str, Any]:
    recorded = {}
    for request in requests:
        recorded[request["key"]] = answer(port, token, request, timeout)
        if request["method"] == "POST" and request["path"] == "api/kernels":
            wait_until_started(port, token, recorded[request["key"]], timeout)
    return recorded


def wait_until_started(port: int, token: str, created: Dict[str, Any], timeout: float) -> None:
    # The kernel just created is still starting. A websocket that reaches it then (the laptop's,
    # a moment later) loses jupyter_server's first kernel_info nudge to the kernel's start-up and
    # waits half a second for the next one; one that arrives once it runs does not. Jupyter
    # accepts a websocket only once the kernel answered kernel_info: open one here, wait for
    # that answer, close it.
    try:
        kernel_id = json.loads(created["body"])["id"]
    except (KeyError, TypeError, ValueError):
        return  # no kernel: the kernel-start check says why
    query = urllib.parse.urlencode({"session_id": uuid.uuid4().hex})
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (
        f"GET /api/kernels/{urllib.parse.quote(str(kernel_id))}/channels?{query} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAuthorization: token {token}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(upgrade.encode())
            sock.recv(1024)  # "101 Switching Protocols", once the kernel has answered
    except OSError:
        pass  # the kernel's check through the tunnel finds what is wrong
