"""OpenSSH's sshd asking a real one-time code: keyboard-interactive through PAM, with Google's
authenticator module (libpam-google-authenticator) checking HOTP codes, as a site with 2FA does.

- The PAM service is sshd's program name (OpenSSH's SSHD_PAM_SERVICE is `__progname`): sshd is
  started through a symlink named `ctotp-<tag>`, so /etc/pam.d/ctotp-<tag> (written here, removed
  after) applies to this server only and the machine's own sshd is untouched.
- pam_echo first sends OTP_INSTRUCTIONS as an info message, which OpenSSH puts in front of the
  question, in the prompt; the module then asks "Verification code: " (its wording, not ours).
- HOTP: each code works once, and every attempt, right or wrong, moves the module's counter
  (kept in the secret file): `code` is always the one that works next, `new_code()` the same.
- Counts come from sshd's own log (LogLevel VERBOSE): `logins`, `failed_attempts`. sshd writes
  the line just after the client is in: wait for a count, do not read it once.

Root only (it writes /etc/pam.d and the module reads the secret as root).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests import required_areas, setup_host
from tests.sshd import SSHD, config_text, free_port, keygen, sshd_process

PAM_MODULE = "pam_google_authenticator.so"
OTP_PROMPT = "Verification code: "  # the module's own question
OTP_INSTRUCTIONS = "Enter the code your authenticator app shows."


def hotp(secret: str, counter: int) -> str:
    """RFC 4226: the 6-digit code for `counter` (what an authenticator app shows)."""
    digest = hmac.new(base64.b32decode(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


@dataclass
class OtpSshd:
    port: int
    host_key_pub: str
    remote_home: Path
    secret_file: Path
    secret: str
    log: Path
    process: subprocess.Popen[bytes]

    def known_hosts_line(self, host: str = "127.0.0.1") -> str:
        return f"[{host}]:{self.port} {self.host_key_pub}\n"

    @property
    def code(self) -> str:
        """The code the module accepts next (its counter, as it left it in the secret file)."""
        found = re.search(r'^" HOTP_COUNTER (\d+)$', self.secret_file.read_text(), re.M)
        assert found, self.secret_file.read_text()
        return hotp(self.secret, int(found.group(1)))

    def new_code(self) -> str:
        """The next code, as the user's app would show after the last one was used."""
        return self.code

    def _log_count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log.read_text(errors="replace")))

    @property
    def logins(self) -> int:
        return self._log_count(r"Accepted keyboard-interactive/pam for ")

    @property
    def failed_attempts(self) -> int:
        return self._log_count(r"Failed keyboard-interactive/pam for ")

    def drop_connections(self) -> None:
        """End every logged-in connection (sshd's per-connection processes), as a network
        failure would; the listener stays."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()


@contextlib.contextmanager
def otp_sshd(root: Path) -> Iterator[OtpSshd]:
    if os.geteuid() != 0:
        required_areas.skip("root", "the one-time-code sshd writes /etc/pam.d")
    if not setup_host.PACKAGES["libpam-google-authenticator"].exists():
        raise RuntimeError(f"{PAM_MODULE} is missing: run `python -m tests.setup_host`")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    tag = secrets.token_hex(4)
    host_key = root / "host_ed25519"
    keygen(host_key)
    remote_home = root / "remote-home"
    remote_home.mkdir(exist_ok=True)
    secret = base64.b32encode(secrets.token_bytes(10)).decode()
    secret_file = root / "google_authenticator"
    secret_file.write_text(f'{secret}\n" WINDOW_SIZE 1\n" HOTP_COUNTER 1\n')
    os.chmod(secret_file, 0o600)
    service = f"ctotp-{tag}"
    pam_file = Path("/etc/pam.d") / service
    pam_file.write_text(
        f"auth optional pam_echo.so {OTP_INSTRUCTIONS}\n"
        f"auth required {PAM_MODULE} secret={secret_file} user=root\n"
        "account required pam_permit.so\n"
        "session required pam_permit.so\n"
    )
    program = root / service
    program.symlink_to(SSHD)
    port = free_port()
    config = root / "sshd_config"
    text = config_text(port, root, host_key, remote_home)
    for old, new in (
        ("KbdInteractiveAuthentication no", "KbdInteractiveAuthentication yes"),
        ("PubkeyAuthentication yes", "PubkeyAuthentication no"),
        ("PermitRootLogin prohibit-password", "PermitRootLogin yes"),
        ("UsePAM no", "UsePAM yes"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text + "AuthenticationMethods keyboard-interactive\nLogLevel VERBOSE\n")
    log = root / "sshd.log"
    try:
        with sshd_process(program, config, port, log) as process:
            pub = (root / "host_ed25519.pub").read_text().split()
            yield OtpSshd(
                port, f"{pub[0]} {pub[1]}", remote_home, secret_file, secret, log, process
            )
    finally:
        pam_file.unlink(missing_ok=True)
        _kill_started_under(remote_home)


def _kill_started_under(home: Path) -> None:
    """Kill what logins to this server left running (Jupyter runs in a session of its own). A
    test that failed before its `down` leaves them, and that `down` cannot log in without a
    code: run9 found a Jupyter of a failed test still running 15 minutes on."""
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("HOME") == str(home):
                proc.kill()


@pytest.fixture
def otp_server(tmp_path: Path) -> Iterator[OtpSshd]:
    """OpenSSH's sshd that logs in only by a one-time code (PAM), fresh per test."""
    with otp_sshd(tmp_path / "otp") as server:
        yield server
