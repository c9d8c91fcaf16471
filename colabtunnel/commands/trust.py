"""`colabtunnel trust PROFILE`: show the host key's fingerprint, ask, add it to known_hosts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from colabtunnel import hostkeys
from colabtunnel.errors import ConfigError
from colabtunnel.profiles import get_profile


@dataclass(frozen=True)
class TrustResult:
    name: str
    fingerprint: str
    key_type: str
    known_hosts: Path
    added: bool
    already_known: bool


def trust(profile_name: str, confirm: Callable[[str], bool]) -> TrustResult:
    from colabtunnel import connection, sshconfig

    profile = get_profile(profile_name)
    if profile.is_local:
        raise ConfigError(f"profile {profile_name!r} runs on this machine; there is no host key")
    target = sshconfig.resolve(profile)
    key = connection.fetch_host_key(target)
    name = connection.key_entry_name(target)
    known_file = Path(target.known_hosts_files[0])
    result = TrustResult(name, hostkeys.fingerprint(key), key.get_name(), known_file, False, False)
    known = hostkeys.load(target.known_hosts_files)
    try:
        hostkeys.verify(known, name, key, profile_name)  # a changed key raises: never overwrite it
        return replace(result, already_known=True)
    except hostkeys.UnknownHostKey:
        pass
    if not confirm(f"{name} presents {key.get_name()} key {result.fingerprint}. Trust it?"):
        return result
    hostkeys.append(known_file, name, key)
    return replace(result, added=True)
