"""A real Chromium playing Colab's page: fake colab.research.google.com over HTTPS, driven by CDP.

Pieces, each usable alone:

- `make_certificate(dir)`: a throwaway self-signed certificate for colab.research.google.com.
- `PageServer`: a threaded HTTPS server on a free 127.0.0.1 port that serves the page the test
  sets and takes the JSON result the page POSTs to `/result`.
- `Chromium`: headless Chromium with colab.research.google.com mapped to that server, driven over
  the DevTools protocol; it records console messages, `Log.entryAdded` (where Chrome prints CORS
  errors) and uncaught exceptions.
- `COLAB_PAGE`: the script that does what Colab's page does against the URL in `?target=`.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

COLAB_HOST = "colab.research.google.com"
COLAB_ORIGIN = f"https://{COLAB_HOST}"
CHROMIUM = Path("/usr/bin/chromium")

START_DEADLINE = 30.0


def chromium_missing_reason() -> str | None:
    if not CHROMIUM.exists():
        return (
            f"{CHROMIUM} not found: run `.venv/bin/python -m tests.setup_host` as root "
            "(or `sudo apt-get install -y chromium`)"
        )
    return None


# --------------------------------------------------------------------------- certificate


def make_certificate(directory: Path, host: str = COLAB_HOST) -> tuple[Path, Path]:
    """Write a one-day self-signed certificate and key for `host`; return (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "colab-cert.pem", directory / "colab-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


# --------------------------------------------------------------------------- HTTPS page server


class PageServer:
    """Serves `self.page` at `/` over HTTPS and records what the page POSTs to `/result`."""

    def __init__(self, cert: Path, key: Path, page: str = "") -> None:
        self.page = page
        self.results: list[Any] = []
        self.requests: list[str] = []
        self._got_result = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                server.requests.append(f"{self.command} {self.path.split('?')[0]}")

            def do_GET(self) -> None:
                if self.path == "/" or self.path.startswith("/?"):
                    self._send(HTTPStatus.OK, server.page.encode(), "text/html; charset=utf-8")
                else:
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

            def do_POST(self) -> None:
                if self.path != "/result":
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    server.results.append(json.loads(body))
                except ValueError:
                    server.results.append({"ok": False, "error": f"bad JSON: {body[:200]!r}"})
                server._got_result.set()
                self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")

            def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def wait_result(self, timeout: float) -> Any | None:
        """The first result the page POSTed, or None when none came within `timeout`."""
        self._got_result.wait(timeout)
        return self.results[0] if self.results else None


# --------------------------------------------------------------------------- Chromium + CDP


class CdpError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium in its own process group, with one page driven over DevTools."""

    def __init__(
        self,
        workdir: Path,
        *,
        map_to_port: int,
        extra_flags: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.map_to_port = map_to_port
        self.extra_flags = list(extra_flags or [])
        self.process: subprocess.Popen[bytes] | None = None
        self._crash_database: str | None = None
        self.log_path = workdir / "chromium.log"
        self.events: list[dict[str, Any]] = []
        self._ws: websocket.WebSocket | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._reply_ready = threading.Condition(self._lock)
        self._next_id = 0
        self._closed = False
        self.debug_port = 0

    # -- lifecycle

    def argv(self, profile_dir: Path) -> list[str]:
        # Never --disable-web-security or --disable-features=LocalNetworkAccessChecks: the point
        # is that Chrome's own CORS and Local Network Access checks judge the server.
        return [
            str(CHROMIUM),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile_dir}",
            # Port 0: Chromium picks a free port and writes it to DevToolsActivePort (no race).
            "--remote-debugging-port=0",
            f"--host-resolver-rules=MAP {COLAB_HOST} 127.0.0.1:{self.map_to_port}",
            "--ignore-certificate-errors",
            # The fake Colab is served from 127.0.0.1, which Chrome would class as `loopback`, so
            # its requests to localhost would skip the Local Network Access checks entirely.
            # Classing it `public` (what the real Colab is) keeps those checks on; the test then
            # grants the permission as the user does by clicking Allow (`allow_loopback`).
            f"--ip-address-space-overrides=127.0.0.1:{self.map_to_port}=public",
            *self.extra_flags,
            "about:blank",
        ]

    def __enter__(self) -> Chromium:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        # Debian's wrapper turns the crash reporter on; its handler daemonizes out of the
        # browser's process group (so killpg misses it) and keeps its database under HOME
        self._crash_database = str(Path.home() / ".config" / "chromium")
        self.workdir.mkdir(parents=True, exist_ok=True)
        profile_dir = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=self.workdir))
        self._profile_dir = profile_dir
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv(profile_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        active = profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, ValueError, IndexError):
                # "<port>\n<browser ws path>": wait for both lines so a half-written file
                # never yields a truncated port.
                port, path = active.read_text().splitlines()[:2]
                if path.startswith("/devtools/"):
                    self.debug_port = int(port)
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromium gave no DevTools port:\n{self.log_tail()}")
            time.sleep(0.05)
        target = self._page_target(deadline)
        # No Origin header: Chromium refuses DevTools websockets from unlisted origins.
        self._ws = websocket.create_connection(
            target["webSocketDebuggerUrl"], timeout=10, suppress_origin=True
        )
        self._ws.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        # Runtime: console.* calls and uncaught exceptions; Log: what Chrome itself prints, which
        # is where CORS and Local Network Access refusals land. (Console.enable would only
        # repeat these as deprecated Console.messageAdded events.)
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def _page_target(self, deadline: float) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.debug_port}/json"
        while True:
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                with urllib.request.urlopen(url, timeout=2) as resp:
                    targets = json.loads(resp.read())
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return pages[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no page target from {url}:\n{self.log_tail()}")
            time.sleep(0.05)

    def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            # Renderers and zygotes share the group and may outlive the browser process.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        _stop_crash_handlers(self._crash_database)
        if self._reader is not None:
            self._reader.join(timeout=2)
        with contextlib.suppress(AttributeError):
            shutil.rmtree(self._profile_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no chromium log)"

    # -- protocol

    def _read_loop(self) -> None:
        assert self._ws is not None
        while not self._closed:
            try:
                raw = self._ws.recv()
            except Exception:
                break
            if not raw:
                break
            message = json.loads(raw)
            with self._lock:
                if "id" in message:
                    self._replies[message["id"]] = message
                    self._reply_ready.notify_all()
                else:
                    self.events.append(message)
        with self._lock:
            self._closed = True
            self._reply_ready.notify_all()

    def call(self, method: str, timeout: float = 10, **params: Any) -> dict[str, Any]:
        """Send one CDP command and wait for its reply; raise CdpError on a protocol error."""
        assert self._ws is not None
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._replies:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise CdpError(f"{method}: no reply (closed={self._closed})")
                self._reply_ready.wait(remaining)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def allow_loopback(self, origin: str = COLAB_ORIGIN) -> str:
        """Grant `origin` what the user grants by clicking Allow on Chrome's Local Network Access
        prompt for localhost; return the permission name this Chromium knows it by.

        Headless Chrome answers that prompt with Block by itself. Chromium 142-14x call it
        `localNetworkAccess`; later versions split it into `localNetwork` (LAN addresses) and
        `loopbackNetwork` (this device, "Apps on device" in settings), and only the latter lets
        a public page reach localhost.
        """
        errors = []
        for name in ("loopbackNetwork", "localNetworkAccess"):
            try:
                self.call("Browser.grantPermissions", permissions=[name], origin=origin)
                return name
            except CdpError as exc:
                errors.append(str(exc))
        raise CdpError("cannot grant local network access: " + "; ".join(errors))

    def navigate(self, url: str) -> None:
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {result['errorText']}")

    # -- what the page said

    def messages(self) -> list[str]:
        """Console calls, Log entries and uncaught exceptions, as text lines."""
        with self._lock:
            events = list(self.events)
        lines = []
        for event in events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                args = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
                )
                lines.append(f"console.{params.get('type')}: {args}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                lines.append(
                    f"log.{entry.get('level')}[{entry.get('source')}]: {entry.get('text')}"
                )
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                exc = details.get("exception", {})
                lines.append(f"exception: {exc.get('description') or details.get('text')}")
        return lines

    def console_text(self) -> str:
        return "\n".join(self.messages())


# --------------------------------------------------------------------------- the Colab page

# What Colab's page does with a local-runtime URL: credentialed REST calls with the token in the
# query, then the kernel websocket and an execute_request. The result goes back to /result.
COLAB_PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>fake colab</title></head><body>
<script>
(async () => {
  const steps = [];
  const result = {ok: false, output: "", error: null, steps};
  try {
    const target = new URL(new URLSearchParams(location.search).get("target"));
    const base = target.origin;
    const q = "?token=" + encodeURIComponent(target.searchParams.get("token"));
    let resp = await fetch(base + "/api/kernelspecs" + q, {credentials: "include"});
    if (!resp.ok) throw new Error("GET /api/kernelspecs: HTTP " + resp.status);
    const specs = await resp.json();
    steps.push("kernelspecs:" + specs.default);
    resp = await fetch(base + "/api/kernels" + q, {
      method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: "{}",
    });
    if (resp.status !== 201) throw new Error("POST /api/kernels: HTTP " + resp.status);
    const kernel = await resp.json();
    steps.push("kernel");
    const wsUrl = base.replace(/^http/, "ws") + "/api/kernels/" + kernel.id + "/channels" + q;
    result.output = await new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl);
      const msgId = crypto.randomUUID();
      let out = "";
      const timer = setTimeout(() => reject(new Error("no output within 30 s: " + out)), 30000);
      const done = (fn, value) => { clearTimeout(timer); ws.close(); fn(value); };
      ws.onopen = () => {
        steps.push("ws-open");
        ws.send(JSON.stringify({
          header: {msg_id: msgId, session: crypto.randomUUID(), username: "colab",
                   msg_type: "execute_request", version: "5.3", date: new Date().toISOString()},
          parent_header: {}, metadata: {}, channel: "shell", buffers: [],
          content: {code: "print(6*7)", silent: false, store_history: false,
                    user_expressions: {}, allow_stdin: false, stop_on_error: true},
        }));
      };
      ws.onerror = () => done(reject, new Error("websocket error"));
      ws.onclose = (e) => done(reject, new Error("websocket closed: " + e.code));
      ws.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        if (!msg.parent_header || msg.parent_header.msg_id !== msgId) return;
        if (msg.msg_type === "stream") { out += msg.content.text; steps.push("stream"); }
        if (msg.msg_type === "error") done(reject, new Error(msg.content.ename));
        if (msg.msg_type === "status" && msg.content.execution_state === "idle") {
          done(resolve, out);
        }
      };
    });
    result.ok = result.output.trim() === "42";
    resp = await fetch(base + "/api/kernels/" + kernel.id + q,
                       {method: "DELETE", credentials: "include"});
    steps.push("kernel-deleted:" + resp.status);
  } catch (e) {
    result.error = String((e && e.message) || e);
    console.error("fake colab: " + result.error);
  }
  await fetch("/result", {method: "POST", headers: {"Content-Type": "application/json"},
                          body: JSON.stringify(result)});
})();
</script></body></html>
"""


class FakeColab:
    """The page server and the browser together: `run(url)` is "paste the URL into Colab"."""

    def __init__(self, server: PageServer, browser: Chromium) -> None:
        self.server = server
        self.browser = browser

    def run(self, runtime_url: str, timeout: float = 60) -> dict[str, Any] | None:
        """Load the fake Colab page against `runtime_url`; the page's result, or None on timeout."""
        self.browser.navigate(f"{COLAB_ORIGIN}/?target={urllib.parse.quote(runtime_url, safe='')}")
        return self.server.wait_result(timeout)

    def console_text(self) -> str:
        return self.browser.console_text()


@contextlib.contextmanager
def fake_colab(workdir: Path, extra_flags: list[str] | None = None) -> Iterator[FakeColab]:
    """A Chromium that sees the test's page server as https://colab.research.google.com."""
    cert, key = make_certificate(workdir)
    with (
        PageServer(cert, key, COLAB_PAGE) as server,
        Chromium(workdir, map_to_port=server.port, extra_flags=extra_flags) as browser,
    ):
        yield FakeColab(server, browser)


def _stop_crash_handlers(database: str | None) -> None:
    """Chromium's crash handlers for `database`: they outlived every test before this."""
    if not database:
        return
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "crashpad_handler" in cmdline and f"--database={database}" in cmdline:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                found.append(proc)
    psutil.wait_procs(found, timeout=5)
