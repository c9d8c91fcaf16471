"""What a correct answer to Colab's requests looks like, and the human diagnosis + fix for each way
it goes wrong: problem ids, their fixes, and the Check and ProbeReport the probe hands back. The
token never appears in a Check or the report."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from colabtunnel.jupyter.colab_calls import COLAB_ORIGIN

ACAO = "Access-Control-Allow-Origin"
ACAC = "Access-Control-Allow-Credentials"
ACAPN = "Access-Control-Allow-Private-Network"


@dataclass(frozen=True)
class Check:
    """One step of the probe: what was observed and, when it failed, the diagnosis and fix."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class ProbeReport:
    """All checks of one probe run against `url` (the base URL, never with the token)."""

    url: str
    checks: tuple[Check, ...]
    # Deleting the probe's kernel (0.1-0.2 s: Jupyter waits for it to exit) decides nothing, so
    # `up` need not wait for it before printing the URL; settle() waits.
    cleanup: threading.Thread | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the probe's kernel is deleted (or `timeout` passes)."""
        if self.cleanup is not None:
            self.cleanup.join(timeout)

    def first_failure(self) -> Check | None:
        return next((check for check in self.checks if not check.ok), None)

    def to_dict(self) -> dict[str, Any]:
        failure = self.first_failure()
        return {
            "url": self.url,
            "ok": self.ok,
            "first_failure": failure.name if failure else None,
            "checks": [check.to_dict() for check in self.checks],
        }


# --------------------------------------------------------------------------------------------
# Diagnoses: problem id -> the human cause and fix. Detection below only picks ids.
# --------------------------------------------------------------------------------------------

FIXES: dict[str, str] = {
    "unreachable": (
        "Nothing answered at this address: Jupyter is not running there, or the SSH tunnel is "
        "down or forwards a different port. Check `colabtunnel status` and the Jupyter log "
        "(`colabtunnel logs PROFILE`)."
    ),
    "timeout": (
        "The server accepted the connection but did not answer in time: Jupyter is overloaded "
        "or hung, or the tunnel stalls. Check the Jupyter log and retry."
    ),
    "sub-path": (
        "The URL points at a sub-path (like /tree or /lab) instead of the server root. Colab "
        "treats the whole URL path as the API base and gets 404/405. Use "
        "http://localhost:PORT/?token=... (the root)."
    ),
    "base-url": (
        "Nothing at the root URL answers like Jupyter's API (404): the server runs under a "
        "base_url (a host config or a --ServerApp.base_url / --NotebookApp.base_url argument). "
        "Colab needs the API at the root: remove that base_url, or let colabtunnel start Jupyter "
        "(it overrides base_url)."
    ),
    "https": (
        "The server speaks TLS (HTTPS) where the URL says http: Jupyter runs with a certfile and "
        "keyfile. Colab reaches a local runtime over plain HTTP (the SSH tunnel is the encrypted "
        "part): remove certfile/keyfile, or let colabtunnel start Jupyter (it overrides them)."
    ),
    "token-rejected": (
        "Jupyter refused the token: the server on this port runs with a different token (a host "
        "config or JUPYTER_TOKEN overrides it, or another Jupyter owns the port). Restart with "
        "`colabtunnel down` then `colabtunnel up`."
    ),
    "acao-missing": (
        "Jupyter did not send Access-Control-Allow-Origin: allow_origin is not set, or set under "
        "a flag prefix this Jupyter ignores."
    ),
    "acao-star": (
        "Jupyter sent Access-Control-Allow-Origin: * . Browsers reject '*' on credentialed "
        "requests, which is how Colab calls a local runtime; allow_origin must be exactly "
        f"{COLAB_ORIGIN} (never '*')."
    ),
    "acao-trailing-slash": (
        "allow_origin has a trailing slash. Browsers compare the origin byte for byte; it must be "
        f"exactly {COLAB_ORIGIN} with no trailing slash."
    ),
    "acao-other": (
        "Jupyter sent an Access-Control-Allow-Origin for a different origin: allow_origin is set "
        f"to something else (a host config or extra argument?). It must be exactly {COLAB_ORIGIN}."
    ),
    "credentials-missing": (
        "Jupyter did not send Access-Control-Allow-Credentials: true: allow_credentials is not "
        "set, or set under a flag prefix this Jupyter ignores; Colab's credentialed requests fail "
        "without it."
    ),
    "classic-notebook": (
        "This server is classic Notebook {version}, which ignores every --ServerApp.* flag: "
        'it needs --NotebookApp.*. Set app = "notebook" in the profile, or app = "auto" and let '
        "colabtunnel detect it."
    ),
    "server-family": (
        "This server is jupyter_server {version}: it reads --ServerApp.* flags and ignores "
        "--NotebookApp.* ones (unless notebook 7 or jupyterlab is installed beside it). Pass "
        "--ServerApp.allow_origin and --ServerApp.allow_credentials, or let colabtunnel start it."
    ),
    "no-default-kernel": (
        "Jupyter lists no usable default kernel: ipykernel is missing in the host environment. "
        "Run `pip install ipykernel` in the environment the profile activates."
    ),
    "bad-json": (
        "The answer is not Jupyter's JSON API: something else (a proxy, another web server) "
        "answers on this port, or the URL is not the Jupyter root."
    ),
    "auth-disabled": (
        "Jupyter answered without the token: authentication is disabled, so anyone who can reach "
        "the port can run code. A host config disables the token (~/.jupyter/"
        "jupyter_server_config.py with c.ServerApp.token = '' or c.IdentityProvider.token = '', "
        "or c.NotebookApp.token = '' on Notebook 6). Remove that line and restart."
    ),
    "foreign-origin-echoed": (
        "Jupyter echoes any Origin back in Access-Control-Allow-Origin: allow_origin is not set "
        "(token-authenticated requests are then allowed from every site) or it is '*'. Set "
        f"allow_origin to exactly {COLAB_ORIGIN}."
    ),
    "xsrf-required": (
        "Jupyter demanded an XSRF token, so it did not take the request as token-authenticated: "
        "either the token is wrong, or authentication is disabled by a host config "
        "(c.ServerApp.token = '' or c.IdentityProvider.token = ''), in which case every POST "
        "Colab makes fails with 403. Fix the token setting and restart Jupyter."
    ),
    "server-error": (
        "Jupyter failed with a server error; its log shows the traceback "
        "(`colabtunnel logs PROFILE`)."
    ),
    "unexpected-status": (
        "Jupyter answered with an unexpected status; see the detail and the Jupyter log."
    ),
    "kernel-start": (
        "Jupyter could not start a kernel: ipykernel is missing or broken on the host (run "
        "`pip install ipykernel` in the environment the profile activates). The Jupyter log "
        "shows the kernel's own error."
    ),
    "ws-forbidden": (
        "The kernel websocket was refused (403): the origin is not allowed for websockets. "
        f"allow_origin must be exactly {COLAB_ORIGIN}, and the token must be accepted."
    ),
    "ws-failed": (
        "The kernel websocket could not be opened: a proxy or tunnel in between does not pass "
        "websockets, or Jupyter rejected the upgrade. See the detail and the Jupyter log."
    ),
    "execute-timeout": (
        "The kernel did not finish the test code in time: it is still starting (slow imports, "
        "busy GPU node) or it died. Retry; if it persists, check the Jupyter log."
    ),
    "execute-wrong": (
        "The kernel ran the test code but its output was not as expected: the kernel is broken "
        "or a startup script changes output. See the detail."
    ),
}

_TOKEN_QUERY = re.compile(r"(token=)[^&\s'\"]+")


def masker(token: str) -> Callable[[str], str]:
    def mask(text: str) -> str:
        if token:
            text = text.replace(token, "***")
        return _TOKEN_QUERY.sub(r"\1***", text)

    return mask


# --------------------------------------------------------------------------------------------
# Pure analysis helpers
# --------------------------------------------------------------------------------------------


def cors_problems(headers: Any, origin: str) -> list[str]:
    """Problem ids for the CORS headers of an answer to a credentialed request from `origin`."""
    problems: list[str] = []
    allow_origin = headers.get(ACAO)
    if allow_origin is None:
        problems.append("acao-missing")
    elif allow_origin.strip() == "*":
        problems.append("acao-star")
    elif allow_origin != origin:
        if allow_origin.rstrip("/") == origin:
            problems.append("acao-trailing-slash")
        else:
            problems.append("acao-other")
    if (headers.get(ACAC) or "").strip().lower() != "true":
        problems.append("credentials-missing")
    return problems


def status_problem(status: int, message: str = "", at_root: bool = False) -> str:
    """Problem id for a non-success status (and Jupyter's error message) on a request with token.
    `at_root`: the request went to the server's root URL, so a 404 is not the URL's fault."""
    if status in (404, 405):
        return "base-url" if at_root and status == 404 else "sub-path"
    if status == 403 and "_xsrf" in message:
        return "xsrf-required"
    if status in (401, 403):
        return "token-rejected"
    if status >= 500:
        return "server-error"
    return "unexpected-status"


def _fix_for(problems: list[str]) -> str | None:
    return " ".join(FIXES[p] for p in problems) if problems else None


def cors_detail(headers: Any) -> str:
    return ", ".join(f"{name}: {headers.get(name, '(absent)')}" for name in (ACAO, ACAC))


def judged(
    name: str,
    ok: bool,
    detail: str,
    problems: list[str] | None,
    server_version: str | None,
    mask: Callable[[str], str],
) -> Check:
    """The Check for one observation, with the fix for its problems when it failed; `mask` hides
    the token. `server_version` (from /api) names the flavour's cause of a missing CORS header."""
    problems = list(problems or [])
    if server_version and {"acao-missing", "credentials-missing"} & set(problems):
        # name the real cause, which depends on the flavour, before the symptom
        problems.insert(0, "classic-notebook" if _classic(server_version) else "server-family")
    fix = None if ok else (_fix_for(problems) or FIXES["unexpected-status"])
    if fix and server_version:
        fix = fix.replace("{version}", server_version)
    return Check(name, ok, mask(detail), mask(fix) if fix else None)


def _classic(server_version: str) -> bool:
    """Classic Notebook (5.x/6.x) reports its own version at /api; jupyter_server 1.x/2.x its."""
    major = server_version.split(".")[0]
    return major in ("5", "6")
