"""Why a Jupyter start failed: the host's verdict (remote/wait.py) turned into the
user's first line and fix.

Each stage the host can report has its own diagnosis; none borrows another's words, and a stage
that cannot tell the cause says so. Jupyter's last log lines follow the first line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from colabtunnel.errors import ColabtunnelError
from colabtunnel.jupyter import flavours
from colabtunnel.jupyter.flavours import Flavour
from colabtunnel.profiles import Profile


@dataclass(frozen=True)
class Failed:
    """A start that failed: the host's verdict (stage and what it saw) and what it is about."""

    data: dict[str, Any]
    profile: Profile
    flavour: Flavour
    port: int
    timeout: float
    tail: str  # Jupyter's last log lines, token masked

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set_by_args(self, *words: str) -> bool:
        return any(word in arg for arg in self.profile.jupyter_args for word in words)


def start_error(failed: Failed) -> ColabtunnelError:
    """The failed start's own diagnosis on the first line, then Jupyter's last log lines."""
    stage = failed.data["stage"]
    message, hint = STAGES[stage](failed)
    if stage not in ("exited", "timeout"):
        message += "; the server was stopped"
    return ColabtunnelError(f"{message}. Last lines of its log:\n{failed.tail}", hint=hint)


def port_taken(tail: str) -> bool:
    """Jupyter's log says its port was in use when it tried to listen."""
    return "is not available" in tail or "Address already in use" in tail


def _exited(failed: Failed) -> tuple[str, str]:
    if port_taken(failed.tail):
        return "Jupyter exited during start-up", (
            f'remote port {failed.port} is taken: set remote_port = "auto"'
        )
    return "Jupyter exited during start-up", "fix what the log says, then run `up` again"


def _timeout(failed: Failed) -> tuple[str, str]:
    return (
        f"Jupyter did not answer within {failed.timeout:.0f} s",
        "a slow filesystem or a heavy extension? raise it with --timeout",
    )


def _not_overridden(failed: Failed, trait: str, *words: str) -> str:
    """Where a setting colabtunnel overrides can still come from: the profile's jupyter_args
    (appended after colabtunnel's flags, so they win), or something the config scan cannot read."""
    flag = flavours.shown_flag(failed.flavour.prefix, trait)
    if failed.set_by_args(*words):
        return (
            f"the profile's jupyter_args set it, and they win over colabtunnel's {flag}: "
            f"remove it from jupyter_args in profile {failed.profile.name!r}"
        )
    return (
        f"something overrides colabtunnel's {flag} in a way its config scan cannot read: "
        "look in the files `jupyter --paths` lists on the host"
    )


def _https(failed: Failed) -> tuple[str, str]:
    return (
        "Jupyter answered with TLS (HTTPS) where the tunnel forwards plain HTTP "
        f"(seen {failed.get('after_s') or 0:.1f} s after start)",
        _not_overridden(failed, "certfile", "certfile", "keyfile", "ssl_options"),
    )


def _not_root(failed: Failed) -> tuple[str, str]:
    base, location = failed.get("base_url"), failed.get("location")
    where = f"under base URL {base!r}" if base and base != "/" else "its API elsewhere"
    answer = f"GET /api -> {failed.get('status')}" + (f" to {location}" if location else "")
    return (
        f"Jupyter serves {where}, not at the root URL Colab needs ({answer})",
        _not_overridden(failed, "base_url", "base_url"),
    )


def _content(failed: Failed) -> str:
    return f"HTTP {failed.get('status')}, {failed.get('content_type') or 'no content type'}"


def _not_jupyter(failed: Failed) -> tuple[str, str]:
    return (
        f"what answers on port {failed.port} is not Jupyter's API ({_content(failed)})",
        "a proxy or an extension in front of Jupyter? see its log below",
    )


def _auth_disabled(failed: Failed) -> tuple[str, str]:
    where = (
        "the profile's jupyter_args"
        if failed.set_by_args("token", "password")
        else "a host config the scan cannot read (a computed value?)"
    )
    return (
        "Jupyter started WITHOUT authentication: its API answered a request that had no token",
        f"the token is emptied by {where}: find `token` there and remove it",
    )


def _auth_unclear(failed: Failed) -> tuple[str, str]:
    return (
        "cannot tell whether Jupyter enforces its token: a request without it got "
        f"{_content(failed)}, neither a refusal nor the API",
        "see its log below; run `up` with --debug for more",
    )


def _token_rejected(failed: Failed) -> tuple[str, str]:
    return (
        "Jupyter rejects the token colabtunnel gave it: a config on the host sets "
        "another token or password",
        "remove token/password settings from the Jupyter config files on the host "
        "(`jupyter --paths` lists where they are)",
    )


STAGES: dict[str, Callable[[Failed], tuple[str, str]]] = {
    "exited": _exited,
    "timeout": _timeout,
    "https": _https,
    "not-root": _not_root,
    "not-jupyter": _not_jupyter,
    "auth-disabled": _auth_disabled,
    "auth-unclear": _auth_unclear,
    "token-rejected": _token_rejected,
}
