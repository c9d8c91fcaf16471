"""`up` prints no URL when its own checks fail: the Colab check through the tunnel, or the host's
proof that the token is enforced. Exit 1, the failing check named, nothing left running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Env, jupyters_under
from tests.sshd import Sshd, running_sshd
from tests.test_bad_input import clean_error
from tests.tunnel_helpers import URL_RE, nothing_left, root_profile

NAME = "strict"


@pytest.fixture
def own(tmp_path: Path, env: Env) -> Iterator[Sshd]:
    with running_sshd(tmp_path / "own-sshd") as server:
        yield server
        env.run("down", NAME, timeout=120)
        for proc in jupyters_under(server.remote_home):
            proc.kill()


def _refused(env: Env, own: Sshd, jupyter_args: list[str]) -> str:
    root_profile(env, own, NAME, jupyter_args=jupyter_args)
    done = env.run("up", NAME)
    error, hint = clean_error(done, 1)
    assert not URL_RE.search(done.stdout + done.stderr), done.stdout
    nothing_left(env, own, NAME)
    return error + "\n" + hint


def test_no_url_when_the_colab_check_fails_without_allow_credentials(env: Env, own: Sshd) -> None:
    said = _refused(env, own, ["--NotebookApp.allow_credentials=False"])
    assert "Colab check 'preflight' failed" in said, said
    assert "Access-Control-Allow-Credentials" in said or "credentials" in said.lower(), said


def test_no_url_when_the_host_does_not_enforce_the_token(env: Env, own: Sshd) -> None:
    said = _refused(env, own, ["--IdentityProvider.token="])
    assert "WITHOUT authentication" in said, said


def test_no_url_when_the_tunnel_cannot_reach_jupyter(tmp_path: Path, env: Env) -> None:
    """The probe's HTTP checks run on the host, beside Jupyter, where they all pass here; the
    kernel's websocket and one credentialed request must still cross the tunnel, which an sshd
    that forwards nothing (AllowTcpForwarding no) cannot carry: no URL."""
    with running_sshd(tmp_path / "no-forwarding", forwarding="no") as server:
        env.known_hosts.write_text(env.known_hosts.read_text() + server.known_hosts_line())
        try:
            said = _refused(env, server, [])
            assert "Colab check 'tunnel-get' failed" in said, said
        finally:
            env.run("down", NAME, timeout=120)
            for proc in jupyters_under(server.remote_home):
                proc.kill()
