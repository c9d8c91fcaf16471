"""Session channels for host scripts, with as few round trips as the protocol allows.

paramiko's exec_command() waits for the server to answer the exec request before anything else is
sent: one round trip per script for nothing, since the script (on stdin) and its end (EOF) may
follow the request at once. Here they do, and the answer is checked once the output is in (the
server answers the request before it sends any output, so it has arrived by then).

Opening the channel is a round trip of its own, and so is the exec request before the first byte
of the script: OpenSSH's sshd opens a session channel with a window of 0 and opens it only once
the command runs. During a start-up, whose scripts run one after another, SessionsAhead opens the
next scripts' channels and starts their command (`bash -l -s`, which waits for its script on
stdin) while the first one runs: the next script then costs one round trip.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko


def start(channel: paramiko.Channel, command: str, stdin: bytes, *, running: bool = False) -> None:
    """Ask the server to run `command` on `channel` (unless it is `running` already), send
    `stdin` and its end, without waiting: a refused request closes the channel (see refused())."""
    if not running:
        request_exec(channel, command)
    try:
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
    except OSError:
        pass  # the request was refused meanwhile: the channel is closed; refused() says so


def request_exec(channel: paramiko.Channel, command: str) -> None:
    """Send an exec request for `command`; its answer is not waited for."""
    from paramiko import Message
    from paramiko.common import cMSG_CHANNEL_REQUEST

    request = Message()
    request.add_byte(cMSG_CHANNEL_REQUEST)
    request.add_int(channel.remote_chanid)
    request.add_string("exec")
    request.add_boolean(True)
    request.add_string(command)
    channel._event_pending()  # type: ignore[attr-defined]  # paramiko private, pinned <6
    transport = channel.transport
    assert transport is not None  # an open channel has one
    transport._send_user_message(request)  # type: ignore[attr-defined]


def refused(channel: paramiko.Channel) -> bool:
    """Once the output has ended: True if the server refused the exec request. (Some servers
    answer the request only after the command's output, even after its exit status: a command
    that reported its exit status ran.)"""
    return not channel.event_ready and not channel.exit_status_ready()


class SessionsAhead:
    """Session channels opened, and their command started, before they are needed; taken in
    order by the scripts to come.

    A channel that could not be opened ahead (a server that allows one session at a time) is
    opened when it is needed, as without this.
    """

    def __init__(self, transport: paramiko.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout  # for opening one channel
        self._lock = threading.Lock()
        self._pending: list[tuple[str, OpenedAhead]] = []

    def reserve(self, count: int, command: str) -> None:
        """Start opening `count` channels now, each running `command` as soon as it is open."""

        def running() -> paramiko.Channel:
            channel = self.transport.open_session(timeout=self.timeout)
            try:
                request_exec(channel, command)
            except BaseException:
                channel.close()
                raise
            return channel

        with self._lock:
            self._pending += [(command, OpenedAhead(running)) for _ in range(count)]

    def take(self, command: str) -> tuple[paramiko.Channel, bool]:
        """The next channel opened ahead when it runs `command`, else a new one; and whether
        `command` runs on it already. A channel ahead runs its own command: one that runs
        another is closed, never handed out (a second exec on it would be refused)."""
        with self._lock:
            command_ahead, opening = self._pending.pop(0) if self._pending else ("", None)
        if opening is not None and command_ahead != command:
            opening.discard()
        elif opening is not None:
            channel = opening.result(self.timeout)
            if channel is not None:
                return channel, True
        return self.transport.open_session(timeout=self.timeout), False

    def release(self) -> None:
        """Close the channels nobody took."""
        with self._lock:
            pending, self._pending = self._pending, []
        for _, opening in pending:
            opening.discard()


class OpenedAhead:
    """A channel being opened on a thread of its own, for whoever takes it first; closed if
    nobody does (also when it arrives after that was decided)."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self.channel: Any = None
        self._discarded = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        threading.Thread(target=self._open, args=(opener,), daemon=True).start()

    def _open(self, opener: Callable[[], Any]) -> None:
        channel = None
        with contextlib.suppress(Exception):  # the taker opens one itself (and fails there)
            channel = opener()
        with self._lock:
            self.channel = channel
            discard = self._discarded
        self._done.set()
        if discard and channel is not None:
            channel.close()

    def result(self, timeout: float) -> Any:
        """The channel (None if it could not be opened, or not within `timeout`)."""
        self._done.wait(timeout)
        with self._lock:
            channel, self.channel = self.channel, None
            self._discarded = True  # if it is still on its way, it is closed on arrival
        return channel

    def discard(self) -> None:
        with self._lock:
            channel, self.channel = self.channel, None
            self._discarded = True
        if channel is not None:
            channel.close()
