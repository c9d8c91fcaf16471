"""known_hosts loading (plain, hashed, [host]:port, markers, garbage), strict verify, append."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from colabtunnel.errors import ColabtunnelError
from colabtunnel.ssh import hostkeys
from colabtunnel.ssh.hostkeys import ChangedHostKey, UnknownHostKey

pytestmark = pytest.mark.skipif(
    not shutil.which("ssh-keygen"), reason="openssh: needs OpenSSH ssh-keygen"
)


@dataclass
class Key:
    pkey: paramiko.PKey
    pub: Path  # the OpenSSH .pub file
    line_tail: str  # "keytype base64"


def _make_key(directory: Path, name: str, kind: str) -> Key:
    path = directory / name
    extra = ["-b", "256"] if kind == "ecdsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    pub = path.with_suffix(".pub")
    key_type, blob = pub.read_text().split()[:2]
    pkey = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    return Key(pkey, pub, f"{key_type} {blob}")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    directory = tmp_path_factory.mktemp("keys")
    made = {f"ed{i}": _make_key(directory, f"ed{i}", "ed25519") for i in range(6)}
    made["ecdsa"] = _make_key(directory, "ecdsa", "ecdsa")
    made["ecdsa2"] = _make_key(directory, "ecdsa2", "ecdsa")
    return made


def _hashed_line(path: Path, name: str, key: Key) -> str:
    """Let OpenSSH itself hash the entry."""
    path.write_text(f"{name} {key.line_tail}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    line = path.read_text().strip()
    assert line.startswith("|1|"), line
    return line


@pytest.fixture
def known_hosts(tmp_path: Path, keys: dict[str, Key]) -> Path:
    """A realistic known_hosts: every kind of line OpenSSH users have."""
    hashed_host = _hashed_line(tmp_path / "h1", "hashed.example.org", keys["ed1"])
    hashed_port = _hashed_line(tmp_path / "h2", "[10.1.2.3]:2200", keys["ed5"])
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n"
        "\n"
        f"plain.example.org,192.0.2.7 {keys['ed0'].line_tail}\n"
        f"{hashed_host}\n"
        f"[127.0.0.1]:2222 {keys['ed2'].line_tail}\n"
        f"@cert-authority *.example.org {keys['ed3'].line_tail}\n"
        "this is not a known_hosts line at all\n"
        "badkey.example.org ssh-ed25519 !!!not-base64!!!\n"
        "weird.example.org ssh-unknown-type AAAAB3NzaC1yc2EAAAADAQABAAABAQ==\n"
        f"@revoked * {keys['ed4'].line_tail}\n"
        f"revoked.example.org {keys['ed4'].line_tail}\n"
        f"{hashed_port}\n"
        f"plain.example.org {keys['ecdsa'].line_tail}\n"
        "@cert-authority\n"
        "@revoked\n"
        "   indented.example.org " + keys["ed0"].line_tail + "   \n"
    )
    return path


def test_loading_odd_lines_never_raises(known_hosts: Path, tmp_path: Path) -> None:
    known = hostkeys.load([str(known_hosts), str(tmp_path / "missing"), str(tmp_path)])
    assert known.lookup("plain.example.org")
    assert known.files[0] == known_hosts


def test_loading_binary_garbage_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_bytes(b"\x00\xff\xfe garbage \x80\n|1|bad|hash ssh-ed25519 AAAA\n[::1 x\n")
    known = hostkeys.load([str(path)])
    assert known.lookup("anything") == []


def test_load_expands_user(isolated_home: Path, keys: dict[str, Key]) -> None:
    (isolated_home / ".ssh" / "known_hosts").write_text(f"h.example {keys['ed0'].line_tail}\n")
    known = hostkeys.load(["~/.ssh/known_hosts"])
    hostkeys.verify(known, "h.example", keys["ed0"].pkey, "p")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("plain.example.org", "ed0"),
        ("192.0.2.7", "ed0"),  # the second name of a comma list
        ("plain.example.org", "ecdsa"),  # a second key type for the same host
        ("hashed.example.org", "ed1"),
        ("[127.0.0.1]:2222", "ed2"),
        ("[10.1.2.3]:2200", "ed5"),  # hashed [host]:port
        ("indented.example.org", "ed0"),
    ],
)
def test_verify_accepts_the_right_key(
    known_hosts: Path, keys: dict[str, Key], name: str, key: str
) -> None:
    known = hostkeys.load([str(known_hosts)])
    hostkeys.verify(known, name, keys[key].pkey, "gpu")  # no exception


def test_unknown_host_is_refused_with_fingerprint_and_trust_hint(
    known_hosts: Path, keys: dict[str, Key]
) -> None:
    known = hostkeys.load([str(known_hosts)])
    key = keys["ed3"].pkey
    with pytest.raises(UnknownHostKey) as info:
        hostkeys.verify(known, "new.example.org", key, "gpu-box")
    assert hostkeys.fingerprint(key) in info.value.message
    assert info.value.message.count("SHA256:") == 1
    assert "colabtunnel trust gpu-box" in (info.value.hint or "")
    assert info.value.exit_code == 1


def test_port_matters(known_hosts: Path, keys: dict[str, Key]) -> None:
    known = hostkeys.load([str(known_hosts)])
    # Known on 2222, not on 22 nor on another port.
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(known, "127.0.0.1", keys["ed2"].pkey, "gpu")
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(known, "[127.0.0.1]:2223", keys["ed2"].pkey, "gpu")


def test_cert_authority_line_does_not_trust_hosts(known_hosts: Path, keys: dict[str, Key]) -> None:
    known = hostkeys.load([str(known_hosts)])
    # The CA's own key presented as a host key is not a known host key.
    with pytest.raises(UnknownHostKey):
        hostkeys.verify(known, "node1.example.org", keys["ed3"].pkey, "gpu")


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("plain.example.org", "ed1"),
        ("plain.example.org", "ecdsa2"),
        ("hashed.example.org", "ed0"),
        ("[127.0.0.1]:2222", "ed0"),
        ("[10.1.2.3]:2200", "ed2"),
    ],
)
def test_changed_key_is_refused(
    known_hosts: Path, keys: dict[str, Key], name: str, wrong: str
) -> None:
    known = hostkeys.load([str(known_hosts)])
    key = keys[wrong].pkey
    with pytest.raises(ChangedHostKey) as info:
        hostkeys.verify(known, name, key, "gpu")
    assert hostkeys.fingerprint(key) in info.value.message
    assert "CHANGED" in info.value.message
    assert "ssh-keygen -R" in (info.value.hint or "")
    assert not isinstance(info.value, UnknownHostKey)  # `trust` must never overwrite it


def test_changed_key_of_a_new_type_is_refused(tmp_path: Path, keys: dict[str, Key]) -> None:
    # Known with ed25519 only; now presents ECDSA: not silently "unknown", it changed.
    path = tmp_path / "kh"
    path.write_text(f"gpu.example.org {keys['ed0'].line_tail}\n")
    known = hostkeys.load([str(path)])
    with pytest.raises(ChangedHostKey):
        hostkeys.verify(known, "gpu.example.org", keys["ecdsa"].pkey, "gpu")


def test_revoked_key_is_refused_even_when_listed(known_hosts: Path, keys: dict[str, Key]) -> None:
    known = hostkeys.load([str(known_hosts)])
    for name in ("revoked.example.org", "elsewhere.example.org"):
        with pytest.raises(ColabtunnelError) as info:
            hostkeys.verify(known, name, keys["ed4"].pkey, "gpu")
        assert "revoked" in info.value.message
        assert not isinstance(info.value, UnknownHostKey)


def test_keys_from_several_files(tmp_path: Path, keys: dict[str, Key]) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text(f"one.example {keys['ed0'].line_tail}\n")
    second.write_text(f"two.example {keys['ed1'].line_tail}\n")
    known = hostkeys.load([str(first), str(second)])
    hostkeys.verify(known, "one.example", keys["ed0"].pkey, "p")
    hostkeys.verify(known, "two.example", keys["ed1"].pkey, "p")


def test_several_keys_of_one_type_for_one_host_all_accepted(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    path = tmp_path / "kh"
    path.write_text(
        f"login.cluster.example {keys['ed0'].line_tail}\n"
        f"login.cluster.example {keys['ed1'].line_tail}\n"
    )
    known = hostkeys.load([str(path)])
    for key in ("ed0", "ed1"):
        hostkeys.verify(known, "login.cluster.example", keys[key].pkey, "gpu")


# --- fingerprint --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ed0", "ecdsa"])
def test_fingerprint_matches_ssh_keygen(keys: dict[str, Key], key: str) -> None:
    done = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(keys[key].pub)],
        check=True,
        capture_output=True,
        text=True,
    )
    expected = done.stdout.split()[1]
    assert expected.startswith("SHA256:")
    assert hostkeys.fingerprint(keys[key].pkey) == expected


def test_fingerprint_of_rsa_key_matches_ssh_keygen(tmp_path: Path) -> None:
    key = paramiko.RSAKey.generate(1024)
    pub = tmp_path / "rsa.pub"
    pub.write_text(f"{key.get_name()} {key.get_base64()} test\n")
    done = subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True
    )
    assert hostkeys.fingerprint(key) == done.stdout.split()[1]


# --- append -------------------------------------------------------------------------------------


def _ssh_keygen_finds(path: Path, name: str) -> str:
    done = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def test_append_creates_file_0600_that_openssh_reads(
    isolated_home: Path, keys: dict[str, Key]
) -> None:
    path = isolated_home / ".ssh" / "known_hosts"
    assert not path.exists()
    hostkeys.append(path, "[127.0.0.1]:2222", keys["ed0"].pkey)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"[127.0.0.1]:2222 {keys['ed0'].line_tail}\n"
    assert keys["ed0"].line_tail.split()[1] in _ssh_keygen_finds(path, "[127.0.0.1]:2222")
    # And our own loader accepts it back.
    hostkeys.verify(hostkeys.load([str(path)]), "[127.0.0.1]:2222", keys["ed0"].pkey, "gpu")


def test_append_creates_missing_ssh_dir_0700(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "fresh" / ".ssh" / "known_hosts"
    hostkeys.append(path, "gpu.example.org", keys["ed0"].pkey)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_append_adds_missing_final_newline(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"old.example.org {keys['ed1'].line_tail}")  # no final newline
    hostkeys.append(path, "[127.0.0.1]:2222", keys["ed0"].pkey)
    lines = path.read_text().split("\n")
    assert lines == [
        f"old.example.org {keys['ed1'].line_tail}",
        f"[127.0.0.1]:2222 {keys['ed0'].line_tail}",
        "",
    ]
    _ssh_keygen_finds(path, "[127.0.0.1]:2222")
    _ssh_keygen_finds(path, "old.example.org")


def test_append_keeps_existing_lines(known_hosts: Path, keys: dict[str, Key]) -> None:
    before = known_hosts.read_text()
    hostkeys.append(known_hosts, "gpu.example.org", keys["ecdsa2"].pkey)
    after = known_hosts.read_text()
    assert after.startswith(before)
    assert after.count("\n") == before.count("\n") + 1
    known = hostkeys.load([str(known_hosts)])
    hostkeys.verify(known, "gpu.example.org", keys["ecdsa2"].pkey, "gpu")
    hostkeys.verify(known, "hashed.example.org", keys["ed1"].pkey, "gpu")


# --- host_entry_name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("gpu.example.org", 22, "gpu.example.org"),
        ("127.0.0.1", 2222, "[127.0.0.1]:2222"),
        ("gpu.example.org", 2200, "[gpu.example.org]:2200"),
        ("10.0.0.5", 22, "10.0.0.5"),
    ],
)
def test_host_entry_name(host: str, port: int, expected: str) -> None:
    assert hostkeys.host_entry_name(host, port) == expected
