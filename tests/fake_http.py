"""An HTTP server that answers from a table, for the ways a server can look like Jupyter and not be.

Run as `python -m tests.fake_http ANSWERS_JSON` in a process of its own (so it owns its listening
socket, as Jupyter does); it prints its port on stdout once it listens. ANSWERS_JSON maps
"PATH" or "PATH auth" (a request with an Authorization header or a token query) to
[status, content type, body, Location]; anything else is 404. An entry "@hold": [PATH, FILE, SECONDS]
makes the answer to PATH wait SECONDS after creating FILE, so a test can act in that window.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _handler(answers: dict[str, list[Any]]) -> type[BaseHTTPRequestHandler]:
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            authed = "Authorization" in self.headers or "token=" in query
            held = answers.get("@hold")
            if held and held[0] == path:
                Path(held[1]).touch()
                time.sleep(held[2])
            status, kind, body, location = answers.get(
                f"{path} auth" if authed else path, answers.get(path, [404, "text/html", "", ""])
            )
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            if location:
                self.send_header("Location", location)
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            self.do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    return Answer


@contextlib.contextmanager
def fake_server(answers: dict[str, list[Any]]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The server process and its port, until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_http", json.dumps(answers)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc, int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(json.loads(sys.argv[1])))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
