"""SSH user authentication in OpenSSH's order: agent and key files, keyboard-interactive, password.

Each failure is remembered with its fix, so when nothing works the error says what was tried and
what to do (`secret set`, `ssh-add`, `identity_file`). A server that wants several methods in turn
(publickey then a one-time code) is followed method by method.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colabtunnel.errors import ColabtunnelError, ConfigError
from colabtunnel.redact import mask
from colabtunnel.ssh import auth_requests, hostkeys
from colabtunnel.ssh.credentials import PASSPHRASE, PASSWORD, Credentials

if TYPE_CHECKING:
    import paramiko

    from colabtunnel.ssh.sshtarget import SSHTarget

log = logging.getLogger("colabtunnel")


class LoginFailed(ColabtunnelError):
    """The server refused every way we could log in."""


class LoginNeeded(LoginFailed):
    """The server asked something only a person can answer, and no terminal is attached."""


@dataclass
class _Attempts:
    failures: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    unanswered: str | None = None  # a keyboard-interactive question nobody could answer

    def fail(self, what: str, hint: str | None = None) -> None:
        self.failures.append(what)
        if hint and hint not in self.hints:
            self.hints.append(hint)


def authenticate(transport: paramiko.Transport, target: SSHTarget, creds: Credentials) -> None:
    import paramiko

    user = target.user
    attempts = _Attempts()
    keys = _keys(target, creds, attempts)
    allowed: list[str] | None = None
    if _key_needs_nobody(target):
        # ssh asks "none" first, to learn the methods the server takes; a key that needs nobody
        # to unlock it is offered at once instead (a refusal lists the methods just the same),
        # which saves that round trip whenever the key is the way in.
        allowed = _publickey(transport, target, attempts, None, keys)
        if transport.is_authenticated():
            return
    if allowed is None:
        allowed = _allowed(transport, user)
        if allowed is None:
            return
        if "publickey" in allowed:
            allowed = _publickey(transport, target, attempts, allowed, keys) or allowed
            if transport.is_authenticated():
                return
    if "keyboard-interactive" in allowed:
        try:
            allowed = (
                auth_requests.interactive(transport, user, _kbd_handler(target, creds, attempts))
                or allowed
            )
        except paramiko.AuthenticationException:
            if attempts.unanswered is None:
                attempts.fail("keyboard-interactive: the answers were not accepted")
        if transport.is_authenticated():
            return
    if "password" in allowed:
        _password(transport, target, creds, attempts)
        if transport.is_authenticated():
            return
    _give_up(target, creds, attempts, allowed)


def _allowed(transport: paramiko.Transport, user: str) -> list[str] | None:
    """What the server accepts (None: it let us in without any, which some test servers do)."""
    import paramiko

    try:
        auth_requests.none(transport, user)
    except paramiko.BadAuthenticationType as exc:
        return list(exc.allowed_types)
    except paramiko.AuthenticationException:
        return ["publickey", "keyboard-interactive", "password"]
    return (
        None if transport.is_authenticated() else ["publickey", "keyboard-interactive", "password"]
    )


def _publickey(
    transport: paramiko.Transport,
    target: SSHTarget,
    attempts: _Attempts,
    allowed: list[str] | None,
    keys: Iterator[tuple[str, paramiko.PKey]],
) -> list[str] | None:
    """Offer `keys` in turn (what is left of them). The methods the server takes after this:
    [] once logged in, the next ones after a partial success, the server's list when it takes
    no keys at all, else `allowed` (None: not known yet)."""
    import paramiko

    for label, key in keys:
        try:
            remaining = auth_requests.publickey(transport, target.user, key)
        except paramiko.BadAuthenticationType as exc:
            return list(exc.allowed_types)  # no public keys here: nothing was tried
        except paramiko.AuthenticationException:
            attempts.fail(f"{label}: not accepted by the server")
            continue
        except paramiko.SSHException as exc:
            raise ColabtunnelError(f"authentication failed: {mask(str(exc))}") from exc
        if transport.is_authenticated():
            log.info("authenticated as %s with %s", target.user, label)
            return []
        return list(remaining)  # partial success: the server wants another method next
    return allowed


def _key_needs_nobody(target: SSHTarget) -> bool:
    """The first key _keys() offers comes without a question: an agent key, or an identity file
    that needs no passphrase."""
    agent, agent_keys = _agent(target)
    if agent is not None:
        agent._close()
    if target.identities_only:
        listed = {blob for name in target.identity_files if (blob := _public_blob(name))}
        agent_keys = [key for key in agent_keys if key.asbytes() in listed]
    if agent_keys:
        return True
    for name in target.identity_files:
        if not Path(name).exists():
            continue
        try:
            _read_key(Path(name))
        except _Encrypted:
            return False
        except ConfigError:
            continue  # _keys() skips it too
        return True
    return False


def _keys(
    target: SSHTarget, creds: Credentials, attempts: _Attempts
) -> Iterator[tuple[str, paramiko.PKey]]:
    """What ssh offers, in its order: agent keys, then identity files; a certificate (from
    CertificateFile or `<key>-cert.pub`) before the plain key it certifies. With IdentitiesOnly,
    only agent keys that belong to a listed identity file."""
    agent, agent_keys = _agent(target)
    try:
        if target.identities_only:
            listed = {blob for name in target.identity_files if (blob := _public_blob(name))}
            agent_keys = [key for key in agent_keys if key.asbytes() in listed]
        elif not agent_keys:
            attempts.hints.append("load your key into ssh-agent (`ssh-add`)")
        certificates = _certificates(target.certificate_files)
        for agent_key in agent_keys:
            label = f"agent key {hostkeys.fingerprint(agent_key)}"
            yield from _with_certificates(label, agent_key, certificates.get(agent_key.asbytes()))
        offered = bool(agent_keys)
        for name in target.identity_files:
            path = Path(name)
            if not path.exists() and name not in target.identity_files_required:
                log.debug("identity file %s does not exist: skipped, as ssh does", name)
                continue
            key = _load_key(path, creds, attempts, required=name in target.identity_files_required)
            if key is None:
                continue
            offered = True
            paired = certificates.get(key.asbytes(), [])
            beside = Path(f"{name}-cert.pub")
            if beside.exists():
                paired = [str(beside), *paired]
            yield from _with_certificates(name, key, paired)
        if not offered:
            tried = ", ".join(target.identity_files) or "none listed"
            attempts.fail(
                f"no key: no usable ssh-agent key and no identity file ({tried})",
                "set `identity_file` in the profile",
            )
    finally:
        if agent is not None:
            agent._close()  # AgentSSH (a socket of our own) has only the private close


def _with_certificates(
    label: str, key: paramiko.PKey, certificates: list[str] | None
) -> Iterator[tuple[str, paramiko.PKey]]:
    for certificate in dict.fromkeys(certificates or []):
        try:
            key.load_certificate(certificate)
        except (OSError, ValueError) as exc:
            log.debug("certificate %s not usable with %s: %s", certificate, label, exc)
            continue
        yield f"{label} with certificate {certificate}", key
    key.public_blob = None  # the plain key after its certificates, as ssh offers them
    yield label, key


def _agent(target: SSHTarget) -> tuple[Any, list[paramiko.PKey]]:
    """The agent at IdentityAgent (or SSH_AUTH_SOCK) and its keys; (None, []) without one."""
    import paramiko
    from paramiko.agent import AgentSSH

    path = target.identity_agent
    if not path or not hasattr(socket, "AF_UNIX"):
        if path:  # Windows' agent is a named pipe: paramiko finds it through its own means
            windows_agent = paramiko.Agent()
            return windows_agent, list(windows_agent.get_keys())
        return None, []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(path)
        agent = AgentSSH()
        agent._connect(sock)  # type: ignore[attr-defined]  # paramiko's agent client, by socket
    except (OSError, paramiko.SSHException) as exc:
        sock.close()
        log.debug("ssh-agent at %s unavailable: %s", path, exc)
        return None, []
    return agent, list(agent.get_keys())


def _public_blob(name: str) -> bytes | None:
    """The public key of an identity file, from `NAME.pub` (as ssh matches agent keys)."""
    try:
        fields = Path(f"{name}.pub").read_text(encoding="utf-8").split()
        return base64.b64decode(fields[1]) if len(fields) >= 2 else None
    except (OSError, ValueError):
        return None


def _certificates(files: tuple[str, ...]) -> dict[bytes, list[str]]:
    """CertificateFile entries by the plain public key they certify."""
    from paramiko.pkey import PublicBlob

    found: dict[bytes, list[str]] = {}
    for name in files:
        try:
            blob = PublicBlob.from_file(name)
        except (OSError, ValueError) as exc:
            log.debug("certificate file %s not read: %s", name, exc)
            continue
        certified = _certified_key(blob.key_blob)
        if certified is not None:
            found.setdefault(certified, []).append(name)
    return found


def _certified_key(cert_blob: bytes) -> bytes | None:
    """The plain public key inside an OpenSSH certificate (paramiko's key classes read one)."""
    import paramiko

    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return bytes(kind(msg=paramiko.Message(cert_blob)).asbytes())
        except Exception:  # not this kind of key: each class raises its own way
            continue
    return None


class _Encrypted(Exception):
    pass


def _read_key(path: Path, passphrase: str | None = None) -> paramiko.PKey:
    """Load a private key; _Encrypted when it needs a passphrase (or this one is wrong)."""
    import paramiko

    try:
        # bytes: cryptography's loader wants them (the stub says str)
        password = passphrase.encode() if passphrase else None
        return paramiko.PKey.from_path(path, password=password)  # type: ignore[arg-type]
    except FileNotFoundError as exc:
        raise ConfigError(
            f"identity file {path} does not exist",
            hint="fix `identity_file` in the profile (or IdentityFile in ~/.ssh/config)",
        ) from exc
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(
            f"identity file {path} is not readable ({exc.strerror or exc})",
            hint="check its permissions, or point `identity_file` at a private key you can read",
        ) from exc
    except (
        TypeError
    ) as exc:  # cryptography: "Key is password-protected, but password was not provided"
        if passphrase is None and "password" in str(exc).lower():
            raise _Encrypted from exc
        raise ConfigError(f"cannot read identity file {path}: {exc}") from exc
    except ValueError as exc:  # a wrong passphrase, or not a private key at all
        if passphrase is not None:
            raise _Encrypted from exc
        raise ConfigError(
            f"cannot read identity file {path}: {exc}",
            hint="is it an OpenSSH private key (not the .pub)?",
        ) from exc
    except paramiko.SSHException as exc:
        raise ConfigError(f"cannot use identity file {path}: {exc}") from exc


def _load_key(
    path: Path, creds: Credentials, attempts: _Attempts, *, required: bool
) -> paramiko.PKey | None:
    try:
        return _read_key(path)
    except _Encrypted:
        pass
    except ConfigError as exc:
        if required:
            raise
        log.debug("%s: skipped (%s)", path, exc.message)  # ssh skips keys it cannot use too
        return None
    cache_key = f"{PASSPHRASE}:{path}"
    passphrase = creds.secret(PASSPHRASE, cache_key, f"Enter passphrase for key '{path}': ")
    if passphrase is None:
        attempts.fail(
            f"{path}: encrypted, and no passphrase is stored or can be asked (no terminal)",
            f"store it with `colabtunnel secret set {creds.profile} --passphrase`",
        )
        return None
    try:
        key = _read_key(path, passphrase)
    except _Encrypted:
        creds.forget(cache_key)
        attempts.fail(
            f"{path}: wrong passphrase",
            f"correct it with `colabtunnel secret set {creds.profile} --passphrase`",
        )
        return None
    creds.worked(cache_key, passphrase)
    return key


def _kbd_handler(target: SSHTarget, creds: Credentials, attempts: _Attempts):  # type: ignore[no-untyped-def]
    """Answer each question as the server worded it; a password-looking one from the secret store."""

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        header = "\n".join(part for part in (title, instructions) if part)
        answers: list[str] = []
        for text, echo in prompts:
            if not echo and "password" in text.lower():
                value = creds.secret(PASSWORD, _password_key(target), text)
                if value is not None:
                    creds.worked(_password_key(target), value)
            else:
                value = creds.answer((header + "\n" if header else "") + text, echo)
            if value is None:
                attempts.unanswered = text.strip()
                return ["" for _ in prompts]
            answers.append(value)
        return answers

    return handler


def _password_key(target: SSHTarget) -> str:
    return f"{PASSWORD}:{target.user}@{target.hostname}:{target.port}"


def _password(
    transport: paramiko.Transport, target: SSHTarget, creds: Credentials, attempts: _Attempts
) -> None:
    import paramiko

    key = _password_key(target)
    password = creds.secret(PASSWORD, key, f"{target.user}@{target.hostname}'s password: ")
    if password is None:
        attempts.fail(
            "password: none is stored and there is no terminal to ask",
            f"store it with `colabtunnel secret set {creds.profile}`",
        )
        return
    try:
        auth_requests.password(transport, target.user, password)  # one attempt: no retry storm
    except paramiko.AuthenticationException:
        creds.forget(key)
        attempts.fail(
            "password: not accepted (wrong password?)",
            f"if it is stored, update it with `colabtunnel secret set {creds.profile}`",
        )
        return
    creds.worked(key, password)


def _give_up(
    target: SSHTarget, creds: Credentials, attempts: _Attempts, allowed: list[str]
) -> None:
    where = f"{target.user}@{target.hostname}:{target.port}"
    if attempts.unanswered is not None:
        raise LoginNeeded(
            f"{where} asks {attempts.unanswered!r} and there is no terminal to answer it",
            hint=f"run `colabtunnel up {creds.profile}` in a terminal",
        )
    tried = "; ".join(attempts.failures) or "nothing it accepts (" + ", ".join(allowed) + ")"
    raise LoginFailed(
        f"{where} refused the login. Tried: {tried}",
        hint="; ".join(attempts.hints) or "check ~/.ssh/authorized_keys on the host",
    )
