"""The built-in ssh_config reader: OpenSSH's rules, for machines without an OpenSSH client.

When `ssh` is installed, colabtunnel asks it (`ssh -G`, see openssh.py) and this module is not
used. Otherwise it reads the user's config, then the system-wide one, the way ssh_config(5) says:
case-insensitive keywords, `Key value` and `Key=value`, quotes, comments, `Host` patterns with `*`,
`?` and `!negation`, `Match` with host / originalhost / user / localuser / all (and `!`), `Include`
(globs, relative to ~/.ssh or /etc/ssh, nested up to 16 deep, applying only where it stands), and
the first value wins except for keywords that accumulate (IdentityFile, CertificateFile).
`Match exec`, `canonical` and `final` cannot be evaluated here: such a block is skipped with a
warning naming its line.

It returns settings in the form `ssh -G` prints them, so both sources feed the same code
(resolve.py); tests/test_sshconfig_oracle.py holds the two against each other.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from colabtunnel.errors import ConfigError
from colabtunnel.ssh import local_account
from colabtunnel.ssh.sshtokens import expand_tilde

logger = logging.getLogger("colabtunnel")

MAX_INCLUDE_DEPTH = 16
# Keywords whose every applicable line counts (the others: the first applicable line wins).
ACCUMULATE = frozenset(
    {
        "identityfile",
        "certificatefile",
        "localforward",
        "remoteforward",
        "dynamicforward",
        "sendenv",
    }
)
# Keywords whose value is the rest of the line, kept as written (quotes and all) for a shell.
_RAW = frozenset({"proxycommand", "localcommand", "remotecommand", "knownhostscommand"})
_KEYWORD_RE = re.compile(r"([^\s=]+)(?:\s*=\s*|\s+|$)(.*)")
_MATCH_ATTRIBUTES = frozenset(
    {"all", "canonical", "final", "exec", "host", "originalhost", "user", "localuser"}
)
_UNSUPPORTED_MATCH = frozenset({"exec", "canonical", "final"})


def user_config() -> Path:
    return local_account.user_home() / ".ssh" / "config"


def system_config() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "ssh" / "ssh_config"
    return Path("/etc/ssh/ssh_config")


@dataclass(frozen=True)
class Option:
    key: str  # lowercased keyword
    args: tuple[str, ...]
    raw: str  # the value as written, for keywords whose value is a command
    file: Path
    line: int

    @property
    def origin(self) -> str:
        return f"ssh_config {self.file}:{self.line}"

    @property
    def value(self) -> str:
        return self.raw if self.key in _RAW else " ".join(self.args)


def host_matches(host: str, patterns: tuple[str, ...] | list[str], fold_case: bool = False) -> bool:
    """OpenSSH pattern-list matching: any pattern matches and no negated (`!`) pattern does.

    `Host` lines compare the name as typed, case and all; `Match host` folds case.
    """
    if fold_case:
        host, patterns = host.lower(), [p.lower() for p in patterns]
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _pattern_re(pattern.removeprefix("!")).fullmatch(host):
            if negated:
                return False
            matched = True
    return matched


def _list_matches(value: str, pattern_list: str, fold_case: bool) -> bool:
    """A comma-separated pattern list as `Match host/user` takes it."""
    return host_matches(value, [p for p in pattern_list.split(",") if p], fold_case)


@lru_cache(maxsize=256)
def _pattern_re(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(_GLOB.get(c, re.escape(c)) for c in pattern), re.DOTALL)


_GLOB = {"*": ".*", "?": "."}


# --- reading lines ----------------------------------------------------------------------------


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:  # missing, a directory, unreadable: ssh ignores it too
        logger.debug("ssh config %s not read: %s", path, exc)
        return []


def split_line(raw: str, path: Path, number: int) -> Option | None:
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    match = _KEYWORD_RE.match(line)
    if match is None:
        logger.debug("%s, line %d: cannot parse %r", path, number, line)
        return None
    key = match.group(1).lower()
    args = split_args(match.group(2), path, number)
    if not args:
        logger.debug("%s, line %d: %s without a value, ignored", path, number, match.group(1))
        return None
    return Option(key, args, match.group(2).strip(), path, number)


def split_args(text: str, path: Path, number: int) -> tuple[str, ...]:
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


# --- evaluating, in reading order, for one host ----------------------------------------------


@dataclass
class Evaluation:
    """What the config says for one host, built as OpenSSH builds it: line by line, first wins."""

    original_host: str  # the name as given
    settings: dict[str, list[Option]] = field(default_factory=dict)
    # ProxyJump and ProxyCommand share one slot; `ProxyJump none` takes only ProxyJump's.
    proxy_taken: bool = False
    jump_taken: bool = False

    def apply(self, option: Option) -> None:
        key = option.key
        if key in ACCUMULATE:
            self.settings.setdefault(key, []).append(option)
        elif key == "proxycommand":
            if not (self.proxy_taken or "proxyjump" in self.settings):
                self.proxy_taken = True
                self.settings[key] = [option]
        elif key == "proxyjump":
            if not (self.proxy_taken or self.jump_taken):
                self.jump_taken = True
                if option.args[0].lower() != "none":
                    self.settings[key] = [option]
        elif key not in self.settings:
            self.settings[key] = [option]

    def first(self, key: str) -> str | None:
        options = self.settings.get(key)
        return options[0].args[0] if options else None

    def hostname(self) -> str:
        """What `Match host` compares: HostName if set so far (%h expanded), else the name."""
        value = self.first("hostname")
        if value is None:
            return self.original_host
        return value.replace("%%", "\0").replace("%h", self.original_host).replace("\0", "%")


def evaluate(
    host: str,
    preset: list[Option],
    config_file: Path | None = None,
) -> Evaluation:
    """The options for `host`: `preset` (the profile's, like ssh's -o), then the user config, then
    the system-wide one, unless `config_file` is given (like `ssh -F`: that file only)."""
    evaluation = Evaluation(host)
    for option in preset:
        evaluation.apply(option)
    if config_file is not None:
        _read_file(config_file, evaluation, user=True, depth=0, active=True)
    else:
        _read_file(user_config(), evaluation, user=True, depth=0, active=True)
        _read_file(system_config(), evaluation, user=False, depth=0, active=True)
    return evaluation


def _read_file(path: Path, evaluation: Evaluation, *, user: bool, depth: int, active: bool) -> None:
    """Apply `path`'s lines. `active`: whether lines before the first Host/Match apply (False when
    the Include that reads this file sits in a block that does not apply: nothing in it can)."""
    outer = active
    for number, raw in enumerate(read_lines(path), 1):
        option = split_line(raw, path, number)
        if option is None:
            continue
        if option.key == "host":
            active = outer and host_matches(evaluation.original_host, option.args)
        elif option.key == "match":
            active = outer and _match(option, evaluation)
        elif option.key == "include":
            if depth >= MAX_INCLUDE_DEPTH:
                raise ConfigError(
                    f"{path}, line {number}: Include nested more than {MAX_INCLUDE_DEPTH} deep",
                    hint="an Include probably includes itself; fix the Include lines",
                )
            if active:
                for included in include_targets(option.args, user):
                    _read_file(included, evaluation, user=user, depth=depth + 1, active=True)
        elif active:
            evaluation.apply(option)


def include_targets(args: tuple[str, ...], user: bool) -> Iterator[Path]:
    base = local_account.user_home() / ".ssh" if user else system_config().parent
    for arg in args:
        pattern = expand_tilde(arg)
        if not os.path.isabs(pattern):
            pattern = str(base / pattern)
        matches = sorted(glob.glob(pattern))
        if not matches:
            logger.debug("ssh config Include %s matched no file", pattern)
        yield from (Path(match) for match in matches)


def _match(option: Option, evaluation: Evaluation) -> bool:
    """Every criterion of a `Match` line holds (each may be negated with `!`)."""
    words = list(option.args)
    verdict = True
    while words:
        word = words.pop(0)
        negated = word.startswith("!")
        attribute = word.removeprefix("!").lower()
        if attribute not in _MATCH_ATTRIBUTES:
            raise ConfigError(
                f"{option.file}, line {option.line}: unsupported Match attribute '{word}'",
                hint="fix the Match line (see `man ssh_config`)",
            )
        if attribute == "all":
            continue
        if attribute in _UNSUPPORTED_MATCH:
            if attribute == "exec" and words:
                words.pop(0)
            logger.warning(
                "%s, line %d: `Match %s` cannot be evaluated without an OpenSSH client: "
                "the block is skipped (install OpenSSH's `ssh` to have it honoured)",
                option.file,
                option.line,
                attribute,
            )
            return False
        if not words:
            raise ConfigError(
                f"{option.file}, line {option.line}: Match {word} needs an argument",
                hint="fix the Match line (see `man ssh_config`)",
            )
        argument = words.pop(0)
        if attribute == "host":
            hit = _list_matches(evaluation.hostname(), argument, fold_case=True)
        elif attribute == "originalhost":
            hit = _list_matches(evaluation.original_host, argument, fold_case=True)
        elif attribute == "user":
            user = evaluation.first("user") or local_account.local_user()
            hit = _list_matches(user, argument, fold_case=False)
        else:  # localuser
            hit = _list_matches(local_account.local_user(), argument, fold_case=False)
        verdict = verdict and hit != negated
    return verdict
