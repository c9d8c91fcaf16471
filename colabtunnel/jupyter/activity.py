"""When a Jupyter was last used, in its own words: `GET /api/status` (jupyter_server and Notebook 6
both answer it, and asking does not count as activity), through the port the keeper already
forwards, so no new SSH login is made.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Unknown(Exception):
    """The server did not say (down, refused, not JSON); the message says why, for people."""


@dataclass(frozen=True)
class Activity:
    last_activity: float  # epoch seconds
    kernels: int
    connections: int

    def to_json(self) -> dict[str, Any]:
        return {
            "last_activity": self.last_activity,
            "kernels": self.kernels,
            "connections": self.connections,
        }


def parse(body: bytes) -> Activity:
    try:
        data = json.loads(body)
        # ISO 8601 with "Z" (jupyter_server) or "+00:00" (Notebook 6)
        stamp = datetime.fromisoformat(str(data["last_activity"]).replace("Z", "+00:00"))
        return Activity(stamp.timestamp(), int(data["kernels"]), int(data["connections"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise Unknown(f"Jupyter's /api/status answer was not understood ({exc})") from None


def ask(port: int, token: str, timeout: float) -> Activity:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/api/status", headers={"Authorization": f"token {token}"})
        response = conn.getresponse()
        body = response.read(65536)
    except OSError as exc:
        raise Unknown(f"Jupyter did not answer ({exc})") from None
    finally:
        conn.close()
    if response.status != 200:
        raise Unknown(f"Jupyter answered /api/status with HTTP {response.status}")
    return parse(body)
