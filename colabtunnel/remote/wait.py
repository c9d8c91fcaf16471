"""Wait for the Jupyter just started to answer, then prove it serves Colab's way, on the host.

Host code (Python 3.7+), joined after start.sh: python - PID PORT TIMEOUT REQUESTS, with
JUPYTER_TOKEN in its environment. Plain HTTP, the API at the root, auth enforced: each way that can
fail is a stage of its own, and only a JSON answer from an API that needs auth means "answered
without a token". Then the Colab probe's own requests (REQUESTS, a JSON list:
colab_calls.HOST_SIDE), whose answers the laptop judges. Prints one line
`__COLABTUNNEL_RESULT__ {json}`.
"""

import http.client
import json
import os
import socket
import sys
import time
from typing import Any, Dict, List, NoReturn, Optional, Set, Tuple

from colabtunnel.remote.alive import alive  # host: inline
from colabtunnel.remote.colab_answers import answers  # host: inline

pid, port, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
requests = json.loads(sys.argv[4])
token = os.environ["JUPYTER_TOKEN"]
Answer = Tuple[int, str, str, bytes]


def get(path: str, auth: bool = False) -> Answer:
    # (status, content type, Location, body); redirects are not followed.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": "token " + token} if auth else {})
        resp = conn.getresponse()
        return (
            resp.status,
            resp.getheader("Content-Type") or "",
            resp.getheader("Location") or "",
            resp.read(65536),
        )
    finally:
        conn.close()


def api_json(answer: Answer) -> Any:
    status, kind, _, body = answer
    if not (200 <= status < 300 and "json" in kind):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def ours() -> Optional[bool]:
    # Does our Jupyter hold the listening socket? An answer from whatever else took the port
    # (Jupyter then exits: port_retries=0) says nothing about our server. None: cannot tell.
    # PID or one of its descendants: an image's own start-up (start = "image") is started by
    # the container's init, PID 1, which never holds the socket itself.
    try:
        sockets = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as fh:
                for row in fh.readlines()[1:]:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        sockets.add(f"socket:[{fields[9]}]")
    except OSError:
        return None  # no /proc (not Linux)
    try:
        if holds(pid, sockets):
            return True
    except FileNotFoundError:
        # Gone while the other server answered (it lost the port and exited): not ours, and
        # the loop's next alive() says "exited" rather than judging the other server's answers.
        return False
    except OSError:
        return None
    for child in descendants(pid):
        try:
            if holds(child, sockets):
                return True
        except OSError:
            continue  # ended, or not ours to read
    return False


def holds(process: int, sockets: Set[str]) -> bool:
    fds = f"/proc/{process}/fd"
    return any(link(os.path.join(fds, fd)) in sockets for fd in os.listdir(fds))


def descendants(root: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(name))
    found: List[int] = []
    todo = list(children.get(root, []))
    while todo:
        process = todo.pop()
        found.append(process)
        todo.extend(children.get(process, []))
    return found


def link(path: str) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None  # the fd closed between listdir and readlink


def speaks_tls() -> bool:
    # Jupyter with a certfile drops a plain HTTP request unanswered (its log: "SSL Error ... http
    # request"); a TLS handshake tells that apart from a server still starting.
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            context.wrap_socket(raw).close()
        return True
    except OSError:
        return False


def served_base_url() -> Optional[str]:
    # Where Jupyter says it serves: its runtime file (jpserver-PID.json; nbserver-PID.json on
    # Notebook 6). Only base_url is read from it.
    try:
        from jupyter_core.paths import jupyter_runtime_dir  # type: ignore[import-not-found,unused-ignore]

        for name in (f"jpserver-{pid}.json", f"nbserver-{pid}.json"):
            path = os.path.join(jupyter_runtime_dir(), name)
            if os.path.exists(path):
                with open(path) as fh:
                    base: Optional[str] = json.load(fh).get("base_url")
                    return base
    except Exception:
        pass
    return None


def result(**kw: Any) -> NoReturn:
    kw["after_s"] = round(time.monotonic() - start, 2)
    kw["pid"] = pid
    print("\n__COLABTUNNEL_RESULT__ " + json.dumps(kw))
    sys.exit(0)


start = time.monotonic()
while True:
    if not alive(pid):
        result(ok=False, stage="exited")
    try:
        api = get("/api")
        if ours() is not False:
            break
    except ConnectionRefusedError:
        pass
    except (http.client.HTTPException, ConnectionError):
        if ours() is not False and speaks_tls():  # accepted, then closed without an answer
            result(ok=False, stage="https")
    except OSError:
        pass
    if time.monotonic() - start > timeout:
        result(ok=False, stage="timeout")
    time.sleep(0.02)  # fixed and short (a refused connect costs ~1 ms): a back-off delays the URL
ready_s = time.monotonic() - start
info = api_json(api)
if not (isinstance(info, dict) and info.get("version")):
    status, kind, location, _ = api
    if status == 404 or 300 <= status < 400:
        result(
            ok=False, stage="not-root", status=status, location=location, base_url=served_base_url()
        )
    result(ok=False, stage="not-jupyter", status=status, content_type=kind)
anonymous, authed = get("/api/kernelspecs"), get("/api/kernelspecs", auth=True)
if api_json(anonymous) is not None:
    result(ok=False, stage="auth-disabled", status=anonymous[0])
if anonymous[0] not in (401, 403):
    result(ok=False, stage="auth-unclear", status=anonymous[0], content_type=anonymous[1])
if authed[0] in (401, 403):
    result(ok=False, stage="token-rejected", status=authed[0])
if api_json(authed) is None:
    result(ok=False, stage="not-jupyter", status=authed[0], content_type=authed[1])
result(ok=True, ready_s=ready_s, colab=answers(port, token, requests))
