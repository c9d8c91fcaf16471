"""Where a keeper's control channel is, and who may use it, on every platform.

A channel is `multiprocessing.connection`'s: a Unix socket on POSIX, a named pipe on Windows. There
is one per keeper process (its pid in the name), so a channel left by a killed keeper is never
mistaken for a newer keeper's, and two keepers of one profile (a hand-over) never share one. Only
this user may talk on it: the keeper writes a random key to a 0600 file beside the state record and
both ends prove they hold it (an HMAC challenge each way) before a word is said. On POSIX the 0700
state directory keeps others from the socket too, and on Linux the keeper checks the peer's uid.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import socket
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import connection as mpc
from pathlib import Path
from typing import TypeAlias

from colabtunnel import paths

if sys.platform == "win32":
    Conn: TypeAlias = mpc.Connection | mpc.PipeConnection
else:
    Conn: TypeAlias = mpc.Connection

# Unix socket paths are limited (108 bytes on Linux, 104 on macOS, the NUL included).
MAX_SOCKET_PATH = 100
KEY_BYTES = 32
CHALLENGE_S = 5.0  # how long either end waits for the other's half of the handshake
_ASKER, _KEEPER = b"asker", b"keeper"


class Refused(Exception):
    """The other end did not prove it holds the key, or did not answer the handshake in time."""


@dataclass(frozen=True)
class Address:
    family: str  # "AF_UNIX" or "AF_PIPE", as multiprocessing.connection names them
    address: str
    key_file: Path


def address(profile: str, keeper_pid: int) -> Address:
    """Where the keeper `keeper_pid` of `profile` listens."""
    state = paths.state_dir()
    name = f"{profile}-{keeper_pid}"
    key_file = state / f"{name}.key"
    tag = hashlib.sha256(f"{state}\0{profile}".encode()).hexdigest()[:16]
    if sys.platform == "win32":
        return Address("AF_PIPE", rf"\\.\pipe\colabtunnel-{tag}-{keeper_pid}", key_file)
    path = state / f"{name}.sock"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        # A deep COLABTUNNEL_HOME (or macOS's long user dirs): a short private directory instead
        path = _short_dir() / f"{tag}-{keeper_pid}.sock"
    return Address("AF_UNIX", str(path), key_file)


def _short_dir() -> Path:
    """/tmp/colabtunnel-UID, 0700 and this user's: checked, since anyone may create it first."""
    if sys.platform == "win32":
        raise OSError("named pipes need no directory")
    directory = Path(tempfile.gettempdir()) / f"colabtunnel-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = os.lstat(directory)
    if not os.path.isdir(directory) or os.path.islink(directory) or info.st_uid != os.getuid():
        raise OSError(f"{directory} is not a directory of this user's")
    os.chmod(directory, 0o700)
    return directory


def sweep(profile: str, alive: Callable[[int], bool]) -> None:
    """Remove the channel files of `profile`'s keepers that are gone (what kill -9 leaves)."""
    for key_file in paths.state_dir().glob(f"{profile}-*.key"):
        pid = key_file.stem.removeprefix(f"{profile}-")
        if not pid.isdigit() or alive(int(pid)):
            continue
        where = address(profile, int(pid))
        for leftover in (key_file, Path(where.address)):
            if where.family == "AF_UNIX" or leftover == key_file:
                with contextlib.suppress(OSError):
                    leftover.unlink()


# -- the keeper's side -----------------------------------------------------------------------------


class Listening:
    """The keeper's listener. accept() hands out connections that have proved the key."""

    def __init__(self, profile: str) -> None:
        self.where = address(profile, os.getpid())
        self.key = secrets.token_bytes(KEY_BYTES)
        self.closed = False
        if self.where.family == "AF_UNIX":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.where.address)  # this pid's, so a dead process's
        _write_private(self.where.key_file, self.key)
        old_umask = os.umask(0o177)  # the socket is 0600 from the moment it exists
        try:
            self.listener = mpc.Listener(self.where.address, self.where.family, backlog=8)
        except BaseException:
            self.where.key_file.unlink(missing_ok=True)
            raise
        finally:
            os.umask(old_umask)
        if self.where.family == "AF_UNIX":
            os.chmod(self.where.address, 0o600)

    def accept(self) -> Conn | None:
        """The next connection, or None once closed."""
        conn = self.listener.accept()
        if self.closed:
            conn.close()
            return None
        return conn

    def authenticate(self, conn: Conn) -> None:
        """Raise Refused unless the peer is this user and holds the key; prove we hold it too."""
        if not _same_user(conn):
            raise Refused("another user")
        challenge = secrets.token_bytes(KEY_BYTES)
        conn.send_bytes(challenge)
        said = _receive(conn, 2 * KEY_BYTES + 8)
        proof, theirs = said[:-KEY_BYTES], said[-KEY_BYTES:]
        if not hmac.compare_digest(proof, _proof(self.key, _ASKER, challenge)):
            raise Refused("a wrong key")
        conn.send_bytes(_proof(self.key, _KEEPER, theirs))

    def close(self) -> None:
        """Stop listening and remove the channel's files. accept() returns None from now on."""
        self.closed = True
        # accept() is not woken by closing the listener on every platform: a last caller does it
        with contextlib.suppress(OSError):
            mpc.Client(self.where.address, self.where.family).close()
        with contextlib.suppress(OSError):
            self.listener.close()  # on POSIX this unlinks the socket
        with contextlib.suppress(OSError):
            self.where.key_file.unlink()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    try:
        if sys.platform != "win32":
            os.fchmod(fd, 0o600)  # a file left with other modes by a dead process of this pid
        os.write(fd, data)
    finally:
        os.close(fd)


def _same_user(conn: Conn) -> bool:
    """Linux tells who is on the other end; elsewhere the key (and on POSIX the 0700 directory)
    is the guard."""
    if sys.platform == "win32":
        return True
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    with socket.socket(fileno=os.dup(conn.fileno())) as peer:
        _pid, uid, _gid = struct.unpack("3i", peer.getsockopt(socket.SOL_SOCKET, option, 12))
    return bool(uid == os.getuid())


# -- the asker's side ------------------------------------------------------------------------------


def connect(where: Address) -> Conn:
    """A connection to the keeper at `where` that has proved the key both ways. Raises
    FileNotFoundError when there is no key (no such keeper), OSError when nobody listens, and
    Refused when the other end is not the keeper. Blocking: the caller bounds it in time."""
    key = where.key_file.read_bytes()
    conn = mpc.Client(where.address, where.family)
    try:
        challenge = _receive(conn, KEY_BYTES)
        ours = secrets.token_bytes(KEY_BYTES)
        conn.send_bytes(_proof(key, _ASKER, challenge) + ours)
        if not hmac.compare_digest(_receive(conn, KEY_BYTES + 8), _proof(key, _KEEPER, ours)):
            raise Refused("the other end of the channel does not hold the keeper's key")
    except BaseException:
        conn.close()
        raise
    return conn


def _proof(key: bytes, side: bytes, challenge: bytes) -> bytes:
    return hmac.new(key, side + challenge, hashlib.sha256).digest()


def _receive(conn: Conn, limit: int, timeout: float = CHALLENGE_S) -> bytes:
    if not conn.poll(timeout):
        raise Refused("no handshake in time")
    try:
        return conn.recv_bytes(limit)
    except (OSError, EOFError) as exc:
        raise Refused(f"the handshake broke off: {exc}") from None
