"""The host's Jupyter config scan, what colabtunnel makes of it, and the host's readiness check.

- The scan (remote/inspect.py) runs for real on this machine through LocalHost: it asks
  `jupyter --paths --json` where config lives, reads .py and .json files (and *.d/*.json), knows an
  assignment from a comment or a comparison, reads literal values, and never lets a token value
  leave the host.
- hostconfig decides per flavour which settings Jupyter honours, which are overridden, what the
  note says, and when an emptied token is refused.
- The readiness check (remote/wait.py) is run against servers that answer like Jupyter
  and are not: each way gets its own stage, never "answered without a token" by mistake.
- The Colab probe names a base_url, a TLS server and a non-JSON answer for what they are.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from colabtunnel import remote
from colabtunnel.jupyter import hostconfig, inspection
from colabtunnel.jupyter.flavours import by_key
from colabtunnel.jupyter.probe import run_probe
from colabtunnel.jupyter.verdicts import FIXES
from colabtunnel.profiles import Profile
from colabtunnel.ssh.connection import RunResult
from colabtunnel.ssh.hosts import LocalHost
from tests.browser import make_certificate
from tests.fake_http import fake_server
from tests.jupyter_helpers import running_jupyter
from tests.tcp_servers import TcpServer

pytestmark = pytest.mark.timeout(120)

JUPYTER = str(Path(sys.executable).with_name("jupyter"))
SECRET = "not-to-leave-the-host-7f3a"


class RecordingHost(LocalHost):
    """This machine, keeping what the host scripts printed."""

    outputs: list[str]

    def __init__(self) -> None:
        self.outputs = []

    def run_script(self, script: str, timeout: float) -> RunResult:
        done = super().run_script(script, timeout)
        self.outputs.append(done.stdout + done.stderr)
        return done


def _scan(tmp_path: Path, activate: str, jupyter_cmd: str = JUPYTER) -> tuple[Any, RecordingHost]:
    host = RecordingHost()
    profile = Profile(name="scan", host="local", jupyter=jupyter_cmd, activate=activate)
    return inspection.inspect(host, profile), host


@pytest.fixture
def config_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A JUPYTER_CONFIG_DIR and a JUPYTER_CONFIG_PATH directory with the shapes users write."""
    own, extra = tmp_path / "own", tmp_path / "extra"
    (extra / "jupyter_server_config.d").mkdir(parents=True)
    own.mkdir()
    (own / "jupyter_server_config.py").write_text(
        textwrap.dedent(f"""\
            import os
            c.ServerApp.base_url = '/a/'  # a trailing comment
            c.ServerApp.certfile = os.path.expanduser('~/cert.pem')
            c.ServerApp.token = '{SECRET}'
            c.IdentityProvider.token = u""
            c.ServerApp.base_url == '/not-an-assignment/'
            c.ServerApp.base_url_extra = '/another-setting/'
            # c.ServerApp.base_url = '/commented-out/'
            c.LabApp.base_url = '/not-a-watched-class/'
            if True:
                c.NotebookApp.allow_remote_access = True
            c.ServerApp.keyfile = ''
            """)
    )
    (extra / "jupyter_config.json").write_text(
        '{\n  "ServerApp": {\n    "token": "' + SECRET + '",\n    "open_browser": false\n  },\n'
        '  "NotebookApp": {\n    "open_browser": false,\n    "keyfile": "/k.pem"\n  }\n}\n'
    )
    (extra / "jupyter_server_config.d" / "site.json").write_text(
        '{"ServerApp": {"allow_remote_access": true}}'
    )
    (extra / "jupyter_notebook_config.json").write_text("{ not json")
    return own, extra


def test_scan_reads_every_config_directory_jupyter_lists(
    tmp_path: Path, config_tree: tuple[Path, Path]
) -> None:
    own, extra = config_tree
    info, host = _scan(
        tmp_path, f"export JUPYTER_CONFIG_DIR={own}\nexport JUPYTER_CONFIG_PATH={extra}"
    )
    # a token that is not empty is never sent back, not even in the raw output
    assert host.outputs and not any(SECRET in output for output in host.outputs)
    found = {(Path(s.file).name, s.line, s.section, s.trait): s for s in info.config}
    assert set(found) == {
        ("jupyter_server_config.py", 2, "ServerApp", "base_url"),
        ("jupyter_server_config.py", 3, "ServerApp", "certfile"),
        ("jupyter_server_config.py", 5, "IdentityProvider", "token"),
        ("jupyter_server_config.py", 11, "NotebookApp", "allow_remote_access"),
        ("jupyter_server_config.py", 12, "ServerApp", "keyfile"),
        ("jupyter_config.json", 8, "NotebookApp", "keyfile"),
        ("site.json", 1, "ServerApp", "allow_remote_access"),
    }, info.config
    assert found[("jupyter_server_config.py", 2, "ServerApp", "base_url")].value == "/a/"
    certfile = found[("jupyter_server_config.py", 3, "ServerApp", "certfile")]
    assert not certfile.literal and certfile.text == "os.path.expanduser('~/cert.pem')"
    assert found[("jupyter_server_config.py", 5, "IdentityProvider", "token")].value == ""
    assert found[("site.json", 1, "ServerApp", "allow_remote_access")].value is True
    # what `jupyter --paths` lists: JUPYTER_CONFIG_DIR, JUPYTER_CONFIG_PATH, the environment's own
    for directory in (own, extra, Path(sys.prefix) / "etc" / "jupyter"):
        assert str(directory) in info.config_dirs, info.config_dirs
    assert info.config_problem is None


def test_scan_lists_what_jupyter_paths_lists(
    tmp_path: Path, config_tree: tuple[Path, Path]
) -> None:
    own, extra = config_tree
    activate = f"export JUPYTER_CONFIG_DIR={own}\nexport JUPYTER_CONFIG_PATH={extra}"
    info, _ = _scan(tmp_path, activate)
    listed = subprocess.run(
        ["bash", "-c", f"{activate}\n{JUPYTER} --paths --json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert info.config_dirs == json.loads(listed.stdout)["config"]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python without jupyter_core: a `jupyter` whose interpreter cannot answer in-process."""
    bare = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    return bare / "bin" / "python"


def _jupyter_wrapper(tmp_path: Path, python: Path, body: str) -> str:
    wrapper = tmp_path / "jupyter"
    wrapper.write_text(f"#!{python}\n{body}\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def test_scan_asks_the_jupyter_command_when_its_python_cannot_answer(
    tmp_path: Path, config_tree: tuple[Path, Path], bare_python: Path
) -> None:
    own, extra = config_tree
    forward = f"import os, sys\nos.execv({JUPYTER!r}, [{JUPYTER!r}, *sys.argv[1:]])"
    wrapper = _jupyter_wrapper(tmp_path, bare_python, forward)
    activate = f"export JUPYTER_CONFIG_DIR={own}\nexport JUPYTER_CONFIG_PATH={extra}"
    info, _ = _scan(tmp_path, activate, jupyter_cmd=wrapper)
    assert str(own) in info.config_dirs and str(extra) in info.config_dirs
    assert info.config_problem is None
    assert ("jupyter_config.json", 8, "NotebookApp", "keyfile") in {
        (Path(s.file).name, s.line, s.section, s.trait) for s in info.config
    }


def test_scan_falls_back_to_the_config_dir_when_nothing_lists_paths(
    tmp_path: Path, config_tree: tuple[Path, Path], bare_python: Path
) -> None:
    own, _ = config_tree
    wrapper = _jupyter_wrapper(tmp_path, bare_python, "import sys\nsys.exit('no --paths here')")
    info, _ = _scan(tmp_path, f"export JUPYTER_CONFIG_DIR={own}", jupyter_cmd=wrapper)
    assert info.config_dirs == [str(own)]
    assert info.config_problem == (
        f"`jupyter --paths --json` failed (exit 1): only {own} was scanned"
    )
    assert {s.trait for s in info.config} == {
        "base_url",
        "certfile",
        "token",
        "keyfile",
        "allow_remote_access",
    }


# ---------------------------------------------------------------------------------------------
# hostconfig: per flavour
# ---------------------------------------------------------------------------------------------


def _setting(section: str, trait: str, value: Any, literal: bool = True) -> hostconfig.Setting:
    text = repr(value) if literal else "os.environ['X']"
    return hostconfig.Setting(
        "/h/.jupyter/jupyter_server_config.py", 4, section, trait, text, literal, value
    )


SETTINGS = [
    _setting("ServerApp", "base_url", "/jupyter/"),
    _setting("NotebookApp", "base_url", "/nb/"),
    _setting("ServerApp", "base_url", "/"),  # already what Colab needs: nothing to say
    _setting("ServerApp", "certfile", None, literal=False),  # unknown value: overridden anyway
    _setting("NotebookApp", "allow_remote_access", True),
    _setting("ServerApp", "allow_remote_access", False),
]


@pytest.mark.parametrize(
    ("flavour", "noted", "shimmed"),
    [
        ("notebook6", [("NotebookApp", "base_url"), ("NotebookApp", "allow_remote_access")], set()),
        (
            "notebook7",
            [
                ("ServerApp", "base_url"),
                ("NotebookApp", "base_url"),
                ("ServerApp", "certfile"),
                ("NotebookApp", "allow_remote_access"),
            ],
            {"base_url", "allow_remote_access"},
        ),
        ("server", [("ServerApp", "base_url"), ("ServerApp", "certfile")], set()),
    ],
)
def test_overridden_settings_are_the_ones_the_flavour_reads(
    flavour: str, noted: list[tuple[str, str]], shimmed: set[str]
) -> None:
    chosen = by_key(flavour)
    found = hostconfig.overridden(SETTINGS, chosen)
    assert [(s.section, s.trait) for s in found] == noted
    assert hostconfig.shimmed(SETTINGS, chosen) == shimmed


def test_note_names_file_line_value_flag_and_reason() -> None:
    nb7 = by_key("notebook7")
    base, moved, cert = SETTINGS[0], SETTINGS[1], SETTINGS[3]
    assert hostconfig.override_note(base, nb7) == (
        "/h/.jupyter/jupyter_server_config.py, line 4: ServerApp.base_url = '/jupyter/' is "
        "overridden by --ServerApp.base_url=/: Colab calls the API at the root of the URL it is given"
    )
    assert "NotebookApp.base_url = '/nb/' is overridden by --NotebookApp.base_url=/" in (
        hostconfig.override_note(moved, nb7)
    )
    assert "ServerApp.certfile = os.environ['X'] is overridden by --ServerApp.certfile=''" in (
        hostconfig.override_note(cert, nb7)
    )
    # Notebook 6 reads NotebookApp only: its flag is a NotebookApp one
    assert "--NotebookApp.base_url=/" in hostconfig.override_note(moved, by_key("notebook6"))


@pytest.mark.parametrize(
    ("section", "refused_on"),
    [
        ("ServerApp", {"notebook7", "lab", "server"}),
        ("IdentityProvider", {"notebook7", "lab", "server"}),
        ("NotebookApp", {"notebook6", "notebook7", "lab"}),  # moved by notebook_shim on 7 / lab
    ],
)
def test_emptied_token_refused_where_the_flavour_reads_it(
    section: str, refused_on: set[str]
) -> None:
    settings = [_setting(section, "token", "")]
    for key in ("notebook6", "notebook7", "lab", "server"):
        error = hostconfig.token_error(settings, by_key(key), "on gpu")
        assert (error is not None) == (key in refused_on), key
        if error is not None:
            assert error.message.startswith("a Jupyter config on gpu disables authentication (")
            assert f"line 4: {section}.token = ''" in error.message


# ---------------------------------------------------------------------------------------------
# the readiness check on the host: its own stage for each kind of answer
# ---------------------------------------------------------------------------------------------


def _wait(pid: int, port: int, timeout: float = 20) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-", str(pid), str(port), str(timeout), "[]"],
        input=remote.python("wait.py"),
        capture_output=True,
        text=True,
        env={**os.environ, "JUPYTER_TOKEN": "wait-test-token"},
        timeout=timeout + 30,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith(remote.MARKER))
    return json.loads(line[len(remote.MARKER) :])


API = [200, "application/json", '{"version": "2.14.0"}', ""]
SPECS = [200, "application/json", '{"default": "python3", "kernelspecs": {}}', ""]
REFUSED = [403, "application/json", '{"message": "Forbidden"}', ""]
HTML = [200, "text/html", "<html>a login page</html>", ""]


@pytest.mark.parametrize(
    ("answers", "stage"),
    [
        ({"/api": API, "/api/kernelspecs": REFUSED, "/api/kernelspecs auth": SPECS}, None),
        ({"/api": API, "/api/kernelspecs": SPECS}, "auth-disabled"),
        ({"/api": API, "/api/kernelspecs": HTML, "/api/kernelspecs auth": SPECS}, "auth-unclear"),
        (
            {
                "/api": API,
                "/api/kernelspecs": [302, "text/html", "", "/elsewhere"],
                "/api/kernelspecs auth": SPECS,
            },
            "auth-unclear",
        ),
        ({"/api": API, "/api/kernelspecs": REFUSED}, "token-rejected"),
        ({"/x/api": API}, "not-root"),
        ({"/api": [302, "text/html", "", "/x/api"]}, "not-root"),
        ({"/api": HTML}, "not-jupyter"),
    ],
    ids=["jupyter", "no-auth", "html", "redirect", "other-token", "404", "302", "html-api"],
)
def test_readiness_stage_names_what_answered(
    answers: dict[str, list[Any]], stage: str | None
) -> None:
    with fake_server(answers) as (server, port):
        verdict = _wait(server.pid, port)
    if stage is None:
        assert verdict["ok"] is True, verdict
    else:
        assert verdict["ok"] is False and verdict["stage"] == stage, verdict


def test_readiness_ignores_an_answer_from_a_process_that_is_not_ours() -> None:
    """Someone else holds the port; our "Jupyter" (a sleep) never binds it and exits: the verdict
    is that it exited, not a diagnosis of the other server's answer."""
    with fake_server({"/api": HTML}) as (_, port):
        ours = subprocess.Popen(["sleep", "1.5"])
        try:
            verdict = _wait(ours.pid, port)
        finally:
            ours.kill()
            ours.wait()
    assert verdict["stage"] == "exited", verdict


def test_readiness_ignores_an_answer_that_outlives_our_process(tmp_path: Path) -> None:
    """The race the parallel suite hit: our Jupyter is alive when the other server takes the
    request, and gone (port taken, exited, reaped) when the answer arrives. The verdict is that
    it exited, not that the other server rejected our token. The other server holds its answer
    until the test has ended and reaped our process, so the window is certain, not lucky."""
    asked = tmp_path / "asked"
    answers = {"/api": API, "/api/kernelspecs": REFUSED, "@hold": ["/api", str(asked), 1.5]}
    with fake_server(answers) as (_, port):
        ours = subprocess.Popen(["sleep", "60"])
        reaper = threading.Thread(target=_end_when_asked, args=(ours, asked))
        reaper.start()
        try:
            verdict = _wait(ours.pid, port)
        finally:
            ours.kill()
            reaper.join()
    assert asked.exists(), "the other server was never asked"
    assert verdict["stage"] == "exited", verdict


def _end_when_asked(proc: subprocess.Popen[bytes], asked: Path) -> None:
    deadline = time.monotonic() + 20
    while not asked.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()


def _tls_listener(directory: Path) -> TcpServer:
    """A real TLS server: it completes handshakes and drops plain HTTP unanswered, as Jupyter
    with a certfile does."""
    cert, key = make_certificate(directory, host="localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handle(conn: Any) -> None:
        with context.wrap_socket(conn, server_side=True):
            pass

    return TcpServer(handle)


def test_probe_names_a_tls_server_and_not_an_unreachable_one(tmp_path: Path) -> None:
    server = _tls_listener(tmp_path)
    try:
        report = run_probe(f"http://127.0.0.1:{server.port}/", "probe-token", timeout=10)
    finally:
        server.close()
    failure = report.first_failure()
    assert failure is not None and failure.fix == FIXES["https"], report.to_dict()


def test_probe_names_a_base_url_at_the_root(tmp_path: Path) -> None:
    token = "probe-base-url-token-" + "k" * 20
    with running_jupyter(tmp_path, token=token, extra_args=["--ServerApp.base_url=/x/"]) as server:
        report = run_probe(server.base_url, token, timeout=30, execute=False)
    checks = {c.name: c for c in report.checks}
    assert report.first_failure() is not None
    assert report.first_failure().fix == FIXES["base-url"], report.to_dict()  # type: ignore[union-attr]
    assert checks["auth-enforced"].fix == FIXES["base-url"], report.to_dict()
    assert not any(FIXES["auth-disabled"] in (c.fix or "") for c in report.checks)


def test_probe_calls_only_api_json_answered_without_token_auth_disabled() -> None:
    with fake_server({"/api/kernelspecs": HTML, "/api/kernelspecs auth": SPECS}) as (_, port):
        report = run_probe(f"http://127.0.0.1:{port}/", "probe-token", timeout=10, execute=False)
    auth = next(c for c in report.checks if c.name == "auth-enforced")
    assert not auth.ok and auth.fix == FIXES["bad-json"], report.to_dict()
