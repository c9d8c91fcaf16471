"""A local control channel to a running keeper: one JSON question, one JSON answer.

The channel itself (a Unix socket or a named pipe, one per keeper process, only for this user) is
channel.py's. The keeper answers through the connection it already holds (no second login, no new
prompt). The asker never waits longer than its timeout, so `status` cannot hang on a keeper that
is busy, stuck or gone.

Questions are a fixed table (`handlers`): "gpus", the GPUs' use now; "job", what the launcher says
beyond the tunnel (a Slurm job's state and time left); "activity", when Jupyter was last used.
Orders ("stop", "release"; ORDERS) end the keeper's serve loop as its signals do, which are the
POSIX fallback for a keeper that cannot be asked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from colabtunnel.keeper import channel

if TYPE_CHECKING:
    from colabtunnel.keeper.tunnel import Tunnel

log = logging.getLogger("colabtunnel")

Handler = Callable[[], dict[str, Any]]
REQUEST_LIMIT = 4096
ANSWER_LIMIT = 1 << 20
GPU_QUERY_S = 2.5  # how long the host's GPU tools may take (then they are killed)
SCRIPT_MARGIN_S = 1.5  # the round trip and the host's Python starting, on top of that
ASK_TIMEOUT_S = GPU_QUERY_S + SCRIPT_MARGIN_S + 0.5  # what `status` waits for a keeper, at most
ACTIVITY_S = 3.0  # Jupyter's /api/status through the forwarded port
QUESTION_S = 5.0  # how long the keeper waits for the question once the handshake is done
# Orders rather than questions: `down` ("stop") and a new keeper taking over ("release")
ORDERS = frozenset({"stop", "release"})
NO_CHANNEL = "the keeper has no control channel (started by an older colabtunnel?)"


class Unavailable(Exception):
    """The keeper could not be asked or did not answer; the message says why, for people."""


# -- the keeper's side -----------------------------------------------------------------------------


def tunnel_handlers(tunnel: Tunnel) -> dict[str, Handler]:
    """What a keeper holding `tunnel` can answer."""

    def gpu_use() -> dict[str, Any]:
        from colabtunnel.jupyter import gpus

        info, host = tunnel.host_info, tunnel.host
        if info is None or host is None:
            return {"ok": False, "reason": "the tunnel is not open"}
        if not host.is_local and not (tunnel.connection and tunnel.connection.alive):
            return {"ok": False, "reason": "the SSH connection is down (reconnecting)"}
        where = tunnel.node_host() or host
        report = gpus.use_now(where, info.python_path, info.gpus, GPU_QUERY_S, SCRIPT_MARGIN_S)
        return {"ok": True, "gpus": report.to_json()}

    def job() -> dict[str, Any]:
        if tunnel.connection is not None and not tunnel.connection.alive:
            return {"ok": False, "reason": "the SSH connection is down (reconnecting)"}
        return {"ok": True, "job": tunnel.launcher_details()}

    def activity() -> dict[str, Any]:
        return tunnel.activity(timeout=ACTIVITY_S)

    return {"gpus": gpu_use, "job": job, "activity": activity}


@contextlib.contextmanager
def serving(profile: str, handlers: Mapping[str, Handler]) -> Iterator[None]:
    """Answer questions for `profile` while the block runs. Never fails the keeper: without a
    channel, `status` just cannot show what the keeper would have said (and `down` signals)."""
    server = None
    try:
        server = _Server(profile, handlers)
    except OSError as exc:
        log.warning("no control channel for status and down: %s", exc)
    try:
        yield
    finally:
        if server is not None:
            server.close()


class _Server:
    def __init__(self, profile: str, handlers: Mapping[str, Handler]) -> None:
        from colabtunnel.keeper import state

        self.handlers = handlers
        self.busy = threading.Lock()  # one question at a time reaches the host
        channel.sweep(profile, lambda pid: state.process_identity(pid) is not None)
        self.listening = channel.Listening(profile)
        self.thread = threading.Thread(target=self._accept, name="control", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn = self.listening.accept()
            except OSError as exc:
                if not self.listening.closed:
                    log.warning("control: the channel stopped accepting: %s", exc)
                return
            if conn is None:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: channel.Conn) -> None:
        with conn:
            try:
                self.listening.authenticate(conn)
                if not conn.poll(QUESTION_S):
                    raise Unavailable("no question in time")
                question = json.loads(conn.recv_bytes(REQUEST_LIMIT))
                conn.send_bytes(json.dumps(self._handle(question)).encode())
            except (OSError, EOFError, ValueError, Unavailable, channel.Refused) as exc:
                log.info("control: a question went unanswered: %s", exc)

    def _handle(self, question: object) -> dict[str, Any]:
        ask = question.get("ask") if isinstance(question, dict) else None
        handler = self.handlers.get(ask) if isinstance(ask, str) else None
        if handler is None:
            return {"ok": False, "reason": f"unknown question {ask!r}"}
        if ask in ORDERS:
            return handler()  # it only asks the serve loop to end: never waits on the host
        if not self.busy.acquire(timeout=ASK_TIMEOUT_S):
            return {"ok": False, "reason": "the keeper is busy answering another question"}
        try:
            return handler()
        except Exception as exc:  # an answer, never a dead keeper
            log.warning("control: %r failed: %r", ask, exc)
            return {"ok": False, "reason": getattr(exc, "message", None) or repr(exc)}
        finally:
            self.busy.release()

    def close(self) -> None:
        self.listening.close()
        self.thread.join(timeout=2)


# -- the asker's side ------------------------------------------------------------------------------


def ask(
    profile: str, question: str, timeout: float = ASK_TIMEOUT_S, keeper_pid: int | None = None
) -> dict[str, Any]:
    """Ask the keeper of `profile` (the one its state record names, unless `keeper_pid` says);
    its answer, or Unavailable within `timeout` seconds."""
    if keeper_pid is None:
        from colabtunnel.keeper import state

        record = state.peek(profile)
        if record is None:
            raise Unavailable(f"no keeper is running for {profile}")
        keeper_pid = record.keeper_pid
    where = channel.address(profile, keeper_pid)
    said: list[dict[str, Any] | Unavailable] = []
    # One thread bounds every step (connecting included, which can block on a full backlog or a
    # busy pipe): the asker is a short-lived command, so a stuck thread ends with it.
    asking = threading.Thread(target=_exchange, args=(where, question, said), daemon=True)
    asking.start()
    asking.join(timeout)
    if not said:
        raise Unavailable(f"the keeper did not answer within {timeout:g} s")
    answer = said[0]
    if isinstance(answer, Unavailable):
        raise answer
    return answer


def _exchange(
    where: channel.Address, question: str, said: list[dict[str, Any] | Unavailable]
) -> None:
    try:
        said.append(_ask_at(where, question))
    except Unavailable as exc:
        said.append(exc)


def _ask_at(where: channel.Address, question: str) -> dict[str, Any]:
    try:
        conn = channel.connect(where)
    except FileNotFoundError:
        raise Unavailable(NO_CHANNEL) from None
    except channel.Refused as exc:
        raise Unavailable(f"the keeper's channel refused: {exc}") from None
    except OSError as exc:
        if isinstance(exc, ConnectionRefusedError) or not os.path.exists(where.key_file):
            raise Unavailable(NO_CHANNEL) from None
        raise Unavailable(f"cannot reach the keeper: {exc.strerror or exc}") from None
    with conn:
        try:
            conn.send_bytes(json.dumps({"ask": question}).encode())
            answer = json.loads(conn.recv_bytes(ANSWER_LIMIT))
        except (OSError, EOFError):
            raise Unavailable("the keeper closed the channel without answering") from None
        except ValueError:
            raise Unavailable("the keeper's answer could not be read") from None
    if not isinstance(answer, dict):
        raise Unavailable("the keeper's answer could not be read")
    return answer
