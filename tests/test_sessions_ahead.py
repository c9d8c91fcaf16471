"""Session channels opened ahead (ssh/sessions.SessionsAhead) against the test's real sshd: a
channel whose command is already running is handed out only to that same command."""

from __future__ import annotations

import pytest

from colabtunnel.profiles import get_profile
from colabtunnel.ssh import connection, hosts, sshtarget
from colabtunnel.ssh.credentials import Credentials
from tests.conftest import PROFILE, Env

pytestmark = pytest.mark.timeout(60)


def _link() -> connection.Connection:
    profile = get_profile(PROFILE)
    return connection.connect(
        sshtarget.resolve(profile), profile.name, creds=Credentials(profile.name)
    )


def test_a_channel_ahead_runs_the_command_it_was_opened_for(env: Env) -> None:
    link = _link()
    try:
        link.sessions.reserve(1, hosts.SCRIPT_COMMAND)
        done = link.run(hosts.SCRIPT_COMMAND, stdin=b"echo ran-ahead\n")
        assert (done.code, done.stdout.strip()) == (0, "ran-ahead")
    finally:
        link.close()


def test_another_command_never_gets_a_channel_that_runs_one_already(env: Env) -> None:
    """sshd takes one exec per session channel: handed to `cat`, a channel already running
    bash would see its second exec refused. It is closed instead, and `cat` gets a new one."""
    link = _link()
    try:
        link.sessions.reserve(1, hosts.SCRIPT_COMMAND)
        done = link.run("cat", stdin=b"through cat\n")
        assert (done.code, done.stdout) == (0, "through cat\n"), done
        again = link.run(hosts.SCRIPT_COMMAND, stdin=b"echo fresh\n")  # nothing ahead is left
        assert again.stdout.strip() == "fresh"
    finally:
        link.close()
