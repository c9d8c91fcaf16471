"""The interactive commands in a real terminal: tmux runs them, `send-keys` types the answers,
`capture-pane` reads the screen. Each test has a tmux server of its own (its own socket name),
killed afterwards."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabtunnel import paths
from colabtunnel.profiles import load_profiles
from tests.conftest import ACTIVATE, HOST_ALIAS, Env

EXISTING = (
    '# my profiles: keep this comment\n[profiles.old]  # and this one\nhost = "old.example.org"\n'
)
DONE = "__COMMAND_EXITED__"


class Terminal:
    """One command running in a tmux pane of a private tmux server."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.socket = f"colabtunnel-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        script = workdir / f"run-{self.socket}.sh"
        exports = "".join(
            f"export {name}={shlex.quote(os.environ[name])}\n"
            for name in ("HOME", "COLABTUNNEL_HOME", "PATH", "PYTHONPATH")
            if name in os.environ
        )
        command = shlex.join([sys.executable, "-m", "colabtunnel", *args])
        script.write_text(f"{exports}{command}\necho {DONE}=$?\nsleep 600\n")
        self._tmux("new-session", "-d", "-x", "200", "-y", "60", f"sh {shlex.quote(str(script))}")
        self.socket_path = Path(self._tmux("display-message", "-p", "#{socket_path}").strip())

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, f"tmux {args}: {done.stderr}"
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-200")

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared on the screen:\n{self.screen()}")

    def type(self, line: str) -> None:
        self._tmux("send-keys", "-l", line)
        self._tmux("send-keys", "Enter")

    def exit_code(self, timeout: float = 120) -> int:
        screen = self.wait_for(f"{DONE}=", timeout)
        return int(screen.split(f"{DONE}=", 1)[1].split()[0])

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)
        self.socket_path.unlink(missing_ok=True)  # tmux leaves it behind


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[type[Terminal]]:
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed: run the README's test command (it installs it)")
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        term = Terminal(tmp_path, *args)
        opened.append(term)
        return term

    yield start  # type: ignore[misc]
    for term in opened:
        term.close()


def _existing_profiles() -> Path:
    path = paths.profiles_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EXISTING)
    return path


def test_interactive_add_offers_the_ssh_config_aliases_then_runs_doctor(
    env: Env, terminal: type[Terminal]
) -> None:
    ssh_config = env.home / ".ssh" / "config"
    ssh_config.write_text("Host other-box\n  HostName 192.0.2.1\n" + ssh_config.read_text())
    path = _existing_profiles()
    term = terminal("profiles", "add", "box")
    screen = term.wait_for("host (a number above")
    assert "1) other-box" in screen and f"2) {HOST_ALIAS}" in screen
    term.type("2")
    term.wait_for("activate:")
    term.type(ACTIVATE)
    term.wait_for("run `colabtunnel doctor box` now? [Y/n]")
    term.type("")
    assert term.exit_code() == 0, term.screen()
    screen = term.screen()
    assert "added profile box to" in screen
    assert "ok    auth" in screen and "ok    jupyter" in screen  # doctor ran, against the host
    text = path.read_text()
    assert "# my profiles: keep this comment" in text and "# and this one" in text
    box = load_profiles(path)["box"]
    assert (box.host, box.activate) == (HOST_ALIAS, ACTIVATE)


def test_interactive_import_picks_two_of_three_aliases(
    isolated_home: Path, terminal: type[Terminal]
) -> None:
    (isolated_home / ".ssh" / "config").write_text(
        "# three boxes\nHost alpha\n  HostName a.example.org\nHost beta gamma\n  User me\n"
        "Host *\n  ServerAliveInterval 30\n"
    )
    path = _existing_profiles()
    term = terminal("profiles", "import")
    screen = term.wait_for("import which?")
    assert "1) alpha" in screen and "2) beta" in screen and "3) gamma" in screen
    assert "*" not in screen.split("Host aliases", 1)[1]
    term.type("4")  # not on the list: asked again
    term.wait_for("neither a number from 1 to 3 nor an alias")
    term.type("1 3")
    assert term.exit_code() == 0, term.screen()
    text = path.read_text()
    assert "# my profiles: keep this comment" in text and "# and this one" in text
    loaded = load_profiles(path)
    assert set(loaded) == {"old", "alpha", "gamma", "local"}
    assert (loaded["alpha"].host, loaded["gamma"].host) == ("alpha", "gamma")
