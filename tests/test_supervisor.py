"""The keeper's supervisor on its own: the health it reports while reconnect attempts fail.

The tunnel here is a stand-in that answers each reconnect as told (the real ones, against a
real sshd that asks a one-time code, are tests/test_auth.py's); what is under test is the state
the supervisor reports between and during attempts, which `up` and `status` read."""

from __future__ import annotations

import threading
import time

import pytest

from colabtunnel.keeper import supervisor
from colabtunnel.keeper.supervisor import Attempt, Health, Supervisor
from colabtunnel.profiles import Profile


class Unreachable:
    """A tunnel whose link is lost and whose reconnects end as `answers` says, in turn."""

    def __init__(self, answers: list[Attempt]) -> None:
        self.answers = answers
        self.profile = Profile("p", host="h", keepalive=1)
        self.opened = None
        self.target = "someone@gpu-box"

    def connection_ok(self, timeout: float) -> bool:
        return False

    def connection_alive(self) -> bool:
        return False

    def remote_alive(self, timeout: float) -> supervisor.RemoteState:
        return "unknown"

    def ended(self, timeout: float) -> str | None:
        return None

    def drop_connection(self) -> None:
        pass

    def reconnect(self, deadline: float) -> Attempt:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _states(answers: list[Attempt], until: str) -> list[str]:
    seen: list[Health] = []
    stop = threading.Event()

    def record(health: Health) -> None:
        seen.append(health)
        if health.state == until:
            stop.set()

    worker = threading.Thread(target=Supervisor(Unreachable(answers), record).run, args=(stop,))
    worker.start()
    worker.join(10)
    stop.set()
    worker.join(5)
    return [h.state for h in seen]


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "FIRST_DELAY_S", 0.01)
    monkeypatch.setattr(supervisor, "MAX_DELAY_S", 0.02)


def test_once_a_login_needs_a_person_it_says_so_until_one_gets_in() -> None:
    code = Attempt("needs-login", "asks 'Verification code:' and there is no terminal")
    answers = [Attempt("failed", "refused"), code, code, Attempt("failed", "timed out"), code]
    answers.append(Attempt("ok"))
    states = _states(answers, until="ok")
    first = states.index("needs-login")
    assert "reconnecting" in states[:first]  # before any login asked for a person
    assert set(states[first:-1]) == {"needs-login"}, states  # never `reconnecting` again
    assert states[-1] == "ok"


def test_failed_attempts_without_a_person_needed_say_reconnecting() -> None:
    started = time.monotonic()
    states = _states([Attempt("failed", "refused")] * 3 + [Attempt("ok")], until="ok")
    assert set(states[:-1]) == {"reconnecting"} and states[-1] == "ok", states
    assert time.monotonic() - started < 5
