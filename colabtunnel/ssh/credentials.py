"""Secrets for SSH login: the OS keyring, a prompt, and an in-memory cache. Never a file.

Order for a key passphrase or a password: what this process already holds (the keeper keeps what
worked, so it can reconnect without a terminal), then the keyring, then a prompt when someone can
answer one. One-time codes are asked every time and never kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from colabtunnel.errors import ColabtunnelError
from colabtunnel.output import Prompter
from colabtunnel.redact import register

log = logging.getLogger("colabtunnel")

SERVICE = "colabtunnel"
PASSWORD = "password"
PASSPHRASE = "passphrase"


def keyring_user(profile: str, kind: str) -> str:
    return f"{profile}:{kind}"


def keyring_get(profile: str, kind: str) -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError

        return keyring.get_password(SERVICE, keyring_user(profile, kind))
    except (KeyringError, RuntimeError) as exc:
        log.info("keyring unavailable: %s", exc)
        return None


def keyring_usable() -> tuple[bool, str]:
    """Whether a real keyring backend exists, and its name or why not."""
    import keyring
    from keyring.backends import fail

    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        return False, (
            "no keyring backend is available (on a headless Linux machine there is often no "
            "Secret Service); colabtunnel will ask for the secret when it needs it"
        )
    return True, type(backend).__name__


def keyring_set(profile: str, kind: str, value: str) -> None:
    usable, reason = keyring_usable()
    if not usable:
        raise ColabtunnelError(
            reason,
            hint="install and unlock a keyring (GNOME Keyring, KWallet), or enter it when asked",
        )
    import keyring

    keyring.set_password(SERVICE, keyring_user(profile, kind), value)


def keyring_delete(profile: str, kind: str) -> bool:
    import keyring
    from keyring.errors import KeyringError, PasswordDeleteError

    try:
        keyring.delete_password(SERVICE, keyring_user(profile, kind))
    except PasswordDeleteError:
        return False
    except KeyringError as exc:
        raise ColabtunnelError(f"keyring error: {exc}") from exc
    return True


@dataclass
class Credentials:
    """What one profile's logins may use. `cache` survives reconnects inside one process."""

    profile: str
    prompter: Prompter | None = None
    cache: dict[str, str] = field(default_factory=dict)
    prompted: dict[str, str] = field(default_factory=dict)  # asked this time: may be saved

    def secret(self, kind: str, cache_key: str, prompt: str) -> str | None:
        if cache_key in self.cache:
            return self.cache[cache_key]
        value = keyring_get(self.profile, kind)
        if value is None and self.prompter is not None:
            value = self.prompter.ask(prompt, False)
            if value is not None:
                self.prompted[kind] = value
        if value is not None:
            register(value)
        return value

    def worked(self, cache_key: str, value: str) -> None:
        self.cache[cache_key] = value

    def forget(self, cache_key: str) -> None:
        self.cache.pop(cache_key, None)

    def answer(self, prompt: str, echo: bool) -> str | None:
        """A keyboard-interactive question (often a one-time code): asked, never stored."""
        if self.prompter is None:
            return None
        value = self.prompter.ask(prompt, echo)
        if value is not None and not echo:
            register(value)
        return value

    def offer_to_save(self, confirm: Callable[[str], bool]) -> list[str]:
        """After a login that worked: ask (default no) to keep each prompted secret in the keyring."""
        saved = []
        for kind, value in self.prompted.items():
            if keyring_usable()[0] and confirm(
                f"save the {kind} for {self.profile} to the keyring?"
            ):
                keyring_set(self.profile, kind, value)
                saved.append(kind)
        self.prompted.clear()
        return saved
