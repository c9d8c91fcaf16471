"""The Colab probe: prove a Jupyter server answers the way Colab's browser page uses it.

This module owns the sequence of checks that defines "works with Colab" (SPEC section 6): each
makes a request of colab_calls as Colab's page would and judges the answer with verdicts. It
never raises for server behaviour: every observation becomes a Check in a ProbeReport.

requests and websocket-client are imported inside run_probe so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from colabtunnel.jupyter.colab_calls import (
    ANONYMOUS,
    ANONYMOUS_SCRIPT,
    BUILD_INFO,
    COLAB_ORIGIN,
    FOREIGN,
    FOREIGN_ORIGIN,
    KERNELSPECS,
    NEW_KERNEL,
    PREFLIGHT,
    VERSION,
    Request,
    execute_request,
)
from colabtunnel.jupyter.verdicts import (
    ACAO,
    ACAPN,
    Check,
    ProbeReport,
    cors_detail,
    cors_problems,
    judged,
    masker,
    status_problem,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger("colabtunnel")

_2XX = range(200, 300)
_200 = range(200, 201)


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


@dataclass
class _Execution:
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


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


class _Unreachable(Exception):
    """A transport-level failure: no HTTP answer at all."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


class Recorded:
    """An answer the host recorded (remote/colab_answers.py), read like a requests.Response."""

    def __init__(self, answer: dict[str, Any]) -> None:
        from requests.structures import CaseInsensitiveDict

        self.status_code = int(answer["status"])
        self.headers: Any = CaseInsensitiveDict(dict(answer["headers"]))
        self.text = str(answer["body"])

    def json(self) -> Any:
        return json.loads(self.text)


class _Probe:
    def __init__(
        self,
        base_url: str,
        token: str,
        origin: str,
        timeout: float,
        code: str,
        expect: str,
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
        self.code = code
        self.expect = expect
        self.mask = masker(token)
        self.checks: list[Check] = []
        self.session = self._new_session()
        self.server_version: str | None = None
        self.kernel_id: str | None = None
        self.verdict = threading.Event()  # set once the kernel checks are in self.checks

    def learn_version(self) -> bool:
        """Which server this is, for the diagnoses; no check of its own (preflight reports errors).
        False when nothing answers at all."""
        try:
            version = self.ask(VERSION).json().get("version")
        except _Unreachable:
            return False
        except (ValueError, AttributeError):
            return True
        self.server_version = str(version) if version else None
        return True

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

    def add(self, name: str, ok: bool, detail: str, problems: list[str] | None = None) -> bool:
        self.checks.append(judged(name, ok, detail, problems, self.server_version, self.mask))
        return ok

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
            raise _Unreachable(
                "timeout",
                f"{req.method} {self.shown(req.api_path)}: no answer within {self.timeout:g}s",
            ) from exc
        except self.requests.RequestException as exc:
            problem = "unreachable"
            if self._tls_instead(exc):
                problem = "https"
            raise _Unreachable(
                problem, f"{req.method} {self.shown(req.api_path)}: {_reason(exc)}"
            ) from exc

    def _recorded(self, req: Request) -> Recorded:
        assert self.answers is not None
        answer = self.answers.get(req.key)
        if not answer or "status" not in answer:
            why = answer.get("error", "no answer") if answer else "not asked"
            raise _Unreachable(
                "unreachable", f"{req.method} {self.shown(req.api_path)} on the host: {why}"
            )
        return Recorded(answer)

    def _tls_instead(self, exc: Exception) -> bool:
        """A connection accepted, then dropped without an answer, by a server that speaks TLS:
        Jupyter with a certfile does exactly that to a plain HTTP request."""
        dropped = isinstance(exc, self.requests.ConnectionError) and "refused" not in str(exc)
        return dropped and self.scheme == "http" and _speaks_tls(self.netloc, self.timeout)

    # -- steps ------------------------------------------------------------------------------

    def root_url(self) -> None:
        if self.path != "/":
            self.add(
                "root-url",
                False,
                f"the URL path is {self.path!r}, not '/': Colab would call "
                f"{self.path}api/kernels and get 404/405",
                ["sub-path"],
            )

    def seen(self, method: str, api_path: str, resp: Any) -> str:
        """`METHOD /path -> status; <CORS headers>` for a detail."""
        return f"{method} {self.shown(api_path)} -> {resp.status_code}; {cors_detail(resp.headers)}"

    def credentialed(
        self, name: str, req: Request, ok_status: range
    ) -> tuple[Any, str, list[str]] | None:
        """Make a credentialed request; record a failing check and return None on a bad status,
        else return the response, its detail and the CORS problems found (nothing recorded)."""
        resp = self.ask(req)
        detail = self.seen(req.method, req.api_path, resp)
        if resp.headers.get(ACAPN):
            detail += f", {ACAPN}: {resp.headers[ACAPN]}"
        if resp.status_code not in ok_status:
            message = _json_message(resp)
            problem = status_problem(resp.status_code, message, self.path == "/")
            self.add(name, False, detail + (f"; {message}" if message else ""), [problem])
            return None
        return resp, detail, cors_problems(resp.headers, self.origin)

    def preflight(self) -> None:
        seen = self.credentialed("preflight", PREFLIGHT, _2XX)
        if seen:
            _, detail, problems = seen
            self.add("preflight", not problems, detail, problems)

    def cors_get(self) -> None:
        seen = self.credentialed("cors-get", VERSION, _200)
        if seen:
            _, detail, problems = seen
            self.add("cors-get", not problems, detail, problems)

    def kernelspecs(self) -> None:
        seen = self.credentialed("kernelspecs", KERNELSPECS, _200)
        if not seen:
            return
        resp, detail, problems = seen
        try:
            data = resp.json()
        except ValueError:
            self.add("kernelspecs", False, detail + "; body is not JSON", [*problems, "bad-json"])
            return
        default = data.get("default") if isinstance(data, dict) else None
        specs = data.get("kernelspecs") if isinstance(data, dict) else None
        names = sorted(specs) if isinstance(specs, dict) else []
        detail += f"; default kernel {default!r}, kernels {names}"
        if not default or default not in names:
            problems.append("no-default-kernel")
        self.add("kernelspecs", not problems, detail, problems)

    def auth_enforced(self) -> None:
        resp = self.ask(ANONYMOUS)
        status = resp.status_code
        detail = f"GET {self.shown('api/kernelspecs')} without token -> {status}"
        if status == 404:
            # Jupyter answers 404 (not 403) to a cross-origin request it blocks before auth
            # (no allow_origin). Ask again as a script would, without Origin: auth alone.
            resp = self.ask(ANONYMOUS_SCRIPT)
            status = resp.status_code
            detail += f"; without Origin -> {status}"
        location = resp.headers.get("Location", "")
        if status in (401, 403):
            self.add("auth-enforced", True, detail + " (refused)")
        elif 300 <= status < 400 and "login" in location:
            self.add("auth-enforced", True, detail + f" (redirect to {location})")
        elif 200 <= status < 300 and _json_body(resp) is not None:
            # Only the API itself answering proves the token is not required.
            self.add(
                "auth-enforced", False, detail + ": answered without the token", ["auth-disabled"]
            )
        elif 200 <= status < 300:
            self.add("auth-enforced", False, detail + ": not Jupyter's JSON", ["bad-json"])
        elif status == 404:
            problem = "base-url" if self.path == "/" else "sub-path"
            self.add("auth-enforced", False, detail + ": no API here", [problem])
        else:
            where = f" to {location}" if location else ""
            self.add("auth-enforced", False, detail + f"{where}: neither refused nor answered")

    def foreign_origin(self) -> None:
        resp = self.ask(FOREIGN)
        allow_origin = resp.headers.get(ACAO)
        detail = (
            f"GET {self.shown('api')} with Origin {FOREIGN_ORIGIN} -> {resp.status_code}; "
            f"{ACAO}: {allow_origin if allow_origin is not None else '(absent)'}"
        )
        bad = allow_origin is not None and allow_origin.strip() in (FOREIGN_ORIGIN, "*")
        if not bad:
            detail += " (foreign origin not allowed)"
        self.add("foreign-origin", not bad, detail, ["foreign-origin-echoed"])

    def build_info(self) -> None:
        resp = self.ask(BUILD_INFO)
        status = resp.status_code
        ok = 200 <= status < 300 or status == 404
        note = " (normal: Jupyter has no Colab build info)" if status == 404 else ""
        self.add("build-info", ok, f"GET {self.shown('api/colab/build-info')} -> {status}{note}")

    def http_checks(self) -> None:
        """The HTTP checks in order (through the URL, or judged from the host's answers); a
        server that stops answering ends them with that check's failure."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("preflight", self.preflight),
            ("cors-get", self.cors_get),
            ("kernelspecs", self.kernelspecs),
            ("auth-enforced", self.auth_enforced),
            ("foreign-origin", self.foreign_origin),
            ("build-info", self.build_info),
        ]
        for name, step in steps:
            try:
                step()
            except _Unreachable as exc:
                self.add(name, False, exc.detail, [exc.problem])
                break

    def kernel_guarded(self) -> None:
        """kernel(), on a thread: whatever happens, the report gets a verdict on the kernel; then,
        with the verdict out, the kernel is deleted."""
        try:
            self.kernel()
        except Exception as exc:  # reported as a failed check, never lost with the thread
            self.add("kernel-start", False, f"the kernel check stopped: {_reason(exc)}")
        if all(c.ok for c in self.checks) and not any(
            c.name == "kernel-execute" for c in self.checks
        ):
            self.add("kernel-execute", False, "the kernel check did not finish")
        self.verdict.set()
        try:
            if self.kernel_id is not None:
                self.delete_kernel(self.kernel_id)
        finally:
            self.session.close()

    def kernel(self) -> None:
        deadline = time.monotonic() + self.timeout
        kernel_id = self.start_kernel()
        if kernel_id is not None:
            self.execute(kernel_id, deadline)

    def start_kernel(self) -> str | None:
        """Create a kernel (or read the host's answer to that): the kernel-start check, its id."""
        try:
            resp = self.ask(NEW_KERNEL)
        except _Unreachable as exc:
            self.add("kernel-start", False, exc.detail, [exc.problem])
            return None
        kernel_id = None
        if resp.status_code in (200, 201):
            try:
                kernel_id = resp.json().get("id")
            except (ValueError, AttributeError):
                kernel_id = None
        detail = f"POST {self.shown('api/kernels')} -> {resp.status_code}"
        if not kernel_id:
            message = _json_message(resp)
            problem = status_problem(resp.status_code, message, self.path == "/")
            if problem == "server-error":
                problem = "kernel-start"
            detail += f"; no kernel id ({message})" if message else "; no kernel id"
            self.add("kernel-start", False, detail, [problem])
            return None
        self.kernel_id = str(kernel_id)
        self.add("kernel-start", True, f"{detail}; kernel {kernel_id}")
        return self.kernel_id

    def tunnel_get(self, kernel_id: str) -> None:
        """One credentialed request with the page's Origin, through the tunnel: the kernel's
        model, as Colab's page polls it."""
        seen = self.credentialed("tunnel-get", Request("GET", f"api/kernels/{kernel_id}"), _200)
        if seen:
            _, detail, problems = seen
            self.add("tunnel-get", not problems, detail + " (through the tunnel)", problems)

    def delete_kernel(self, kernel_id: str) -> None:
        try:
            resp = self.ask(Request("DELETE", f"api/kernels/{kernel_id}"))
        except _Unreachable as exc:
            log.warning("deleting the probe's kernel %s failed: %s", kernel_id, exc.detail)
            return
        if resp.status_code not in (200, 204, 404):
            log.warning("deleting the probe's kernel %s -> %d", kernel_id, resp.status_code)

    def execute(self, kernel_id: str, deadline: float) -> None:
        import websocket

        ws_scheme = "wss" if self.scheme == "https" else "ws"
        session_id = uuid.uuid4().hex
        ws_url = (
            f"{ws_scheme}://{self.netloc}{self.path}api/kernels/{kernel_id}/channels"
            f"?{urlencode({'session_id': session_id, 'token': self.token})}"
        )
        remaining = max(deadline - time.monotonic(), 1.0)
        options: dict[str, Any] = {"origin": self.origin, "timeout": remaining}
        ws = None
        try:
            if ws_scheme == "ws":
                # Connect the TCP socket ourselves: websocket-client would otherwise honour
                # http_proxy for 127.0.0.1 and never reach the tunnel.
                host = urlsplit(f"//{self.netloc}").hostname or "127.0.0.1"
                port = urlsplit(f"//{self.netloc}").port or 80
                options["socket"] = socket.create_connection((host, port), timeout=remaining)
            ws = websocket.create_connection(ws_url, **options)
        except websocket.WebSocketBadStatusException as exc:
            status = exc.status_code
            problem = "ws-forbidden" if status == 403 else "ws-failed"
            self.add("kernel-execute", False, f"websocket handshake -> {status}", [problem])
            _close(options.get("socket"))
            return
        except (OSError, websocket.WebSocketException) as exc:
            self.add("kernel-execute", False, f"websocket: {_reason(exc)}", ["ws-failed"])
            _close(options.get("socket"))
            return
        try:
            self._run_code(ws, session_id, deadline)
        finally:
            # The verdict is in: send the close frame, but do not wait a round trip for the
            # server's (websocket-client's close() waits up to 3 s for it by default).
            with contextlib.suppress(Exception):
                ws.close(timeout=0)

    def _run_code(self, ws: Any, session_id: str, deadline: float) -> None:
        import websocket

        msg = execute_request(self.code, session_id)
        msg_id = msg["header"]["msg_id"]
        result = _Execution()
        started = time.monotonic()
        try:
            ws.send(json.dumps(msg))
            while not result.done(self.expect):
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
            detail = f"websocket dropped after {time.monotonic() - started:.1f}s: {_reason(exc)}"
            self.add("kernel-execute", False, detail, ["ws-failed"])
            return
        elapsed = time.monotonic() - started
        shown = result.stdout.strip()[:200]
        detail = f"{self.code!r} -> stdout {shown!r} in {elapsed:.1f}s"
        if result.error:
            self.add("kernel-execute", False, f"{detail}; error {result.error}", ["execute-wrong"])
        elif self.expect in result.stdout:
            self.add("kernel-execute", True, detail)
        elif not result.done(self.expect):
            states = ", ".join(result.states) or "none"
            detail += f"; no idle status within the timeout (states seen: {states})"
            self.add("kernel-execute", False, detail, ["execute-timeout"])
        else:
            self.add(
                "kernel-execute", False, f"{detail}; expected {self.expect!r}", ["execute-wrong"]
            )


def _close(closable: Any) -> None:
    """Close a socket or websocket that may already be broken, ignoring errors."""
    if closable is None:
        return
    # Closing a broken connection must not mask the result.
    with contextlib.suppress(Exception):
        closable.close()


def _reason(exc: BaseException) -> str:
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


def _json_body(resp: Any) -> Any:
    """The answer's JSON, or None when it is not JSON (an HTML page, a proxy's answer)."""
    try:
        return resp.json()
    except ValueError:
        return None


def _json_message(resp: Any) -> str:
    """Jupyter's `message` from a JSON error body, shortened; "" when there is none."""
    try:
        data = resp.json()
    except ValueError:
        return ""
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])[:200]
    return ""


def preload() -> None:
    """Import what run_probe needs (requests, websocket-client: ~0.09 s) on a thread, so a caller
    that is about to wait anyway (for Jupyter to start) does not pay for it later."""

    def load() -> None:
        import requests  # noqa: F401
        import websocket  # noqa: F401

    threading.Thread(target=load, name="probe-preload", daemon=True).start()


def run_probe(
    base_url: str,
    token: str,
    *,
    origin: str = COLAB_ORIGIN,
    timeout: float = 30.0,
    code: str = "print(6*7)",
    expect: str = "42",
    execute: bool = True,
    wait_for_cleanup: bool = True,
) -> ProbeReport:
    """Talk to the Jupyter at `base_url` exactly as Colab's page would and report every step.

    `timeout` bounds each HTTP request, and the kernel step (start + execute) as a whole.
    Stops early, with a failing check, when the server does not answer at all. Raises only for
    programming errors (ValueError for a base_url that is not http(s)). With `wait_for_cleanup`
    false the probe's kernel may still be being deleted on return: see ProbeReport.settle().
    """
    probe = _Probe(base_url, token, origin, timeout, code, expect)
    probe.root_url()
    # The kernel takes longest to start: it starts first and runs beside the HTTP checks, on a
    # session of its own. When nothing answers at all, the first HTTP check says so, once.
    kernel_probe = _Probe(base_url, token, origin, timeout, code, expect)
    kernel_thread = None
    if execute:
        kernel_thread = threading.Thread(
            target=kernel_probe.kernel_guarded, name="probe-kernel", daemon=True
        )
        kernel_thread.start()
    reachable = probe.learn_version()
    try:
        probe.http_checks()
    finally:
        probe.session.close()
    if kernel_thread is None:
        kernel_probe.session.close()
    elif reachable:
        kernel_probe.verdict.wait(timeout + 5)
        probe.checks.extend(kernel_probe.checks)
    report = ProbeReport(url=probe.public_url, checks=tuple(probe.checks), cleanup=kernel_thread)
    if wait_for_cleanup:
        report.settle(timeout + 5)
    return report


def run_probe_on_answers(
    base_url: str,
    token: str,
    answers: dict[str, Any],
    *,
    origin: str = COLAB_ORIGIN,
    timeout: float = 30.0,
    code: str = "print(6*7)",
    expect: str = "42",
) -> ProbeReport:
    """The probe with its HTTP checks already made on the host (`answers` to HOST_SIDE,
    recorded by remote/colab_answers.py beside Jupyter, where they cost no round trip) and
    judged here exactly as run_probe() judges them; through `base_url`, the tunnel, go the
    checks that prove the tunnel itself: one credentialed request with the page's Origin, and
    the kernel the host created, run over its websocket. Both at once, each on a connection of
    its own. The kernel is deleted (through the tunnel) by the report's cleanup thread.
    """
    host = _Probe(base_url, token, origin, timeout, code, expect, answers=answers)
    host.root_url()
    host.learn_version()
    try:
        host.http_checks()
        deadline = time.monotonic() + timeout
        kernel_id = host.start_kernel()
    finally:
        host.session.close()
    if kernel_id is None:
        return ProbeReport(url=host.public_url, checks=tuple(host.checks))
    polled = _Probe(base_url, token, origin, timeout, code, expect)
    runner = _Probe(base_url, token, origin, timeout, code, expect)
    polled.server_version = runner.server_version = host.server_version
    poll = threading.Thread(
        target=_tunnel_get_guarded, args=(polled, kernel_id), name="probe-get", daemon=True
    )
    poll.start()
    try:
        runner.execute(kernel_id, deadline)
    except Exception as exc:  # reported as a failed check, like kernel_guarded()
        runner.add("kernel-execute", False, f"the kernel check stopped: {_reason(exc)}")
    poll.join(timeout + 5)
    if not polled.checks:
        polled.add("tunnel-get", False, "the request through the tunnel did not finish")
    checks = (*host.checks, *polled.checks, *runner.checks)

    def clean_up() -> None:
        try:
            runner.delete_kernel(kernel_id)
        finally:
            runner.session.close()
            polled.session.close()

    cleanup = threading.Thread(target=clean_up, name="probe-cleanup", daemon=True)
    cleanup.start()
    return ProbeReport(url=host.public_url, checks=checks, cleanup=cleanup)


def _tunnel_get_guarded(probe: _Probe, kernel_id: str) -> None:
    try:
        probe.tunnel_get(kernel_id)
    except _Unreachable as exc:
        probe.add("tunnel-get", False, exc.detail, [exc.problem])
    except Exception as exc:
        probe.add("tunnel-get", False, f"the request stopped: {_reason(exc)}")
