"""The table of checks: the exact requests Colab's page at https://colab.research.google.com makes
to a local runtime (credentialed, with that Origin and the token in the query), the variations
that must be refused, and the kernel's execute message."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

COLAB_ORIGIN = "https://colab.research.google.com"
FOREIGN_ORIGIN = "https://evil.example"

PREFLIGHT_HEADERS = (
    ("Access-Control-Request-Method", "POST"),
    ("Access-Control-Request-Headers", "content-type"),
    ("Access-Control-Request-Private-Network", "true"),
)


@dataclass(frozen=True)
class Request:
    """One request of the probe: as Colab's page makes it (the token in the query, the page's
    Origin), or a variation that must be refused."""

    method: str
    api_path: str
    with_token: bool = True
    origin: Literal["page", "foreign", "none"] = "page"
    headers: tuple[tuple[str, str], ...] = ()
    json_body: bool = False  # an empty JSON object, as Colab's POSTs send

    @property
    def key(self) -> str:
        token = "" if self.with_token else " without token"
        return f"{self.method} {self.api_path}{token} origin={self.origin}"

    def to_json(self, origin: str) -> dict[str, Any]:
        """What the host's copy of the request needs (remote/colab_answers.py); no token."""
        headers = dict(self.headers)
        if self.origin != "none":
            headers["Origin"] = origin if self.origin == "page" else FOREIGN_ORIGIN
        return {
            "key": self.key,
            "method": self.method,
            "path": self.api_path,
            "token": self.with_token,
            "headers": headers,
            "body": "{}" if self.json_body else None,
        }


VERSION = Request("GET", "api")
PREFLIGHT = Request("OPTIONS", "api/kernels", headers=PREFLIGHT_HEADERS)
KERNELSPECS = Request("GET", "api/kernelspecs")
ANONYMOUS = Request("GET", "api/kernelspecs", with_token=False)
ANONYMOUS_SCRIPT = Request("GET", "api/kernelspecs", with_token=False, origin="none")
FOREIGN = Request("GET", "api", origin="foreign")
BUILD_INFO = Request("GET", "api/colab/build-info")
NEW_KERNEL = Request("POST", "api/kernels", json_body=True)
# What the host can ask Jupyter itself, beside it, for the checks that need no tunnel
HOST_SIDE = (
    VERSION,
    PREFLIGHT,
    KERNELSPECS,
    ANONYMOUS,
    ANONYMOUS_SCRIPT,
    FOREIGN,
    BUILD_INFO,
    NEW_KERNEL,
)


def execute_request(code: str, session: str) -> dict[str, Any]:
    """A Jupyter messaging v5.3 execute_request for the shell channel."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "session": session,
            "username": "colabtunnel",
            "msg_type": "execute_request",
            "version": "5.3",
            "date": datetime.now(UTC).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "buffers": [],
        "channel": "shell",
    }
