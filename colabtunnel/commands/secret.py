"""`colabtunnel secret set/delete PROFILE [--passphrase]`: the SSH password or key passphrase in
the OS keyring (service `colabtunnel`), never in profiles.toml."""

from __future__ import annotations

from colabtunnel.errors import ColabtunnelError
from colabtunnel.profiles import get_profile
from colabtunnel.ssh import credentials


def kind_of(passphrase: bool) -> str:
    return credentials.PASSPHRASE if passphrase else credentials.PASSWORD


def set_secret(profile: str, passphrase: bool, value: str | None) -> str:
    get_profile(profile)
    if not value:
        raise ColabtunnelError("nothing entered; nothing stored")
    kind = kind_of(passphrase)
    credentials.keyring_set(profile, kind, value)
    return kind


def delete_secret(profile: str, passphrase: bool) -> bool:
    get_profile(profile)
    return credentials.keyring_delete(profile, kind_of(passphrase))
