"""`colabtunnel trust PROFILE`: show each host key's fingerprint, ask, add it to known_hosts.

With jump hosts, every hop on the way is checked the same way: an unknown one is shown and asked
about before colabtunnel logs in to it to reach the next. A changed key is never replaced here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colabtunnel.errors import ColabtunnelError, ConfigError
from colabtunnel.output import Prompter
from colabtunnel.profiles import get_profile
from colabtunnel.ssh import hostkeys
from colabtunnel.ssh.credentials import Credentials


@dataclass(frozen=True)
class TrustedKey:
    name: str  # as filed in known_hosts: host or [host]:port
    fingerprint: str
    key_type: str
    known_hosts: Path
    added: bool
    already_known: bool


def trust(
    profile_name: str, confirm: Callable[[str], bool], prompter: Prompter | None = None
) -> list[TrustedKey]:
    from colabtunnel.ssh import connection, sshtarget

    profile = get_profile(profile_name)
    if profile.is_local:
        raise ConfigError(f"profile {profile_name!r} runs on this machine; there is no host key")
    target = sshtarget.resolve(profile)
    results: list[TrustedKey] = []

    def verify(transport: Any, hop: Any, is_target: bool) -> None:
        key = transport.get_remote_server_key()
        name = connection.key_entry_name(hop)
        known_file = connection.trust_file(hop)
        base = dict(
            name=name,
            fingerprint=hostkeys.fingerprint(key),
            key_type=key.get_name(),
            known_hosts=known_file,
        )
        try:
            known = hostkeys.load(connection.known_hosts_files(hop))
            hostkeys.verify(known, name, key, profile_name)
        except hostkeys.UnknownHostKey:
            pass  # a changed key raises on: never overwritten here
        else:
            results.append(TrustedKey(**base, added=False, already_known=True))
            return
        if not confirm(f"{name} presents {key.get_name()} key {base['fingerprint']}. Trust it?"):
            raise ColabtunnelError(f"{name} was not trusted; nothing changed after it")
        hostkeys.append(known_file, name, key, hashed=hop.hash_known_hosts)
        results.append(TrustedKey(**base, added=True, already_known=False))

    transports = connection.walk(
        target,
        profile_name,
        verify,
        Credentials(profile_name, prompter=prompter),
        login_target=False,
    )
    for transport in reversed(transports):
        transport.close()
    return results
