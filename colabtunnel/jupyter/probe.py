"""The Colab probe: prove a Jupyter server answers the way Colab's browser page uses it.

This module owns the sequence of checks that defines "works with Colab" (SPEC section 6): each
makes a request of colab_calls through probe_transport and judges the answer with verdicts. It
never raises for server behaviour: every observation becomes a Check in a ProbeReport.

requests and websocket-client are imported inside run_probe so importing this module is cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

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
)
from colabtunnel.jupyter.probe_transport import HttpTransport, TransportFailure, reason, run_code
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

log = logging.getLogger("colabtunnel")

_2XX = range(200, 300)
_200 = range(200, 201)


class _Probe:
    def __init__(self, http: HttpTransport, code: str, expect: str) -> None:
        self.http = http
        self.code = code
        self.expect = expect
        self.mask = masker(http.token)
        self.checks: list[Check] = []
        self.server_version: str | None = None
        self.kernel_id: str | None = None
        self.verdict = threading.Event()  # set once the kernel checks are in self.checks

    def learn_version(self) -> bool:
        """Which server this is, for the diagnoses; no check of its own (preflight reports errors).
        False when nothing answers at all."""
        try:
            version = self.http.ask(VERSION).json().get("version")
        except TransportFailure:
            return False
        except (ValueError, AttributeError):
            return True
        self.server_version = str(version) if version else None
        return True

    def add(self, name: str, ok: bool, detail: str, problems: list[str] | None = None) -> bool:
        self.checks.append(judged(name, ok, detail, problems, self.server_version, self.mask))
        return ok

    # -- steps ------------------------------------------------------------------------------

    def root_url(self) -> None:
        if self.http.path != "/":
            self.add(
                "root-url",
                False,
                f"the URL path is {self.http.path!r}, not '/': Colab would call "
                f"{self.http.path}api/kernels and get 404/405",
                ["sub-path"],
            )

    def seen(self, method: str, api_path: str, resp: Any) -> str:
        """`METHOD /path -> status; <CORS headers>` for a detail."""
        shown = self.http.shown(api_path)
        return f"{method} {shown} -> {resp.status_code}; {cors_detail(resp.headers)}"

    def credentialed(
        self, name: str, req: Request, ok_status: range
    ) -> tuple[Any, str, list[str]] | None:
        """Make a credentialed request; record a failing check and return None on a bad status,
        else return the response, its detail and the CORS problems found (nothing recorded)."""
        resp = self.http.ask(req)
        detail = self.seen(req.method, req.api_path, resp)
        if resp.headers.get(ACAPN):
            detail += f", {ACAPN}: {resp.headers[ACAPN]}"
        if resp.status_code not in ok_status:
            message = _json_message(resp)
            problem = status_problem(resp.status_code, message, self.http.path == "/")
            self.add(name, False, detail + (f"; {message}" if message else ""), [problem])
            return None
        return resp, detail, cors_problems(resp.headers, self.http.origin)

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
        resp = self.http.ask(ANONYMOUS)
        status = resp.status_code
        detail = f"GET {self.http.shown('api/kernelspecs')} without token -> {status}"
        if status == 404:
            # Jupyter answers 404 (not 403) to a cross-origin request it blocks before auth
            # (no allow_origin). Ask again as a script would, without Origin: auth alone.
            resp = self.http.ask(ANONYMOUS_SCRIPT)
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
            problem = "base-url" if self.http.path == "/" else "sub-path"
            self.add("auth-enforced", False, detail + ": no API here", [problem])
        else:
            where = f" to {location}" if location else ""
            self.add("auth-enforced", False, detail + f"{where}: neither refused nor answered")

    def foreign_origin(self) -> None:
        resp = self.http.ask(FOREIGN)
        allow_origin = resp.headers.get(ACAO)
        detail = (
            f"GET {self.http.shown('api')} with Origin {FOREIGN_ORIGIN} -> {resp.status_code}; "
            f"{ACAO}: {allow_origin if allow_origin is not None else '(absent)'}"
        )
        bad = allow_origin is not None and allow_origin.strip() in (FOREIGN_ORIGIN, "*")
        if not bad:
            detail += " (foreign origin not allowed)"
        self.add("foreign-origin", not bad, detail, ["foreign-origin-echoed"])

    def build_info(self) -> None:
        resp = self.http.ask(BUILD_INFO)
        status = resp.status_code
        ok = 200 <= status < 300 or status == 404
        note = " (normal: Jupyter has no Colab build info)" if status == 404 else ""
        self.add(
            "build-info", ok, f"GET {self.http.shown('api/colab/build-info')} -> {status}{note}"
        )

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
            except TransportFailure as exc:
                self.add(name, False, exc.detail, [exc.problem])
                break

    def kernel_guarded(self) -> None:
        """kernel(), on a thread: whatever happens, the report gets a verdict on the kernel; then,
        with the verdict out, the kernel is deleted."""
        try:
            self.kernel()
        except Exception as exc:  # reported as a failed check, never lost with the thread
            self.add("kernel-start", False, f"the kernel check stopped: {reason(exc)}")
        if all(c.ok for c in self.checks) and not any(
            c.name == "kernel-execute" for c in self.checks
        ):
            self.add("kernel-execute", False, "the kernel check did not finish")
        self.verdict.set()
        try:
            if self.kernel_id is not None:
                self.delete_kernel(self.kernel_id)
        finally:
            self.http.session.close()

    def kernel(self) -> None:
        deadline = time.monotonic() + self.http.timeout
        kernel_id = self.start_kernel()
        if kernel_id is not None:
            self.execute(kernel_id, deadline)

    def start_kernel(self) -> str | None:
        """Create a kernel (or read the host's answer to that): the kernel-start check, its id."""
        try:
            resp = self.http.ask(NEW_KERNEL)
        except TransportFailure as exc:
            self.add("kernel-start", False, exc.detail, [exc.problem])
            return None
        kernel_id = None
        if resp.status_code in (200, 201):
            try:
                kernel_id = resp.json().get("id")
            except (ValueError, AttributeError):
                kernel_id = None
        detail = f"POST {self.http.shown('api/kernels')} -> {resp.status_code}"
        if not kernel_id:
            message = _json_message(resp)
            problem = status_problem(resp.status_code, message, self.http.path == "/")
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
            resp = self.http.ask(Request("DELETE", f"api/kernels/{kernel_id}"))
        except TransportFailure as exc:
            log.warning("deleting the probe's kernel %s failed: %s", kernel_id, exc.detail)
            return
        if resp.status_code not in (200, 204, 404):
            log.warning("deleting the probe's kernel %s -> %d", kernel_id, resp.status_code)

    def execute(self, kernel_id: str, deadline: float) -> None:
        try:
            result, elapsed = run_code(self.http, kernel_id, self.code, self.expect, deadline)
        except TransportFailure as exc:
            self.add("kernel-execute", False, exc.detail, [exc.problem])
            return
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
    probe = _Probe(HttpTransport(base_url, token, origin, timeout), code, expect)
    probe.root_url()
    # The kernel takes longest to start: it starts first and runs beside the HTTP checks, on a
    # session of its own. When nothing answers at all, the first HTTP check says so, once.
    kernel_probe = _Probe(HttpTransport(base_url, token, origin, timeout), code, expect)
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
        probe.http.session.close()
    if kernel_thread is None:
        kernel_probe.http.session.close()
    elif reachable:
        kernel_probe.verdict.wait(timeout + 5)
        probe.checks.extend(kernel_probe.checks)
    report = ProbeReport(
        url=probe.http.public_url, checks=tuple(probe.checks), cleanup=kernel_thread
    )
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
    host = _Probe(HttpTransport(base_url, token, origin, timeout, answers), code, expect)
    host.root_url()
    host.learn_version()
    try:
        host.http_checks()
        deadline = time.monotonic() + timeout
        kernel_id = host.start_kernel()
    finally:
        host.http.session.close()
    if kernel_id is None:
        return ProbeReport(url=host.http.public_url, checks=tuple(host.checks))
    polled = _Probe(HttpTransport(base_url, token, origin, timeout), code, expect)
    runner = _Probe(HttpTransport(base_url, token, origin, timeout), code, expect)
    polled.server_version = runner.server_version = host.server_version
    poll = threading.Thread(
        target=_tunnel_get_guarded, args=(polled, kernel_id), name="probe-get", daemon=True
    )
    poll.start()
    try:
        runner.execute(kernel_id, deadline)
    except Exception as exc:  # reported as a failed check, like kernel_guarded()
        runner.add("kernel-execute", False, f"the kernel check stopped: {reason(exc)}")
    poll.join(timeout + 5)
    if not polled.checks:
        polled.add("tunnel-get", False, "the request through the tunnel did not finish")
    checks = (*host.checks, *polled.checks, *runner.checks)

    def clean_up() -> None:
        try:
            runner.delete_kernel(kernel_id)
        finally:
            runner.http.session.close()
            polled.http.session.close()

    cleanup = threading.Thread(target=clean_up, name="probe-cleanup", daemon=True)
    cleanup.start()
    return ProbeReport(url=host.http.public_url, checks=checks, cleanup=cleanup)


def _tunnel_get_guarded(probe: _Probe, kernel_id: str) -> None:
    try:
        probe.tunnel_get(kernel_id)
    except TransportFailure as exc:
        probe.add("tunnel-get", False, exc.detail, [exc.problem])
    except Exception as exc:
        probe.add("tunnel-get", False, f"the request stopped: {reason(exc)}")
