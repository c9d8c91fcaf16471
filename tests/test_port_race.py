"""An automatic port taken between the look and Jupyter's bind: `up` moves on to the next port.

Two `up`s starting at the same moment both find the same port free; the one whose Jupyter loses
the bind must not fail (seen with the suite's parallel workers, and possible for any user
starting two profiles at once). The real `up local` launcher runs here, with the port the
inspection found held by this test until Jupyter tries it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from colabtunnel.jupyter import flavours, inspection
from colabtunnel.launchers import direct
from colabtunnel.profiles import LOCAL
from colabtunnel.ssh import forwarder, hosts
from colabtunnel.ssh.credentials import Credentials
from tests.conftest import Env


class _Quiet:
    def step(self, message: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def started(self) -> None:
        pass

    def submitted(self, handle: dict[str, Any], token: str, flavour: str) -> None:
        pass


def test_an_automatic_port_taken_before_jupyter_binds_it_moves_to_the_next(
    local_env: Env,
) -> None:
    # this venv's Jupyter, as the keeper picks it for `up local`
    profile = dataclasses.replace(LOCAL, jupyter=str(Path(sys.executable).with_name("jupyter")))
    host = hosts.connect(profile, _Quiet(), Credentials("local"))
    try:
        info = inspection.inspect(host, profile, want_port=None)
        flavour = flavours.choose(profile.app, info.versions)
        with contextlib.closing(forwarder.bind_free_listener(20000, span=2000)) as taken:
            held = taken.getsockname()[1]
            info = dataclasses.replace(info, free_port=held)  # what the look found, now taken
            token = secrets.token_urlsafe(32)
            server = direct.start(host, profile, info, flavour, token, None, 60, _Quiet())
        try:
            assert server.port != held
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        finally:
            direct.stop(host, profile, server.handle)
    finally:
        host.close()
