"""Login requests on a paramiko Transport, two round trips fewer than paramiko's own.

paramiko's Transport.auth_*() send a SERVICE_REQUEST for "ssh-userauth" before every login
request, and the request only once the server has accepted the service: two round trips per
method, so "none" then "publickey" cost four. Here the service is requested once per connection,
and the first login request follows it at once, unanswered (the server handles messages in order;
OpenSSH's sshd and paramiko's server do): the same two methods cost two round trips.

Everything else is paramiko's: its AuthHandler builds and signs the requests, reads the answers,
and raises what Transport.auth_*() raise (BadAuthenticationType, AuthenticationException, a list
of methods for a partial success).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

Handler = Callable[[str, str, list[tuple[str, bool]]], list[str]]
_REQUESTED = "_colabtunnel_userauth_requested"


@functools.cache
def _handler_class() -> type:
    from paramiko.auth_handler import AuthHandler
    from paramiko.message import Message

    # paramiko's private AuthHandler methods, which its stubs do not list (paramiko pinned <6)
    class OneServiceRequest(AuthHandler):
        def _request_auth(self) -> None:
            transport = self.transport
            if not getattr(transport, _REQUESTED, False):
                super()._request_auth()  # type: ignore[misc]  # the SERVICE_REQUEST
                setattr(transport, _REQUESTED, True)
            # What paramiko sends once the service is accepted, sent now.
            accepted = Message()
            accepted.add_string("ssh-userauth")
            accepted.rewind()
            super()._parse_service_accept(accepted)  # type: ignore[misc]

        def _parse_service_accept(self, m: Any) -> None:
            """The answer to the one service request: its login request is already out."""

    return OneServiceRequest


def _login(transport: paramiko.Transport, start: Callable[[Any, threading.Event], None]) -> Any:
    from paramiko import SSHException

    if not transport.is_active() or not transport.initial_kex_done:
        raise SSHException("No existing session")
    event = threading.Event()
    handler = _handler_class()(transport)
    transport.auth_handler = handler
    start(handler, event)
    return handler.wait_for_response(event)


def none(transport: paramiko.Transport, user: str) -> list[str]:
    """transport.auth_none(user)."""
    result: list[str] = _login(transport, lambda h, e: h.auth_none(user, e))
    return result


def publickey(transport: paramiko.Transport, user: str, key: paramiko.PKey) -> list[str]:
    """transport.auth_publickey(user, key)."""
    result: list[str] = _login(transport, lambda h, e: h.auth_publickey(user, key, e))
    return result


def interactive(transport: paramiko.Transport, user: str, handler: Handler) -> list[str]:
    """transport.auth_interactive(user, handler)."""
    result: list[str] = _login(transport, lambda h, e: h.auth_interactive(user, handler, e))
    return result


def password(transport: paramiko.Transport, user: str, secret: str) -> list[str]:
    """transport.auth_password(user, secret, fallback=False): called only where the server
    lists "password"."""
    result: list[str] = _login(transport, lambda h, e: h.auth_password(user, secret, e))
    return result
