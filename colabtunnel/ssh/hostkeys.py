"""known_hosts: load it the way OpenSSH does, verify a server's key strictly, and append trusted keys.

Lines paramiko cannot parse (`@cert-authority`, `@revoked`, unknown key types) are skipped one by one so
they never break loading. Nothing here ever accepts a key silently: unknown and changed keys both raise.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from colabtunnel.errors import ColabtunnelError

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("colabtunnel")


def host_entry_name(hostname: str, port: int) -> str:
    """The name OpenSSH files a host under: `host` on port 22, `[host]:port` otherwise."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` fingerprint (base64, no padding)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class KnownHosts:
    # Every (host pattern, key) pair, in file order: OpenSSH accepts any listed key for a host, so
    # two keys of one type (round-robin login nodes) must both be kept, not the last one.
    entries: list[tuple[str, paramiko.PKey]]
    revoked: set[bytes]
    files: tuple[Path, ...]

    def lookup(self, name: str) -> list[paramiko.PKey]:
        return [key for pattern, key in self.entries if _matches(pattern, name)]


def _matches(pattern: str, name: str) -> bool:
    """A known_hosts host field: plain name, hashed `|1|salt|hash`, or a wildcard pattern."""
    from paramiko.hostkeys import HostKeys

    if pattern.startswith("|1|"):
        salt = pattern.split("|")[2]
        return HostKeys.hash_host(name, salt) == pattern
    if pattern.startswith("!"):
        return False  # negations only exclude; without a positive match nothing is accepted
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name.lower()
    # OpenSSH patterns know only * and ?; brackets in `[host]:port` are literal
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE) is not None


def load(files: tuple[str, ...] | list[str]) -> KnownHosts:
    entries: list[tuple[str, paramiko.PKey]] = []
    revoked: set[bytes] = set()
    paths = tuple(Path(f).expanduser() for f in files)
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            continue
        _read(text, path, entries, revoked)
    return KnownHosts(entries=entries, revoked=revoked, files=paths)


def parse(text: str, origin: str) -> KnownHosts:
    """known_hosts lines read elsewhere (a cluster's files, read over the login connection)."""
    entries: list[tuple[str, paramiko.PKey]] = []
    revoked: set[bytes] = set()
    _read(text, Path(origin), entries, revoked)
    return KnownHosts(entries=entries, revoked=revoked, files=(Path(origin),))


def _read(
    text: str, path: Path, entries: list[tuple[str, paramiko.PKey]], revoked: set[bytes]
) -> None:
    from paramiko.hostkeys import HostKeyEntry

    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            _note_marker(line, revoked, path, lineno)
            continue
        try:
            entry = HostKeyEntry.from_line(line, lineno)
        except Exception as exc:
            log.debug("%s:%d: skipped (%s)", path, lineno, exc)
            continue
        if entry is not None and entry.key is not None:
            entries.extend((name, entry.key) for name in entry.hostnames)


def _note_marker(line: str, revoked: set[bytes], path: Path, lineno: int) -> None:
    fields = line.split()
    if fields[0] == "@revoked" and len(fields) >= 4:
        with contextlib.suppress(ValueError):
            revoked.add(base64.b64decode(fields[3]))
    log.debug("%s:%d: %s line skipped", path, lineno, fields[0])


class UnknownHostKey(ColabtunnelError):
    def __init__(self, name: str, key: paramiko.PKey, profile: str) -> None:
        super().__init__(
            f"host key for {name} is not known ({key.get_name()} {fingerprint(key)})",
            hint=f"check the fingerprint with the host's admin, then run `colabtunnel trust {profile}` "
            f"(or `colabtunnel up {profile} --accept-new`)",
        )
        self.key = key


class ChangedHostKey(ColabtunnelError):
    def __init__(self, name: str, key: paramiko.PKey, files: tuple[Path, ...]) -> None:
        where = ", ".join(str(f) for f in files)
        super().__init__(
            f"HOST KEY FOR {name} HAS CHANGED: the server now presents {key.get_name()} "
            f"{fingerprint(key)}, which does not match known_hosts. Someone may be intercepting "
            "the connection.",
            hint=f"if the host was really reinstalled, remove its old line with "
            f"`ssh-keygen -R '{name}'` ({where}) and trust it again; refusing to connect",
        )


def verify(known: KnownHosts, name: str, key: paramiko.PKey, profile: str) -> None:
    """Accept `key` for `name` only if known_hosts holds exactly it. Raise otherwise."""
    if key.asbytes() in known.revoked:
        raise ColabtunnelError(
            f"host key for {name} ({fingerprint(key)}) is marked @revoked in known_hosts",
            hint="the host's administrator revoked this key; do not connect",
        )
    stored = known.lookup(name)
    if any(k.asbytes() == key.asbytes() for k in stored):
        return
    if stored:
        raise ChangedHostKey(name, key, known.files)
    raise UnknownHostKey(name, key, profile)


def append(path: Path, name: str, key: paramiko.PKey, hashed: bool = False) -> None:
    """Append `name keytype base64` to known_hosts (OpenSSH format), creating ~/.ssh 0700 if needed.

    `hashed` (HashKnownHosts yes): the name is stored as OpenSSH's `|1|salt|hash`.
    """
    from paramiko.hostkeys import HostKeys

    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    field = HostKeys.hash_host(name) if hashed else name
    line = f"{field} {key.get_name()} {key.get_base64()}\n"
    needs_newline = (
        path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(("\n" if needs_newline else "") + line)
