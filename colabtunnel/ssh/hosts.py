"""Where Jupyter runs: a host reached over SSH, or this machine for the `local` profile.

Both run a bash script fed on stdin (so no secret ever sits in a command line) and return
(exit code, stdout, stderr). Jupyter code above this layer does not know which one it talks to.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from colabtunnel.errors import ColabtunnelError
from colabtunnel.ssh.connection import Connection, RunResult

if TYPE_CHECKING:
    from colabtunnel.profiles import Profile
    from colabtunnel.ssh.credentials import Credentials

# A login shell, so PATH and `module`/conda set-up match what the user sees in an ssh session;
# `-s` reads the script from stdin, so `ps` on the host shows only these words.
SCRIPT_COMMAND = "bash -l -s"


class Host(Protocol):
    name: str
    is_local: bool

    def run_script(self, script: str, timeout: float) -> RunResult: ...

    def stream_script(self, script: str, sink: Callable[[bytes], None]) -> int: ...


class Reporter(Protocol):
    def step(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...


class SSHHost:
    is_local = False

    def __init__(self, connection: Connection, name: str) -> None:
        self.connection = connection
        self.name = name

    @property
    def label(self) -> str:
        """user@hostname:port, as the user reads where `up` connected."""
        return self.connection.target.label

    def close(self) -> None:
        self.connection.close()

    def run_script(self, script: str, timeout: float) -> RunResult:
        return self.connection.run(SCRIPT_COMMAND, stdin=script.encode(), timeout=timeout)

    def stream_script(self, script: str, sink: Callable[[bytes], None]) -> int:
        return self.connection.stream(SCRIPT_COMMAND, script.encode(), sink)


class InnerHost:
    """A Host whose scripts run one step further than the login host (a job's compute node, a
    container): each goes, as any host's, on the stdin of `enter`, a command run on the login
    host that reads a script (`srun ... bash -s`, `docker exec -i ... sh -s`)."""

    is_local = False

    def __init__(self, login: Host, name: str, enter: str) -> None:
        self.login, self.name, self.enter = login, name, enter

    def _wrapped(self, script: str) -> str:
        return f"exec {self.enter} <<'CT_INNER_EOF'\n{script}\nCT_INNER_EOF\n"

    def run_script(self, script: str, timeout: float) -> RunResult:
        return self.login.run_script(self._wrapped(script), timeout)

    def stream_script(self, script: str, sink: Callable[[bytes], None]) -> int:
        return self.login.stream_script(self._wrapped(script), sink)


class LocalHost:
    is_local = True
    name = "this machine"
    label = "local"

    def close(self) -> None:
        pass

    def run_script(self, script: str, timeout: float) -> RunResult:
        try:
            done = subprocess.run(
                ["bash", "-s"], input=script.encode(), capture_output=True, timeout=timeout
            )
        except FileNotFoundError as exc:
            raise ColabtunnelError(
                "bash is not installed on this machine",
                hint="the local profile runs Jupyter through bash; install it",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ColabtunnelError(f"local command did not finish within {timeout:.0f} s") from exc
        return RunResult(
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def stream_script(self, script: str, sink: Callable[[bytes], None]) -> int:
        with subprocess.Popen(
            ["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(script.encode())
            proc.stdin.close()
            while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]  # a BufferedReader
                sink(chunk)
            return proc.wait()


def connect(
    profile: Profile,
    reporter: Reporter,
    creds: Credentials,
    *,
    accept_new: bool = False,
    deadline: float | None = None,
) -> SSHHost | LocalHost:
    """The profile's host, logged in to (this machine for `local`): what `up` connects to, and
    what `down`, `logs` and `doctor` talk to without a whole tunnel."""
    if profile.is_local:
        return LocalHost()
    from colabtunnel.ssh import connection, sshtarget

    target = sshtarget.resolve(profile)
    hops = sshtarget.route(target)
    via = f" ({sshtarget.describe(hops)})" if len(hops) > 1 or target.proxy_command else ""
    reporter.step(f"connecting to {target.label}{via}")
    if any(hop.strict_host_key_checking == "false" for hop in hops):
        reporter.note(
            "StrictHostKeyChecking=no (ssh_config) is not honoured: "
            "colabtunnel always verifies host keys"
        )
    opened = connection.connect(
        target, profile.name, accept_new=accept_new, creds=creds, hops=hops, deadline=deadline
    )
    return SSHHost(opened, profile.host)


@contextlib.contextmanager
def connected(
    profile: Profile, reporter: Reporter, creds: Credentials
) -> Iterator[SSHHost | LocalHost]:
    """`connect`, closed afterwards."""
    host = connect(profile, reporter, creds)
    try:
        yield host
    finally:
        host.close()
