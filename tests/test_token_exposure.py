"""The token is never on a command line, on the host or here.

The host is this machine (the test sshd listens on loopback), so every process's command line is
read from /proc while `up` runs, at least every 20 ms: the scripts that carry the token live only
during `up`. And what the client asked sshd to run is recorded by sshd itself: a ForceCommand
receives it as SSH_ORIGINAL_COMMAND, writes it down, and runs it as sshd would have.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Env, jupyters_under
from tests.sshd import Sshd, running_sshd
from tests.tunnel_helpers import root_profile, token_of, up_json

NAME = "watched"
SAMPLE_EVERY_S = 0.02


class CommandLines:
    """Every distinct command line seen in /proc while entered (tests/cmdline_sampler.py)."""

    def __enter__(self) -> CommandLines:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cmdline_sampler"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self._proc.communicate(b"", timeout=30)
        result = json.loads(out)
        self.times: list[float] = result["times"]
        self.seen = {bytes.fromhex(line) for line in result["seen"]}

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


@pytest.fixture
def recorded(tmp_path: Path, env: Env) -> Iterator[tuple[Sshd, Path]]:
    """An sshd that writes down every command a client asks it to run, then runs it."""
    log = tmp_path / "commands.log"
    recorder = tmp_path / "record-command"
    recorder.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$SSH_ORIGINAL_COMMAND" >> {log}\n'
        'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    recorder.chmod(0o755)
    with running_sshd(tmp_path / "own-sshd", extra=f"ForceCommand {recorder}\n") as server:
        root_profile(env, server, NAME)
        yield server, log
        env.run("down", NAME, timeout=120)
        for proc in jupyters_under(server.remote_home):
            proc.kill()


def test_the_token_is_on_no_command_line_during_up(env: Env, recorded: tuple[Sshd, Path]) -> None:
    _, log = recorded
    with CommandLines() as sampled:
        tunnel = up_json(env, NAME)
        env.run("down", NAME, check=True)
    token = token_of(tunnel).encode()
    gaps = sampled.gaps()
    assert len(gaps) > 50, "the sampler did not run"
    slow = sorted(gaps)[int(len(gaps) * 0.95)]
    print(
        f"{len(gaps) + 1} samples, median gap {statistics.median(gaps) * 1000:.1f} ms, "
        f"95th percentile {slow * 1000:.1f} ms, max {max(gaps) * 1000:.1f} ms"
    )
    assert slow <= SAMPLE_EVERY_S, f"95% of samples within {slow * 1000:.0f} ms, not 20"

    asked = log.read_text().splitlines()
    assert len(asked) >= 3, asked  # inspect, start, stop at least
    assert all(token.decode() not in command for command in asked), asked
    assert set(asked) == {"bash -l -s"}, asked  # scripts travel on stdin, never as arguments

    assert any(b"jupyter" in line for line in sampled.seen), "Jupyter was never sampled"
    assert any(b"bash\x00-l\x00-s" in line for line in sampled.seen), "no host script sampled"
    leaked = [line for line in sampled.seen if token in line]
    assert not leaked, [line.replace(b"\x00", b" ") for line in leaked]
