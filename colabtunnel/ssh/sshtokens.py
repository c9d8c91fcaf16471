"""OpenSSH's `~`, `%x` and `${ENV}` expansion of ssh_config values (ssh_config(5), TOKENS).

`ssh -G` expands UserKnownHostsFile and IdentityAgent itself but prints IdentityFile,
CertificateFile and ProxyCommand as written; those are expanded here, the way `ssh` expands them
when it connects, so both config sources end in the same paths.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys

from colabtunnel.errors import ConfigError
from colabtunnel.ssh import local_account

_TOKEN_RE = re.compile(r"%(.?)", re.DOTALL)
_ENV_RE = re.compile(r"\$\{([^}]*)\}")

# What ProxyCommand accepts (ssh_config(5)): the other tokens are an error there.
PROXY_COMMAND_TOKENS = ("h", "n", "p", "r")


def connection_tokens(
    *,
    original_host: str,
    hostname: str,
    port: int,
    user: str,
    host_key_alias: str | None,
    jump: str,
) -> dict[str, str]:
    """The tokens of one connection: %d %u %l %L %h %n %p %r %C %i %k %j."""
    local_host = socket.gethostname()
    short = local_host.split(".")[0]
    # %C as OpenSSH 9.2 computes it: SHA-1 of %l%h%p%r in hex
    digest = hashlib.sha1(f"{local_host}{hostname}{port}{user}".encode()).hexdigest()
    return {
        "d": str(local_account.user_home()),
        "u": local_account.local_user(),
        "l": local_host,
        "L": short,
        "h": hostname,
        "n": original_host,
        "p": str(port),
        "r": user,
        "C": digest,
        "i": _uid(),
        "k": host_key_alias or original_host,
        "j": jump,
    }


def expand(value: str, tokens: dict[str, str], origin: str) -> str:
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


def expand_tilde(value: str) -> str:
    """`~` and `~/...` to the password-database home, as ssh does (not $HOME)."""
    if value == "~" or value.startswith(("~/", "~" + os.sep)):
        return str(local_account.user_home()) + value[1:]
    return os.path.expanduser(value) if value.startswith("~") else value  # ~otheruser/...


# Windows' OpenSSH names its system directory so in its defaults, and `ssh -G` prints it as is
PROGRAMDATA_TOKEN = "__PROGRAMDATA__"


def local_path(value: str) -> str:
    """A file name as ssh_config or `ssh -G` gives it, as this machine opens it: `~` expanded,
    and Windows' OpenSSH's __PROGRAMDATA__ made %PROGRAMDATA% (C:\\ProgramData)."""
    if value.startswith(PROGRAMDATA_TOKEN):
        programdata = os.environ.get("PROGRAMDATA") or r"C:\ProgramData"
        value = programdata + value[len(PROGRAMDATA_TOKEN) :]
    return expand_tilde(value)


def expand_env(value: str, origin: str) -> str:
    try:
        return _ENV_RE.sub(lambda m: os.environ[m.group(1)], value)
    except KeyError as exc:
        raise ConfigError(
            f"{origin}: environment variable {exc.args[0]} is not set",
            hint="set it or remove ${...} from the value",
        ) from exc


def expand_path(value: str, tokens: dict[str, str], origin: str) -> str:
    """`~`, then %-tokens and ${ENV}, as ssh expands IdentityFile; made absolute."""
    value = expand_env(expand(expand_tilde(value), tokens, origin), origin)
    return os.path.abspath(value)


def _uid() -> str:
    """ssh_config's %i. Windows has no numeric uid; "0" keeps a path that uses %i valid."""
    if sys.platform == "win32":
        return "0"
    return str(os.getuid())
