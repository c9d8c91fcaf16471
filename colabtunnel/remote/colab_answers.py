"""The HTTP requests of the Colab probe, made on the host beside Jupyter, answers recorded.

Host code (Python 3.7+), inlined into wait.py. The laptop sends the requests (probe.HOST_SIDE,
without the token: it is added here from JUPYTER_TOKEN) and judges the answers exactly as it
judges answers through the tunnel (probe.run_probe_on_answers). Here they cost no round trip of
the SSH link each: a 100 ms link made them a second of `up`.
"""

import http.client
import urllib.parse
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
    return {request["key"]: answer(port, token, request, timeout) for request in requests}
