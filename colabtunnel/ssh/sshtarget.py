"""Where and how to connect: a profile (or a jump host) resolved through ssh_config, and the route.

The rule: if `ssh NAME` reaches the host, colabtunnel does too, by the same route, with the same
user, keys and known-hosts files. So each host is resolved by OpenSSH itself (`ssh -G`,
openssh.py) when an OpenSSH client is installed, else by the built-in reader (sshconfig.py), which
yields the same settings; the profile's own keys are passed in the way `ssh -o` passes options, so
they win as command-line options win. A route is built as OpenSSH builds it for ProxyJump
`a,b,c`: the last jump host `c` is reached through `a,b` (overriding c's own proxy settings), and
only the outermost host's own ProxyJump/ProxyCommand is followed, recursively.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colabtunnel.errors import ConfigError
from colabtunnel.ssh import local_account, openssh, sshconfig, sshtokens

if TYPE_CHECKING:
    from colabtunnel.profiles import Profile

log = logging.getLogger("colabtunnel")

MAX_HOPS = 16
DEFAULT_IDENTITY_FILES = (
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
)
DEFAULT_USER_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
if sys.platform == "win32":  # as Windows' OpenSSH has it (sshtokens.local_path expands it)
    DEFAULT_GLOBAL_KNOWN_HOSTS = (
        r"__PROGRAMDATA__\ssh/ssh_known_hosts __PROGRAMDATA__\ssh/ssh_known_hosts2"
    )
else:
    DEFAULT_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"
_STRICT = {"yes": "true", "true": "true", "no": "false", "off": "false", "false": "false"}
_YES = ("yes", "true")
HOP_RE = re.compile(
    r"^(?:ssh://)?(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:@\[\]]+)(?::(?P<port>\d{1,5}))?$"
)
# The keys `ssh -G` prints that colabtunnel uses (the oracle test compares exactly these).
USED_KEYS = (
    "hostname",
    "user",
    "port",
    "identityfile",
    "certificatefile",
    "identitiesonly",
    "identityagent",
    "proxyjump",
    "proxycommand",
    "userknownhostsfile",
    "globalknownhostsfile",
    "stricthostkeychecking",
    "hostkeyalias",
    "hashknownhosts",
    "connecttimeout",
)


@dataclass(frozen=True)
class SSHTarget:
    """One host to log in to, with everything ssh_config and the profile say about it."""

    alias: str  # the name as given (profile `host`, or a jump host as written)
    hostname: str  # HostName (expanded) or the name
    port: int
    user: str
    identity_files: tuple[str, ...]  # absolute, in the order ssh tries them
    identity_files_required: tuple[str, ...]  # the profile's own: missing is an error
    certificate_files: tuple[str, ...]  # absolute; `<key>-cert.pub` beside a key is added later
    identities_only: bool
    identity_agent: str | None  # the agent socket to ask; None: no agent
    proxy_jump: str | None  # as ssh_config wrote it; None when absent or "none"
    proxy_command: str | None  # with its %-tokens expanded; None when absent or "none"
    known_hosts_files: tuple[str, ...]  # UserKnownHostsFile (trust writes to the first); () = none
    global_known_hosts_files: tuple[str, ...]
    strict_host_key_checking: str | None  # "true", "false", "ask", "accept-new"
    host_key_alias: str | None
    hash_known_hosts: bool
    connect_timeout: float | None
    origins: tuple[tuple[str, str], ...] = ()  # (field, where its value came from)
    resolver: str = "ssh -G"  # or "built-in"

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def origin(self, name: str) -> str:
        return dict(self.origins).get(name, "default")


def resolve(profile: Profile, config_file: Path | None = None) -> SSHTarget:
    """The SSH target of `profile`: its own keys first, then ssh_config, then OpenSSH's defaults."""
    if profile.is_local:
        raise ValueError(f"profile {profile.name!r} runs on this machine: it has no SSH target")
    preset: list[tuple[str, str]] = []
    if profile.user:
        preset.append(("User", profile.user))
    if profile.port:
        preset.append(("Port", str(profile.port)))
    if profile.jump is not None:
        # `jump = "none"`: straight there, whatever ssh_config says (ProxyCommand none takes the
        # one slot ProxyJump and ProxyCommand share; ProxyJump none would not stop a ProxyCommand)
        if profile.jump.lower() == "none":
            preset.append(("ProxyCommand", "none"))
        else:
            preset.append(("ProxyJump", profile.jump))
    if profile.identity_file:
        preset.append(("IdentityFile", profile.identity_file))
    return resolve_host(profile.host, preset, config_file=config_file)


def resolve_host(
    host: str, preset: list[tuple[str, str]], config_file: Path | None = None
) -> SSHTarget:
    """`host` resolved with `preset` options winning, by `ssh -G` when there is an OpenSSH client."""
    ssh = openssh.client()
    if ssh is not None:
        printed = openssh.resolve(ssh, host, preset, config_file)
        origins = {key.lower(): "ssh -G" for key in printed}
        resolver = "ssh -G"
    else:
        printed, origins = builtin_settings(host, preset, config_file)
        resolver = "built-in"
    for key, _ in preset:
        origins[key.lower()] = "profile"
    profile_identity = next((v for k, v in preset if k == "IdentityFile"), None)
    return _target(host, printed, origins, profile_identity, resolver)


# --- the built-in reader, printing what `ssh -G` would print ----------------------------------


def builtin_settings(
    host: str, preset: list[tuple[str, str]], config_file: Path | None = None
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The USED_KEYS of `host` as `ssh -G` prints them, and where each value came from."""
    options = [
        sshconfig.Option(key.lower(), (value,), value, Path("<profile>"), 0)
        for key, value in preset
    ]
    evaluation = sshconfig.evaluate(host, options, config_file)
    found = evaluation.settings
    origins = {key: found[key][0].origin for key in found}
    printed: dict[str, list[str]] = {}

    def first(key: str, default: str) -> str:
        value = evaluation.first(key)
        return default if value is None else value

    hostname = evaluation.hostname().lower()
    user = first("user", local_account.local_user())
    port = _port(first("port", "22"), found.get("port"))
    jump_value = evaluation.first("proxyjump")
    printed["hostname"] = [hostname]
    printed["user"] = [user]
    printed["port"] = [str(port)]
    # ssh keeps each file once, in first-seen order
    identity = list(dict.fromkeys(o.args[0] for o in found.get("identityfile", [])))
    printed["identityfile"] = identity or list(DEFAULT_IDENTITY_FILES)
    if "certificatefile" in found:
        printed["certificatefile"] = list(
            dict.fromkeys(o.args[0] for o in found["certificatefile"])
        )
    printed["identitiesonly"] = ["yes" if first("identitiesonly", "no").lower() in _YES else "no"]
    if jump_value is not None:
        printed["proxyjump"] = [_printed_jump(jump_value)]
    if "proxycommand" in found and found["proxycommand"][0].value.lower() != "none":
        printed["proxycommand"] = [found["proxycommand"][0].value]
    tokens = sshtokens.connection_tokens(
        original_host=evaluation.original_host,
        hostname=hostname,
        port=port,
        user=user,
        host_key_alias=(evaluation.first("hostkeyalias") or "").lower() or None,
        jump=jump_value or "",
    )
    known = found.get("userknownhostsfile")
    if known and [a.lower() for a in known[0].args] == ["none"]:
        printed["userknownhostsfile"] = ["none"]
    else:
        files = known[0].args if known else tuple(DEFAULT_USER_KNOWN_HOSTS.split())
        origin = known[0].origin if known else "default"
        printed["userknownhostsfile"] = [
            " ".join(sshtokens.expand_path(f, tokens, origin) for f in files)
        ]
    global_known = found.get("globalknownhostsfile")
    printed["globalknownhostsfile"] = [
        " ".join(global_known[0].args) if global_known else DEFAULT_GLOBAL_KNOWN_HOSTS
    ]
    agent = evaluation.first("identityagent")
    if agent is not None:
        keep = agent in ("none", "SSH_AUTH_SOCK") or agent.startswith("$")
        printed["identityagent"] = [
            agent
            if keep
            else sshtokens.expand_path(agent, tokens, found["identityagent"][0].origin)
        ]
    strict = first("stricthostkeychecking", "ask").lower()
    printed["stricthostkeychecking"] = [_STRICT.get(strict, strict)]
    alias = evaluation.first("hostkeyalias")
    if alias is not None:
        printed["hostkeyalias"] = [alias.lower()]
    printed["hashknownhosts"] = ["yes" if first("hashknownhosts", "no").lower() in _YES else "no"]
    printed["connecttimeout"] = [first("connecttimeout", "none")]
    return printed, origins


def _port(raw: str, options: list[sshconfig.Option] | None) -> int:
    """A port as ssh reads one: a number 1..65535 or a service name (`ssh` is 22)."""
    if re.fullmatch(r"[0-9]{1,5}", raw) and 1 <= int(raw) <= 65535:
        return int(raw)
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", raw):
        import socket

        try:
            return socket.getservbyname(raw, "tcp")
        except OSError:
            pass
    where = options[0].origin if options else "ssh_config"
    raise ConfigError(
        f"{where}: bad Port value '{raw}'",
        hint="a port is an integer 1..65535: fix or remove this line",
    )


def _printed_jump(value: str) -> str:
    """ProxyJump as `ssh -G` prints it: the last hop rebuilt, a numeric host in brackets."""
    *extra, last = value.split(",")
    match = HOP_RE.match(last.strip())
    if match is None:
        return value
    host = match["host"].strip("[]")
    numeric = ":" in host or host.strip("0123456789.") == ""
    text = (f"{match['user']}@" if match["user"] else "") + (f"[{host}]" if numeric else host)
    if match["port"] and int(match["port"]) > 0:
        text += f":{int(match['port'])}"
    return ",".join([*extra, text])


# --- from printed settings to a target --------------------------------------------------------


def _target(
    alias: str,
    printed: dict[str, list[str]],
    origins: dict[str, str],
    profile_identity: str | None,
    resolver: str,
) -> SSHTarget:
    def one(key: str, default: str | None = None) -> str | None:
        values = printed.get(key)
        return values[0] if values else default

    hostname = one("hostname", alias) or alias
    user = one("user") or local_account.local_user()
    port = _port(one("port", "22") or "22", None)
    jump = one("proxyjump")
    if jump is not None and jump.lower() == "none":
        jump = None
    key_alias = one("hostkeyalias")
    tokens = sshtokens.connection_tokens(
        original_host=alias.lower(),
        hostname=hostname,
        port=port,
        user=user,
        host_key_alias=key_alias,
        jump=jump or "",
    )
    where = origins.get("identityfile", "ssh_config")
    identity = [
        sshtokens.expand_path(value, tokens, f"IdentityFile {value!r} ({where})")
        for value in printed.get("identityfile", [])
        if value.lower() != "none"
    ]
    required: tuple[str, ...] = ()
    if profile_identity is not None:
        required = (sshtokens.expand_path(profile_identity, tokens, "profile key 'identity_file'"),)
    certificates = [
        sshtokens.expand_path(value, tokens, f"CertificateFile {value!r}")
        for value in printed.get("certificatefile", [])
        if value.lower() != "none"
    ]
    user_known = one("userknownhostsfile", "") or ""
    timeout = one("connecttimeout", "none") or "none"
    strict = one("stricthostkeychecking")
    return SSHTarget(
        alias=alias,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(dict.fromkeys([*required, *identity])),
        identity_files_required=required,
        certificate_files=tuple(dict.fromkeys(certificates)),
        identities_only=(one("identitiesonly", "no") or "no").lower() in _YES,
        identity_agent=_agent_socket(one("identityagent"), tokens),
        proxy_jump=jump,
        proxy_command=_proxy_command(one("proxycommand"), tokens, alias, origins),
        known_hosts_files=()
        if user_known.lower() == "none"
        else tuple(sshtokens.local_path(f) for f in user_known.split()),
        global_known_hosts_files=tuple(
            sshtokens.local_path(f)
            for f in (one("globalknownhostsfile", "") or "").split()
            if f.lower() != "none"
        ),
        strict_host_key_checking=strict.lower() if strict else None,
        host_key_alias=key_alias,
        hash_known_hosts=(one("hashknownhosts", "no") or "no").lower() in _YES,
        connect_timeout=float(timeout) if timeout.isdigit() and int(timeout) > 0 else None,
        origins=tuple(sorted(origins.items())),
        resolver=resolver,
    )


def _agent_socket(value: str | None, tokens: dict[str, str]) -> str | None:
    """IdentityAgent as ssh_config(5) reads it: unset or SSH_AUTH_SOCK, `$VAR`, none, a path."""
    import os

    if value is None or value == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK") or None
    if value.lower() == "none":
        return None
    if value.startswith("$"):
        return os.environ.get(value[1:]) or None
    return sshtokens.expand_path(value, tokens, "IdentityAgent")


def _proxy_command(
    value: str | None, tokens: dict[str, str], alias: str, origins: dict[str, str]
) -> str | None:
    if value is None or value.strip().lower() == "none":
        return None
    if value.strip() == "-":
        raise ConfigError(
            f"ProxyCommand - (of {alias}) is not supported",
            hint="give a command, or use ProxyJump",
        )
    allowed = {k: tokens[k] for k in sshtokens.PROXY_COMMAND_TOKENS}
    where = f"ProxyCommand of {alias} ({origins.get('proxycommand', 'ssh_config')})"
    return sshtokens.expand(value, allowed, where)


# --- the route --------------------------------------------------------------------------------


def route(target: SSHTarget) -> list[SSHTarget]:
    """Every host on the way, outermost first, `target` last; only the first may use its
    ProxyCommand, each later one is reached through a channel of the one before."""
    return _route(target, [])


def _route(target: SSHTarget, seen: list[str]) -> list[SSHTarget]:
    key = f"{target.user}@{target.hostname}:{target.port}"
    if key in seen or len(seen) >= MAX_HOPS:
        chain = " → ".join([*seen, key])
        raise ConfigError(
            f"the jump hosts loop: {chain}",
            hint="a host's ProxyJump leads back to itself; fix ProxyJump in ssh_config or `jump`",
        )
    if not target.proxy_jump:
        return [target]
    *rest, last = [part.strip() for part in target.proxy_jump.split(",")]
    hop = jump_host(last, rest, target.alias)
    return [*_route(hop, [*seen, key]), target]


def jump_host(spec: str, before: list[str], of: str) -> SSHTarget:
    """A ProxyJump element resolved as `ssh -J` resolves it: its user and port win over its
    ssh_config; the hosts listed before it become its own ProxyJump."""
    match = HOP_RE.match(spec)
    if match is None or not (1 <= int(match["port"] or 22) <= 65535):
        raise ConfigError(
            f"jump host {spec!r} (of {of}) is not [user@]host[:port]",
            hint='write jump = "user@bastion.example.org:22,user@second-hop"',
        )
    preset: list[tuple[str, str]] = []
    if match["user"]:
        preset.append(("User", match["user"]))
    if match["port"]:
        preset.append(("Port", match["port"]))
    if before:
        preset.append(("ProxyJump", ",".join(before)))
    return resolve_host(match["host"].strip("[]"), preset)


def describe(hops: list[SSHTarget]) -> str:
    """`laptop → bastion (ProxyCommand: cloudflared …) → login1 → gpu-box`, one line."""
    parts = ["laptop"]
    for index, hop in enumerate(hops):
        name = hop.alias  # hosts by the names the config gives them; --json has the rest
        if index == len(hops) - 1 and hop.alias != hop.hostname:
            name += f" ({hop.hostname})"
        if index == 0 and hop.proxy_command:
            name += f" (ProxyCommand: {_short(hop.proxy_command)})"
        parts.append(name)
    return " → ".join(parts)


def _short(command: str, width: int = 40) -> str:
    return command if len(command) <= width else command[: width - 1] + "…"


def as_json(target: SSHTarget) -> dict[str, Any]:
    """The resolved route for `profiles show --json`: this host, and each hop before it."""
    hops = route(target)
    data = _host_json(target)
    data["hops"] = [_host_json(hop) for hop in hops[:-1]]
    data["route"] = describe(hops)
    return data


def _host_json(target: SSHTarget) -> dict[str, Any]:
    fields = {
        "hostname": target.hostname,
        "user": target.user,
        "port": target.port,
        "identity_files": list(target.identity_files),
        "certificate_files": list(target.certificate_files),
        "identities_only": target.identities_only,
        "identity_agent": target.identity_agent,
        "proxy_jump": target.proxy_jump,
        "proxy_command": target.proxy_command,
        "known_hosts_files": [*target.known_hosts_files, *target.global_known_hosts_files],
        "host_key_alias": target.host_key_alias,
        "connect_timeout": target.connect_timeout,
    }
    keys = {
        "identity_files": "identityfile",
        "certificate_files": "certificatefile",
        "identities_only": "identitiesonly",
        "identity_agent": "identityagent",
        "proxy_jump": "proxyjump",
        "proxy_command": "proxycommand",
        "known_hosts_files": "userknownhostsfile",
        "host_key_alias": "hostkeyalias",
        "connect_timeout": "connecttimeout",
    }
    data: dict[str, Any] = {"alias": target.alias, **fields, "resolver": target.resolver}
    data["sources"] = {name: target.origin(keys.get(name, name)) for name in fields}
    return data
