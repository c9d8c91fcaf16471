"""A real browser plays Colab: headless Chromium loads https://colab.research.google.com (served by
the test) and does what Colab's page does with the URL from `up` — through the real sshd tunnel.

CORS stays fully on (never --disable-web-security): the negative control proves Chrome still
refuses a Jupyter that lacks allow_credentials, and that Local Network Access is really checked.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil
import pytest

from tests.browser import COLAB_ORIGIN, FakeColab, chromium_missing_reason, fake_colab
from tests.conftest import PROFILE, Env, wait_for
from tests.jupyter_helpers import running_jupyter

CREDENTIALS_REFUSED = (
    "has been blocked by CORS policy: The value of the 'Access-Control-Allow-Credentials' "
    "header in the response is '' which must be 'true' when the request's credentials mode "
    "is 'include'."
)
LOOPBACK_REFUSED = "Permission was denied for this request to access the `loopback` address space"


@pytest.fixture
def colab(tmp_path: Path) -> Iterator[FakeColab]:
    reason = chromium_missing_reason()
    if reason:
        pytest.fail(reason)
    with fake_colab(tmp_path / "browser") as page:
        yield page
    # nothing of this browser outlives it (its crash handler once did, after every test)
    left = [
        " ".join(proc.info["cmdline"] or [])
        for proc in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(proc.info["cmdline"] or [])
    ]
    assert not left, left


def _masked(text: str, token: str) -> str:
    return text.replace(token, "***")


def _describe(result: object, colab: FakeColab, token: str) -> str:
    return _masked(
        f"page result: {result!r}\nconsole:\n{colab.console_text()}\n"
        f"chromium log tail:\n{colab.browser.log_tail(10)}",
        token,
    )


def test_colab_page_runs_code_through_the_tunnel(env: Env, colab: FakeColab) -> None:
    done = env.run("up", PROFILE, "--json", check=True)
    tunnel = json.loads(done.stdout)["tunnel"]
    url = tunnel["url"]
    assert re.fullmatch(rf"http://localhost:{tunnel['local_port']}/\?token=[\w-]+", url), url
    token = parse_qs(urlparse(url).query)["token"][0]

    colab.browser.allow_loopback()  # the user clicking Allow on Chrome's local network prompt
    result = colab.run(url)

    assert result is not None, "the page reported nothing\n" + _describe(result, colab, token)
    assert result["ok"] and result["output"] == "42\n", _describe(result, colab, token)
    assert result["steps"][:4] == ["kernelspecs:python3", "kernel", "ws-open", "stream"]
    assert "CORS policy" not in colab.console_text()

    env.run("down", PROFILE, check=True)
    assert not (env.ct_home / "state" / f"{PROFILE}.json").exists()


def test_without_allow_credentials_chrome_refuses(tmp_path: Path, colab: FakeColab) -> None:
    """Negative control: the right origin but no allow_credentials -> Chrome's CORS error."""
    token = secrets.token_urlsafe(32)
    with running_jupyter(
        tmp_path / "jupyter",
        token=token,
        colab_flags=False,
        extra_args=[f"--ServerApp.allow_origin={COLAB_ORIGIN}"],
    ) as server:
        colab.browser.allow_loopback()
        result = colab.run(f"http://localhost:{server.port}/?token={token}")
        # The Log event travels over DevTools, the result over HTTP: either may come first.
        wait_for(lambda: CREDENTIALS_REFUSED in colab.console_text(), timeout=10)
    assert result is not None and not result["ok"], _describe(result, colab, token)
    assert result["error"] == "Failed to fetch" and result["steps"] == [], result


def test_without_the_users_allow_chrome_refuses_localhost(tmp_path: Path, colab: FakeColab) -> None:
    """The page counts as public, so Local Network Access applies: no Allow, no connection.

    This is why `up` tells the user to click Allow, and it proves the grant in the tunnel test
    is what lets the page through (not a browser that skips the check).
    """
    token = secrets.token_urlsafe(32)
    with running_jupyter(tmp_path / "jupyter", token=token) as server:
        result = colab.run(f"http://localhost:{server.port}/?token={token}")
        wait_for(lambda: LOOPBACK_REFUSED in colab.console_text(), timeout=10)
    assert result is not None and not result["ok"], _describe(result, colab, token)
