"""OpenSSH client config (~/.ssh/config) read the way `ssh` reads it, and profiles resolved with it.

Our own small parser rather than paramiko.SSHConfig, which has no `Include`. Semantics follow
ssh_config(5): case-insensitive keywords, `Key value` and `Key=value`, quotes, comments, `Host`
patterns with `*`, `?` and `!negation`, `Include` (globs, relative to ~/.ssh, nested up to 16 deep,
also inside a Host block, where it applies only within that block), and the first value wins except
for keywords that accumulate (IdentityFile). `Match` blocks are skipped: their criteria cannot be
evaluated faithfully here.
"""

from __future__ import annotations

import getpass
import glob
import logging
import os
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from colabtunnel.errors import ConfigError

if TYPE_CHECKING:
    from colabtunnel.profiles import Profile

logger = logging.getLogger("colabtunnel")

MAX_INCLUDE_DEPTH = 16
# Keywords whose every applicable line counts (the others: the first applicable line wins).
_ACCUMULATE = frozenset(
    {
        "identityfile",
        "certificatefile",
        "localforward",
        "remoteforward",
        "dynamicforward",
        "sendenv",
    }
)
# ProxyJump and ProxyCommand share one slot: whichever applies first wins, as in OpenSSH.
_PROXY_KEYS = frozenset({"proxyjump", "proxycommand"})
_KEYWORD_RE = re.compile(r"([^\s=]+)(?:\s*=\s*|\s+|$)(.*)")
_TOKEN_RE = re.compile(r"%(.?)", re.DOTALL)
_ENV_RE = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect for one profile, after ssh_config and the profile's own keys."""

    alias: str  # the host as the profile wrote it
    hostname: str  # HostName (with %h expanded) or the alias
    port: int
    user: str
    identity_files: tuple[
        str, ...
    ]  # absolute: the profile's first, then ssh_config's, no duplicates
    identities_only: bool
    proxy_jump: str | None  # None when absent or "none"
    known_hosts_files: tuple[
        str, ...
    ]  # UserKnownHostsFile, default ~/.ssh/known_hosts; () for "none"
    strict_host_key_checking: str | None  # lowercased, e.g. "yes", "accept-new", "no"
    host_key_alias: str | None


@dataclass(frozen=True)
class Option:
    key: str  # lowercased keyword
    args: tuple[str, ...]
    file: Path
    line: int

    @property
    def origin(self) -> str:
        return f"{self.file}, line {self.line}"


@dataclass(frozen=True)
class Block:
    """Consecutive options under one scope.

    `scopes` holds the patterns of each enclosing `Host` line, outermost first (an Include inside a
    Host block adds a level); the block applies when every level matches. `None` is a `Match` level,
    which never applies.
    """

    scopes: tuple[tuple[str, ...] | None, ...]
    options: tuple[Option, ...]

    def applies_to(self, host: str) -> bool:
        return all(scope is not None and host_matches(host, scope) for scope in self.scopes)


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """OpenSSH `Host` matching: any pattern matches and no negated (`!`) pattern does."""
    host = host.lower()
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _pattern_re(pattern.removeprefix("!").lower()).fullmatch(host):
            if negated:
                return False
            matched = True
    return matched


@lru_cache(maxsize=256)
def _pattern_re(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(_GLOB.get(c, re.escape(c)) for c in pattern), re.DOTALL)


_GLOB = {"*": ".*", "?": "."}


# --- parsing ----------------------------------------------------------------------------------


def parse_config(path: Path) -> list[Block]:
    """The blocks of `path` and the files it includes, in reading order. Missing file: no blocks."""
    blocks: list[Block] = []
    _parse_file(path, (), blocks, depth=0)
    return blocks


def _parse_file(
    path: Path, outer: tuple[tuple[str, ...] | None, ...], blocks: list[Block], depth: int
) -> None:
    scope = outer
    options: list[Option] = []
    for number, raw in enumerate(_read_lines(path), 1):
        parsed = _split_line(raw, path, number)
        if parsed is None:
            continue
        key, args = parsed
        if key not in ("host", "match", "include"):
            options.append(Option(key, args, path, number))
            continue
        options = _flush(blocks, scope, options)
        if key == "host":
            scope = (*outer, args)
        elif key == "match":
            logger.debug("%s, line %d: skipping a Match block (not supported)", path, number)
            scope = (*outer, None)
        elif None not in scope:  # an Include inside a Match block never applies: don't read it
            if depth >= MAX_INCLUDE_DEPTH:
                raise ConfigError(
                    f"{path}, line {number}: Include nested more than {MAX_INCLUDE_DEPTH} deep",
                    hint="an Include probably includes itself; fix the Include lines",
                )
            for included in _include_targets(args):
                _parse_file(included, scope, blocks, depth + 1)
    _flush(blocks, scope, options)


def _flush(
    blocks: list[Block], scope: tuple[tuple[str, ...] | None, ...], options: list[Option]
) -> list[Option]:
    if options:
        blocks.append(Block(scope, tuple(options)))
    return []


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:  # missing, a directory, unreadable: ssh ignores it too
        logger.debug("ssh config %s not read: %s", path, exc)
        return []


def _include_targets(args: tuple[str, ...]) -> list[Path]:
    ssh_dir = Path.home() / ".ssh"
    found: list[Path] = []
    for arg in args:
        pattern = os.path.expanduser(arg)
        if not os.path.isabs(pattern):
            pattern = str(ssh_dir / pattern)
        matches = sorted(glob.glob(pattern))
        if not matches:
            logger.debug("ssh config Include %s matched no file", pattern)
        found.extend(Path(match) for match in matches)
    return found


def _split_line(raw: str, path: Path, number: int) -> tuple[str, tuple[str, ...]] | None:
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    match = _KEYWORD_RE.match(line)
    if match is None:
        logger.debug("%s, line %d: cannot parse %r", path, number, line)
        return None
    args = _split_args(match.group(2), path, number)
    if not args:
        logger.debug("%s, line %d: %s without a value, ignored", path, number, match.group(1))
        return None
    return match.group(1).lower(), args


def _split_args(text: str, path: Path, number: int) -> tuple[str, ...]:
    """Words of `text` as OpenSSH splits them: quotes, backslash escapes, `#` starting a comment."""
    args: list[str] = []
    word: list[str] | None = None  # None between words; [] is an empty word such as ""
    quote = ""
    i = 0
    while i < len(text):
        char, following = text[i], text[i + 1 : i + 2]
        i += 1
        if char == "\\" and following and following in ("\\", "'", '"', "" if quote else " "):
            char = following
            i += 1
        elif quote and char == quote:
            quote = ""
            continue
        elif not quote and char in " \t":
            if word is not None:
                args.append("".join(word))
            word = None
            continue
        elif not quote and char == "#" and word is None:
            break
        elif not quote and char in "\"'":
            quote, word = char, word if word is not None else []
            continue
        word = word if word is not None else []
        word.append(char)
    if quote:
        raise ConfigError(
            f"{path}, line {number}: unterminated quote", hint="close the quote or remove it"
        )
    if word is not None:
        args.append("".join(word))
    return tuple(args)


# --- looking up and resolving -----------------------------------------------------------------


def lookup(host: str, config_path: Path | None = None) -> dict[str, list[str]]:
    """The options that apply to `host`, keywords lowercased, values as written (no expansion)."""
    found = _collect(host, _config_path(config_path))
    return {
        key: [arg for option in options for arg in option.args] for key, options in found.items()
    }


def _config_path(config_path: Path | None) -> Path:
    return Path.home() / ".ssh" / "config" if config_path is None else config_path


def _collect(host: str, path: Path) -> dict[str, list[Option]]:
    found: dict[str, list[Option]] = {}
    for block in parse_config(path):
        if not block.applies_to(host):
            continue
        for option in block.options:
            if option.key in _ACCUMULATE:
                found.setdefault(option.key, []).append(option)
            elif option.key in _PROXY_KEYS and _PROXY_KEYS & found.keys():
                continue
            elif option.key not in found:
                found[option.key] = [option]
    return found


def resolve(profile: Profile, config_path: Path | None = None) -> SSHTarget:
    """The SSH target of `profile`: its own keys first, then ssh_config, then OpenSSH's defaults."""
    if profile.is_local:
        raise ValueError(f"profile {profile.name!r} runs on this machine: it has no SSH target")
    alias = profile.host
    found = _collect(alias, _config_path(config_path))
    hostname = alias
    if "hostname" in found:
        option = found["hostname"][0]
        hostname = _expand(option.args[0], {"h": alias}, option.origin)
    user = profile.user or _first(found, "user") or getpass.getuser()
    port = profile.port or _config_port(found) or 22
    jump = _proxy_jump(profile, found)
    key_alias = _first(found, "hostkeyalias")
    local_host = socket.gethostname()
    tokens = {
        "d": str(Path.home()),
        "u": getpass.getuser(),
        "h": hostname,
        "r": user,
        "p": str(port),
        "n": alias,
        "l": local_host,
        "L": local_host.split(".")[0],
        "k": key_alias or alias,
        "j": jump or "",
    }
    identity_files = [
        _expand_path(option.args[0], tokens, option.origin)
        for option in found.get("identityfile", [])
    ]
    if profile.identity_file:
        origin = f"profile '{profile.name}' ({profile.source}), key 'identity_file'"
        identity_files.insert(0, _expand_path(profile.identity_file, tokens, origin))
    return SSHTarget(
        alias=alias,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(dict.fromkeys(identity_files)),
        identities_only=(_first(found, "identitiesonly") or "no").lower() in ("yes", "true"),
        proxy_jump=jump,
        known_hosts_files=_known_hosts(found, tokens),
        strict_host_key_checking=(_first(found, "stricthostkeychecking") or "").lower() or None,
        host_key_alias=key_alias,
    )


def _first(found: dict[str, list[Option]], key: str) -> str | None:
    options = found.get(key)
    return options[0].args[0] if options else None


def _config_port(found: dict[str, list[Option]]) -> int | None:
    options = found.get("port")
    if not options:
        return None
    raw = options[0].args[0]
    if re.fullmatch(r"[0-9]{1,5}", raw) and 1 <= int(raw) <= 65535:
        return int(raw)
    raise ConfigError(
        f"{options[0].origin}: bad Port value '{raw}'",
        hint="a port is an integer 1..65535: fix or remove this line",
    )


def _proxy_jump(profile: Profile, found: dict[str, list[Option]]) -> str | None:
    value = profile.jump
    if value is None:
        if "proxycommand" in found and _first(found, "proxycommand") != "none":
            logger.warning(
                "%s: ProxyCommand is not supported and is ignored; set `jump` in the profile",
                found["proxycommand"][0].origin,
            )
        value = _first(found, "proxyjump")
    return None if value is None or value.lower() == "none" else value


def _known_hosts(found: dict[str, list[Option]], tokens: dict[str, str]) -> tuple[str, ...]:
    options = found.get("userknownhostsfile")
    if not options:
        return (str(Path.home() / ".ssh" / "known_hosts"),)
    if [arg.lower() for arg in options[0].args] == ["none"]:
        return ()
    return tuple(_expand_path(arg, tokens, options[0].origin) for arg in options[0].args)


def _expand_path(value: str, tokens: dict[str, str], origin: str) -> str:
    """`~`, then %-tokens, then ${ENV}, as ssh expands IdentityFile; made absolute."""
    value = _expand(os.path.expanduser(value), tokens, origin)
    try:
        value = _ENV_RE.sub(lambda m: os.environ[m.group(1)], value)
    except KeyError as exc:
        raise ConfigError(
            f"{origin}: environment variable {exc.args[0]} is not set",
            hint="set it or remove ${...} from the path",
        ) from exc
    return os.path.abspath(value)


def _expand(value: str, tokens: dict[str, str], origin: str) -> str:
    """Replace the %X tokens of `value`; an unknown one is an error located at `origin`."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if token == "%":
            return "%"
        if token in tokens:
            return tokens[token]
        known = ", ".join(f"%{t}" for t in ("%", *tokens))
        raise ConfigError(f"{origin}: unknown token %{token} in '{value}'", hint=f"use {known}")

    return _TOKEN_RE.sub(replace, value)


_HOP_RE = re.compile(
    r"^(?:ssh://)?(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:@]+)(?::(?P<port>\d{1,5}))?$"
)


def jump_targets(target: SSHTarget, config_path: Path | None = None) -> list[SSHTarget]:
    """The jump hosts of `target`, outermost first, each resolved through ssh_config like `ssh -J`.

    A hop's own ProxyJump is not followed: the chain is exactly what `jump`/ProxyJump lists.
    """
    from colabtunnel.profiles import Profile

    if not target.proxy_jump:
        return []
    hops = []
    for raw in target.proxy_jump.split(","):
        match = _HOP_RE.match(raw.strip())
        if match is None or not (1 <= int(match["port"] or 22) <= 65535):
            raise ConfigError(
                f"jump host {raw.strip()!r} (of {target.alias}) is not [user@]host[:port]",
                hint='write jump = "user@bastion.example.org:22,user@second-hop"',
            )
        hop = Profile(
            name=target.alias,
            host=match["host"].strip("[]"),
            user=match["user"],
            port=int(match["port"]) if match["port"] else None,
            jump="none",
        )
        hops.append(resolve(hop, config_path))
    return hops
