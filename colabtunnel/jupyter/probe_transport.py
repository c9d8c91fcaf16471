"""How a check reaches the server: HTTP through the URL on a session of the probe's own (or the
answer the host recorded beside Jupyter), and code run in a kernel over its websocket. No answer
is a TransportFailure; requests and websocket-client are imported only when used."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from colabtunnel.jupyter.colab_calls import FOREIGN_ORIGIN, Request, execute_request

if TYPE_CHECKING:
    import requests


class TransportFailure(Exception):
    """No answer to judge, with its problem id: no HTTP answer at all, or a kernel websocket that
    could not be opened or dropped."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


def split_base_url(base_url: str) -> tuple[str, str, str]:
    """(scheme, netloc, path) of base_url; path always ends with '/'. Raises ValueError if bad."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"base_url must be an http(s) URL like http://127.0.0.1:8888/: {base_url!r}"
        )
    path = parts.path or "/"
    if not path.endswith("/"):
        path += "/"
    return parts.scheme, parts.netloc, path


class Recorded:
    """An answer the host recorded (remote/colab_answers.py), read like a requests.Response."""

    def __init__(self, answer: dict[str, Any]) -> None:
        from requests.structures import CaseInsensitiveDict

        self.status_code = int(answer["status"])
        self.headers: Any = CaseInsensitiveDict(dict(answer["headers"]))
        self.text = str(answer["body"])

    def json(self) -> Any:
        return json.loads(self.text)


class HttpTransport:
    """The probe's HTTP to one Jupyter: `ask` sends a Request as Colab's page would, or reads what
    the host recorded for it when `answers` is given."""

    def __init__(
        self,
        base_url: str,
        token: str,
        origin: str,
        timeout: float,
        answers: dict[str, Any] | None = None,
    ) -> None:
        import requests

        self.requests = requests
        # Answers recorded on the host, by Request.key: asked there, not through the tunnel
        self.answers = answers
        self.scheme, self.netloc, self.path = split_base_url(base_url)
        self.token = token
        self.origin = origin
        self.timeout = timeout
        self.session = self._new_session()

    @property
    def public_url(self) -> str:
        return urlunsplit((self.scheme, self.netloc, self.path, "", ""))

    def _new_session(self) -> requests.Session:
        session = self.requests.Session()
        session.trust_env = False  # no proxies, no .netrc: talk to the tunnel directly
        session.headers["Origin"] = self.origin
        return session

    def url(self, api_path: str) -> str:
        return self.public_url + api_path

    def shown(self, api_path: str) -> str:
        """The request path as it appears in a detail: the URL path plus the API path."""
        return self.path + api_path

    def ask(self, req: Request) -> Any:
        """The answer to `req`: a requests.Response, or what the host recorded for it."""
        if self.answers is not None:
            return self._recorded(req)
        headers: dict[str, str | None] = dict(req.headers)
        if req.origin != "page":  # the session sends the page's Origin
            headers["Origin"] = FOREIGN_ORIGIN if req.origin == "foreign" else None
        # Without the token, a fresh session: a request with it may have set a login cookie.
        session = self.session if req.with_token else self._new_session()
        try:
            return self._send(req, session, headers)
        finally:
            if session is not self.session:
                session.close()

    def _send(self, req: Request, session: requests.Session, headers: dict[str, str | None]) -> Any:
        params = {"token": self.token} if req.with_token else {}
        try:
            return session.request(
                req.method,
                self.url(req.api_path),
                params=params,
                headers=headers,
                json={} if req.json_body else None,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except self.requests.Timeout as exc:
            raise TransportFailure(
                "timeout",
                f"{req.method} {self.shown(req.api_path)}: no answer within {self.timeout:g}s",
            ) from exc
        except self.requests.RequestException as exc:
            problem = "unreachable"
            if self._tls_instead(exc):
                problem = "https"
            raise TransportFailure(
                problem, f"{req.method} {self.shown(req.api_path)}: {reason(exc)}"
            ) from exc

    def _recorded(self, req: Request) -> Recorded:
        assert self.answers is not None
        answer = self.answers.get(req.key)
        if not answer or "status" not in answer:
            why = answer.get("error", "no answer") if answer else "not asked"
            raise TransportFailure(
                "unreachable", f"{req.method} {self.shown(req.api_path)} on the host: {why}"
            )
        return Recorded(answer)

    def _tls_instead(self, exc: Exception) -> bool:
        """A connection accepted, then dropped without an answer, by a server that speaks TLS:
        Jupyter with a certfile does exactly that to a plain HTTP request."""
        dropped = isinstance(exc, self.requests.ConnectionError) and "refused" not in str(exc)
        return dropped and self.scheme == "http" and _speaks_tls(self.netloc, self.timeout)


@dataclass
class Execution:
    """What came back for one execute_request."""

    stdout: str = ""
    error: str | None = None
    reply_status: str | None = None
    idle: bool = False
    states: tuple[str, ...] = ()

    def feed(self, msg: dict[str, Any], msg_id: str) -> None:
        parent = msg.get("parent_header") or {}
        if parent.get("msg_id") != msg_id:
            return
        msg_type = msg.get("msg_type") or (msg.get("header") or {}).get("msg_type")
        content = msg.get("content") or {}
        if msg_type == "stream" and content.get("name") == "stdout":
            self.stdout += str(content.get("text", ""))
        elif msg_type == "error":
            self.error = f"{content.get('ename')}: {content.get('evalue')}"
        elif msg_type == "execute_reply":
            self.reply_status = str(content.get("status"))
            if content.get("status") == "error" and self.error is None:
                self.error = f"{content.get('ename')}: {content.get('evalue')}"
        elif msg_type == "status":
            state = str(content.get("execution_state"))
            self.states = (*self.states, state)
            if state == "idle":
                self.idle = True

    def done(self, expect: str) -> bool:
        return self.idle or (self.reply_status is not None and expect in self.stdout)


def run_code(
    http: HttpTransport, kernel_id: str, code: str, expect: str, deadline: float
) -> tuple[Execution, float]:
    """Run `code` in the kernel over its websocket, as Colab's page does, until it is done (or
    `deadline`): what came back and the seconds it took. Raises TransportFailure when the
    websocket cannot be opened or drops."""
    session_id = uuid.uuid4().hex
    ws = _open_channels(http, kernel_id, session_id, deadline)
    try:
        return _exchange(ws, code, expect, session_id, deadline)
    finally:
        # The answer is in: send the close frame, but do not wait a round trip for the
        # server's (websocket-client's close() waits up to 3 s for it by default).
        with contextlib.suppress(Exception):
            ws.close(timeout=0)


def _open_channels(http: HttpTransport, kernel_id: str, session_id: str, deadline: float) -> Any:
    import websocket

    ws_scheme = "wss" if http.scheme == "https" else "ws"
    ws_url = (
        f"{ws_scheme}://{http.netloc}{http.path}api/kernels/{kernel_id}/channels"
        f"?{urlencode({'session_id': session_id, 'token': http.token})}"
    )
    remaining = max(deadline - time.monotonic(), 1.0)
    options: dict[str, Any] = {"origin": http.origin, "timeout": remaining}
    try:
        if ws_scheme == "ws":
            # Connect the TCP socket ourselves: websocket-client would otherwise honour
            # http_proxy for 127.0.0.1 and never reach the tunnel.
            host = urlsplit(f"//{http.netloc}").hostname or "127.0.0.1"
            port = urlsplit(f"//{http.netloc}").port or 80
            options["socket"] = socket.create_connection((host, port), timeout=remaining)
        return websocket.create_connection(ws_url, **options)
    except websocket.WebSocketBadStatusException as exc:
        status = exc.status_code
        problem = "ws-forbidden" if status == 403 else "ws-failed"
        _close(options.get("socket"))
        raise TransportFailure(problem, f"websocket handshake -> {status}") from exc
    except (OSError, websocket.WebSocketException) as exc:
        _close(options.get("socket"))
        raise TransportFailure("ws-failed", f"websocket: {reason(exc)}") from exc


def _exchange(
    ws: Any, code: str, expect: str, session_id: str, deadline: float
) -> tuple[Execution, float]:
    import websocket

    msg = execute_request(code, session_id)
    msg_id = msg["header"]["msg_id"]
    result = Execution()
    started = time.monotonic()
    try:
        ws.send(json.dumps(msg))
        while not result.done(expect):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ws.settimeout(remaining)
            try:
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                break
            if not isinstance(frame, str) or not frame:
                continue  # binary frames carry buffers, never our stream output
            try:
                result.feed(json.loads(frame), msg_id)
            except (ValueError, AttributeError):
                continue
    except (OSError, websocket.WebSocketException) as exc:
        detail = f"websocket dropped after {time.monotonic() - started:.1f}s: {reason(exc)}"
        raise TransportFailure("ws-failed", detail) from exc
    return result, time.monotonic() - started


def _close(closable: Any) -> None:
    """Close a socket or websocket that may already be broken, ignoring errors."""
    if closable is None:
        return
    # Closing a broken connection must not mask the result.
    with contextlib.suppress(Exception):
        closable.close()


def reason(exc: BaseException) -> str:
    """The innermost useful message of a transport exception (connection refused, ...)."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return f"{type(exc).__name__}: {marker}"
    return f"{type(exc).__name__}: {text[:300]}"


def _speaks_tls(netloc: str, timeout: float) -> bool:
    import ssl

    parts = urlsplit(f"//{netloc}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 80), timeout
        ) as raw:
            context.wrap_socket(raw).close()
    except OSError:
        return False
    return True
