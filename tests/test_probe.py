"""The Colab probe against real Jupyter servers: one correct server, and one per misconfiguration.

No mocks: every server here is a real `python -m jupyter ...` from the test venv, started with the
token in JUPYTER_TOKEN. Negative controls prove each check can fail and that its fix names the
actual cause.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from colabtunnel.jupyter.colab_calls import COLAB_ORIGIN, HOST_SIDE, NEW_KERNEL
from colabtunnel.jupyter.probe import run_probe, run_probe_on_answers
from colabtunnel.jupyter.verdicts import FIXES, Check, ProbeReport, cors_problems, status_problem
from colabtunnel.remote.colab_answers import answers as host_answers
from tests.jupyter_helpers import JupyterServer, config_dir, free_port, running_jupyter

pytestmark = pytest.mark.timeout(90)

TOKEN = "probe-test-token-Zq7vK2mN9xR4tW8yB3cF6hJ1"
ALL_CHECKS = [
    "preflight",
    "cors-get",
    "kernelspecs",
    "auth-enforced",
    "foreign-origin",
    "build-info",
    "kernel-start",
    "kernel-execute",
]


HTTP_CHECKS = ALL_CHECKS[:-2]


def describe(report: ProbeReport) -> str:
    """Readable report for assertion messages."""
    return json.dumps(report.to_dict(), indent=2)


def recorded(server: JupyterServer, token: str = TOKEN) -> dict[str, object]:
    """What `up`'s readiness script records on the host (remote/colab_answers.py, run here)."""
    return host_answers(server.port, token, [r.to_json(COLAB_ORIGIN) for r in HOST_SIDE])


def verdicts(report: ProbeReport, names: list[str]) -> list[tuple[str, bool, str]]:
    return [(c.name, c.ok, c.detail) for c in report.checks if c.name in names]


def judged_alike(server: JupyterServer, token: str = TOKEN) -> ProbeReport:
    """run_probe() through HTTP, and the same checks judged from answers recorded beside the
    server (what `up` does): the same verdicts and details, check by check. Returns the first."""
    through = run_probe(server.base_url, token, execute=False, timeout=30)
    on_host = run_probe_on_answers(server.base_url, token, recorded(server, token), timeout=30)
    on_host.settle(30)
    assert verdicts(on_host, HTTP_CHECKS) == verdicts(through, HTTP_CHECKS), describe(
        through
    ) + describe(on_host)
    return through


@pytest.fixture(scope="module")
def colab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with running_jupyter(tmp_path_factory.mktemp("colab-jupyter"), token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def good_report(colab_server: JupyterServer) -> ProbeReport:
    return run_probe(colab_server.base_url, TOKEN, timeout=30)


# ---------------------------------------------------------------------------------------------
# A correctly started server passes every check
# ---------------------------------------------------------------------------------------------


def test_probe_passes_against_server_with_colab_flags(good_report: ProbeReport) -> None:
    assert good_report.ok, describe(good_report)
    assert [c.name for c in good_report.checks] == ALL_CHECKS
    assert good_report.first_failure() is None
    assert all(c.fix is None for c in good_report.checks)
    checks = {c.name: c for c in good_report.checks}
    assert "42" in checks["kernel-execute"].detail
    assert "404" in checks["build-info"].detail  # Jupyter has no Colab build info: normal
    assert "403" in checks["auth-enforced"].detail
    assert f"Access-Control-Allow-Origin: {COLAB_ORIGIN}" in checks["preflight"].detail


def test_report_url_is_the_root_without_token(
    colab_server: JupyterServer, good_report: ProbeReport
) -> None:
    assert good_report.url == colab_server.base_url
    data = good_report.to_dict()
    assert data["ok"] is True
    assert data["url"] == colab_server.base_url
    assert [c["name"] for c in data["checks"]] == ALL_CHECKS
    json.dumps(data)  # JSON-able


def test_probe_deletes_its_kernel(colab_server: JupyterServer, good_report: ProbeReport) -> None:
    assert good_report.ok, describe(good_report)
    resp = requests.get(colab_server.base_url + "api/kernels", params={"token": TOKEN}, timeout=10)
    assert resp.status_code == 200
    assert resp.json() == []


def test_token_never_appears_in_report(colab_server: JupyterServer) -> None:
    # Even when the caller passes the token inside the URL, and for failing reports.
    reports = [
        run_probe(f"{colab_server.base_url}?token={TOKEN}", TOKEN, timeout=30),
        run_probe(f"{colab_server.base_url}tree/?token={TOKEN}", TOKEN, execute=False),
        run_probe(f"http://127.0.0.1:{free_port()}/?token={TOKEN}", TOKEN),
    ]
    assert reports[0].ok, describe(reports[0])
    for report in reports:
        text = str(report.to_dict()) + repr(report)
        assert TOKEN not in text
        assert "?token=" not in report.url


def test_answers_recorded_on_the_host_pass_and_the_kernel_runs_through_the_url(
    colab_server: JupyterServer,
) -> None:
    report = run_probe_on_answers(colab_server.base_url, TOKEN, recorded(colab_server), timeout=30)
    report.settle(30)
    assert report.ok, describe(report)
    assert [c.name for c in report.checks] == [*ALL_CHECKS[:-1], "tunnel-get", "kernel-execute"]
    assert verdicts(report, HTTP_CHECKS) == verdicts(judged_alike(colab_server), HTTP_CHECKS)
    assert "42" in report.checks[-1].detail
    resp = requests.get(colab_server.base_url + "api/kernels", params={"token": TOKEN}, timeout=10)
    assert resp.json() == []  # the kernel the host created is deleted through the URL


def test_the_kernel_the_host_creates_has_started_when_the_host_reports(
    colab_server: JupyterServer,
) -> None:
    """A websocket that reaches a kernel while it starts waits half a second for jupyter_server's
    second kernel_info nudge (the probe step of `up` on loopback: 0.79 s against 0.42): the host
    reports only once the kernel it created has answered Jupyter's kernel_info. Jupyter keeps a
    kernel "starting" until something talks to it."""
    answers = recorded(colab_server)
    created = answers[NEW_KERNEL.key]
    assert isinstance(created, dict) and created["status"] == 201, created
    kernel = json.loads(created["body"])["id"]
    url = f"{colab_server.base_url}api/kernels/{kernel}"
    try:
        # the kernel's status message follows its kernel_info answer by a moment; without an
        # answer it stays "starting" (3 s and more, measured)
        deadline = time.monotonic() + 2
        while (model := requests.get(url, params={"token": TOKEN}, timeout=10).json())[
            "execution_state"
        ] == "starting" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert model["execution_state"] != "starting", model
    finally:
        requests.delete(url, params={"token": TOKEN}, timeout=10)


def test_with_answers_from_the_host_both_tunnel_checks_still_go_through_the_url(
    colab_server: JupyterServer,
) -> None:
    """The host's answers are all good; the URL (the tunnel) leads nowhere: the credentialed
    request and the kernel's websocket each fail on their own (both cross it)."""
    answers = recorded(colab_server)
    report = run_probe_on_answers(f"http://127.0.0.1:{free_port()}/", TOKEN, answers, timeout=5)
    checks = {c.name: c for c in report.checks}
    assert all(checks[name].ok for name in [*HTTP_CHECKS, "kernel-start"]), describe(report)
    assert not checks["tunnel-get"].ok and "refused" in checks["tunnel-get"].detail.lower()
    assert not checks["kernel-execute"].ok, describe(report)
    assert report.first_failure() is checks["tunnel-get"]
    kernel = checks["kernel-start"].detail.rsplit(" ", 1)[1]
    requests.delete(
        f"{colab_server.base_url}api/kernels/{kernel}", params={"token": TOKEN}, timeout=10
    )


def test_execute_false_skips_the_kernel(colab_server: JupyterServer) -> None:
    report = run_probe(colab_server.base_url, TOKEN, execute=False)
    assert report.ok, describe(report)
    assert [c.name for c in report.checks] == ALL_CHECKS[:-2]


def test_unexpected_output_fails_kernel_execute(colab_server: JupyterServer) -> None:
    report = run_probe(colab_server.base_url, TOKEN, code="print(6*6)", expect="42")
    failure = report.first_failure()
    assert failure is not None and failure.name == "kernel-execute", describe(report)
    assert "36" in failure.detail
    assert failure.fix


def test_kernel_that_never_finishes_times_out_cleanly(colab_server: JupyterServer) -> None:
    started = time.monotonic()
    report = run_probe(colab_server.base_url, TOKEN, code="import time; time.sleep(30)", timeout=3)
    assert time.monotonic() - started < 15
    failure = report.first_failure()
    assert failure is not None and failure.name == "kernel-execute", describe(report)
    assert "timeout" in failure.detail
    # The busy kernel is still deleted.
    resp = requests.get(colab_server.base_url + "api/kernels", params={"token": TOKEN}, timeout=10)
    assert resp.json() == []


# ---------------------------------------------------------------------------------------------
# Wrong URL / wrong token / nothing listening, against the shared server
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["tree/", "tree", "lab"])
def test_sub_path_url_fails_root_url_check(colab_server: JupyterServer, path: str) -> None:
    report = run_probe(colab_server.base_url + path, TOKEN, timeout=30)
    assert not report.ok
    failure = report.first_failure()
    assert failure is not None and failure.name == "root-url", describe(report)
    assert "root" in (failure.fix or "")
    # Colab would get 404/405 there, and the probe shows it.
    preflight = next(c for c in report.checks if c.name == "preflight")
    assert not preflight.ok
    assert "405" in preflight.detail or "404" in preflight.detail


def test_wrong_token_is_diagnosed(colab_server: JupyterServer) -> None:
    report = run_probe(colab_server.base_url, "not-the-token-" + "x" * 30, timeout=30)
    failure = report.first_failure()
    assert failure is not None and failure.name == "kernelspecs", describe(report)
    assert "403" in failure.detail
    assert "token" in (failure.fix or "")


def test_connection_refused_is_a_fast_failing_report() -> None:
    port = free_port()  # nothing listens there any more
    started = time.monotonic()
    report = run_probe(f"http://127.0.0.1:{port}/", TOKEN, timeout=10)
    assert time.monotonic() - started < 5
    assert not report.ok
    assert len(report.checks) == 1, describe(report)
    failure = report.first_failure()
    assert failure is not None and failure.name == "preflight"
    assert "refused" in failure.detail.lower()
    assert "tunnel" in (failure.fix or "")


def test_server_that_never_answers_times_out_cleanly() -> None:
    # A socket that accepts connections (kernel backlog) but never speaks HTTP: a hung tunnel.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        report = run_probe(f"http://127.0.0.1:{port}/", TOKEN, timeout=1)
    assert time.monotonic() - started < 5
    assert len(report.checks) == 1, describe(report)
    failure = report.first_failure()
    assert failure is not None and failure.name == "preflight"
    assert failure.fix == FIXES["timeout"]
    assert TOKEN not in str(report.to_dict())


def test_bad_base_url_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        run_probe("127.0.0.1:8888", TOKEN)


# ---------------------------------------------------------------------------------------------
# Negative controls: misconfigured real servers
# ---------------------------------------------------------------------------------------------


def test_missing_allow_credentials_fails_with_diagnosis(tmp_path: Path) -> None:
    args = [f"--ServerApp.allow_origin={COLAB_ORIGIN}"]
    with running_jupyter(tmp_path, token=TOKEN, colab_flags=False, extra_args=args) as server:
        report = judged_alike(server)
    failure = report.first_failure()
    assert failure is not None, describe(report)
    assert failure.name == "preflight"
    assert "Access-Control-Allow-Credentials: (absent)" in failure.detail
    assert "allow_credentials" in (failure.fix or "")
    assert "NotebookApp" in (failure.fix or "")
    assert {c.name for c in report.checks if not c.ok} == {"preflight", "cors-get", "kernelspecs"}


@pytest.mark.parametrize(
    ("allow_origin", "problem", "phrase"),
    [
        ("*", "acao-star", "'*'"),
        (COLAB_ORIGIN + "/", "acao-trailing-slash", "trailing slash"),
    ],
)
def test_wrong_allow_origin_fails_with_diagnosis(
    tmp_path: Path, allow_origin: str, problem: str, phrase: str
) -> None:
    args = [f"--ServerApp.allow_origin={allow_origin}", "--ServerApp.allow_credentials=True"]
    with running_jupyter(tmp_path, token=TOKEN, colab_flags=False, extra_args=args) as server:
        report = judged_alike(server)
    failure = report.first_failure()
    assert failure is not None and failure.name == "preflight", describe(report)
    assert failure.fix == FIXES[problem]
    assert phrase in failure.fix
    assert f"Access-Control-Allow-Origin: {allow_origin}" in failure.detail
    foreign = next(c for c in report.checks if c.name == "foreign-origin")
    assert foreign.ok is (allow_origin != "*")


def test_no_allow_origin_echoes_foreign_origin(tmp_path: Path) -> None:
    # Without allow_origin, Jupyter echoes any Origin on token-authenticated requests.
    with running_jupyter(tmp_path, token=TOKEN, colab_flags=False) as server:
        report = judged_alike(server)
    checks = {c.name: c for c in report.checks}
    assert not checks["foreign-origin"].ok, describe(report)
    assert "https://evil.example" in checks["foreign-origin"].detail
    assert "allow_origin" in (checks["foreign-origin"].fix or "")
    assert checks["auth-enforced"].ok, describe(report)


def test_empty_token_flag_fails_auth_enforced(tmp_path: Path) -> None:
    with running_jupyter(tmp_path, token="", extra_args=["--IdentityProvider.token="]) as server:
        report = run_probe(server.base_url, "", execute=True, timeout=30)
    checks = {c.name: c for c in report.checks}
    auth = checks["auth-enforced"]
    assert not auth.ok, describe(report)
    assert "200" in auth.detail
    assert "c.ServerApp.token = ''" in (auth.fix or "")
    # Not token-authenticated, so Jupyter demands XSRF on Colab's POST: no kernel either.
    assert not checks["kernel-start"].ok
    assert "_xsrf" in checks["kernel-start"].detail


@pytest.mark.parametrize("line", ["c.ServerApp.token = ''", "c.NotebookApp.token = ''"])
def test_host_config_overriding_env_token_fails_auth_enforced(tmp_path: Path, line: str) -> None:
    # The real-world trap: JUPYTER_TOKEN is set, but a config file silently wins over it.
    config = config_dir(tmp_path)
    config.mkdir(parents=True, exist_ok=True)
    (config / "jupyter_server_config.py").write_text(line + "\n")
    with running_jupyter(tmp_path, token=TOKEN) as server:
        report = judged_alike(server)
    failure = report.first_failure()
    assert failure is not None and failure.name == "auth-enforced", describe(report)
    assert "jupyter_server_config.py" in (failure.fix or "")
    assert TOKEN not in str(report.to_dict())


@pytest.mark.parametrize("app", ["notebook", "lab"])
def test_probe_passes_on_notebook7_and_lab(tmp_path: Path, app: str) -> None:
    with running_jupyter(tmp_path, token=TOKEN, app=app) as server:
        report = run_probe(server.base_url, TOKEN, timeout=30)
        # Leave a kernel running: the helper must take it down with the server.
        resp = requests.post(
            server.base_url + "api/kernels", params={"token": TOKEN}, json={}, timeout=30
        )
        assert resp.status_code == 201
        proc = psutil.Process(server.process.pid)
        family = [proc, *proc.children(recursive=True)]
        assert len(family) >= 2  # server + kernel
        assert TOKEN not in " ".join(proc.cmdline())  # token only in the environment
    assert report.ok, describe(report)
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


# ---------------------------------------------------------------------------------------------
# The pure pieces (no server needed)
# ---------------------------------------------------------------------------------------------


def test_cors_problem_table() -> None:
    good = {"Access-Control-Allow-Origin": COLAB_ORIGIN, "Access-Control-Allow-Credentials": "true"}
    assert cors_problems(good, COLAB_ORIGIN) == []
    assert cors_problems({}, COLAB_ORIGIN) == ["acao-missing", "credentials-missing"]
    star = {**good, "Access-Control-Allow-Origin": "*"}
    assert cors_problems(star, COLAB_ORIGIN) == ["acao-star"]
    other = {**good, "Access-Control-Allow-Origin": "https://example.org"}
    assert cors_problems(other, COLAB_ORIGIN) == ["acao-other"]
    assert status_problem(404) == status_problem(405) == "sub-path"
    assert status_problem(403, "'_xsrf' argument missing from POST") == "xsrf-required"
    assert status_problem(403) == "token-rejected"
    assert status_problem(500) == "server-error"
    for problem in ("acao-missing", "credentials-missing", "sub-path", "auth-disabled"):
        assert FIXES[problem]


def test_report_helpers() -> None:
    report = ProbeReport(
        url="http://127.0.0.1:1/",
        checks=(Check("preflight", True, "fine"), Check("cors-get", False, "bad", "do this")),
    )
    assert not report.ok
    first = report.first_failure()
    assert first is not None and first.name == "cors-get"
    assert report.to_dict()["checks"][1] == {
        "name": "cors-get",
        "ok": False,
        "detail": "bad",
        "fix": "do this",
    }
    assert not ProbeReport(url="x", checks=()).ok
