from __future__ import annotations

import logging
import os
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest

from colabtunnel.errors import ConfigError
from colabtunnel.profiles import LOCAL, Profile
from colabtunnel.sshconfig import (
    MAX_INCLUDE_DEPTH,
    SSHTarget,
    host_matches,
    lookup,
    parse_config,
    resolve,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home with an empty ~/.ssh, and a fixed local user name."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)  # tests/conftest.py may have made it
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "tester")
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def ssh_config(home: Path, text: str) -> Path:
    return write(home / ".ssh" / "config", text)


def target(host: str, **profile: Any) -> SSHTarget:
    return resolve(Profile(name="p", host=host, **profile))


def test_defaults_without_a_config(home: Path) -> None:
    result = target("gpu.example.org")
    assert result.alias == result.hostname == "gpu.example.org"
    assert (result.port, result.user) == (22, "tester")
    assert result.identity_files == ()
    assert result.identities_only is False
    assert result.proxy_jump is None
    assert result.known_hosts_files == (str(home / ".ssh" / "known_hosts"),)
    assert result.strict_host_key_checking is None and result.host_key_alias is None


def test_matching_block(home: Path) -> None:
    ssh_config(
        home,
        """\
        # my machines
        Host other
            HostName wrong.example.org
        Host gpu
            HostName gpu.example.org
            User alice
            Port 2222
            IdentityFile ~/.ssh/id_gpu
            IdentitiesOnly yes
            StrictHostKeyChecking Accept-New
            HostKeyAlias gpu-key
        """,
    )
    result = target("gpu")
    assert (result.alias, result.hostname, result.user, result.port) == (
        "gpu",
        "gpu.example.org",
        "alice",
        2222,
    )
    assert result.identity_files == (str(home / ".ssh" / "id_gpu"),)
    assert result.identities_only is True
    assert result.strict_host_key_checking == "accept-new"
    assert result.host_key_alias == "gpu-key"


def test_keywords_case_insensitive_equals_quotes_comments(home: Path) -> None:
    ssh_config(
        home,
        """\
        HOST gpu
          hostname=gpu.example.org
          USER = "alice smith"   # trailing comment
          identityfile "~/keys/my key"
          UnknownKeyword whatever
        """,
    )
    assert lookup("gpu")["user"] == ["alice smith"]
    result = target("gpu")
    assert result.hostname == "gpu.example.org"
    assert result.user == "alice smith"
    assert result.identity_files == (str(home / "keys" / "my key"),)


def test_wildcards_and_host_star_defaults(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host *.lab
            User labuser
            Port 2200
        Host node?
            Port 2201
        Host *
            User fallback
            IdentityFile ~/.ssh/id_default
        """,
    )
    assert (target("gpu.lab").user, target("gpu.lab").port) == ("labuser", 2200)
    assert (target("node1").user, target("node1").port) == ("fallback", 2201)
    assert target("node12").port == 22
    assert target("elsewhere").identity_files == (str(home / ".ssh" / "id_default"),)
    assert target("GPU.LAB").user == "labuser"


def test_negation_excludes_block(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host *.lab !bastion.lab
            ProxyJump bastion.lab
        """,
    )
    assert target("gpu.lab").proxy_jump == "bastion.lab"
    assert target("bastion.lab").proxy_jump is None
    assert host_matches("a", ("!b",)) is False  # only negated patterns never match


def test_first_value_wins_identity_files_accumulate(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host gpu
            User first
            IdentityFile ~/.ssh/id_one
        Host gpu
            User second
            IdentityFile ~/.ssh/id_two
        Host *
            User third
            IdentityFile ~/.ssh/id_one
        """,
    )
    assert lookup("gpu")["user"] == ["first"]
    assert lookup("gpu")["identityfile"] == ["~/.ssh/id_one", "~/.ssh/id_two", "~/.ssh/id_one"]
    ssh = home / ".ssh"
    assert target("gpu").identity_files == (str(ssh / "id_one"), str(ssh / "id_two"))


def test_proxyjump_and_proxycommand_share_first_wins(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host gpu
            ProxyCommand ssh -W %h:%p bastion
        Host *
            ProxyJump bastion
        """,
    )
    assert "proxyjump" not in lookup("gpu")
    assert target("gpu").proxy_jump is None


def test_include_relative_and_glob_sorted(home: Path) -> None:
    ssh = home / ".ssh"
    ssh_config(
        home,
        """\
        Include conf.d/*.conf
        Host *
            User fallback
        """,
    )
    write(ssh / "conf.d" / "20-b.conf", "Host gpu\n  User bob\n  Port 2002\n")
    write(ssh / "conf.d" / "10-a.conf", "Host gpu\n  User alice\n")
    write(ssh / "conf.d" / "ignored.txt", "Host gpu\n  User nobody\n")
    result = target("gpu")
    assert (result.user, result.port) == ("alice", 2002)
    assert target("other").user == "fallback"


def test_include_absolute_and_tilde(home: Path, tmp_path: Path) -> None:
    write(tmp_path / "abs.conf", "Host a\n  User from-abs\n")
    write(home / "extra.conf", "Host b\n  User from-tilde\n")
    ssh_config(home, f"Include {tmp_path / 'abs.conf'} ~/extra.conf missing-*.conf\n")
    assert (target("a").user, target("b").user) == ("from-abs", "from-tilde")


def test_include_inside_host_block_applies_only_there(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host gpu
            Include gpu.conf
            Port 2222
        Host *
            User fallback
        """,
    )
    # Inside the include, `Host *` still only applies within the enclosing `Host gpu`.
    write(home / ".ssh" / "gpu.conf", "User gpu-user\nHost *\n  IdentityFile ~/.ssh/id_gpu\n")
    gpu = target("gpu")
    assert (gpu.user, gpu.port) == ("gpu-user", 2222)
    assert gpu.identity_files == (str(home / ".ssh" / "id_gpu"),)
    other = target("other")
    assert (other.user, other.port, other.identity_files) == ("fallback", 22, ())


def test_include_recursive_and_loop_is_depth_limited(home: Path) -> None:
    write(home / ".ssh" / "one.conf", "Include two.conf\n")
    write(home / ".ssh" / "two.conf", "Host gpu\n  User deep\n")
    ssh_config(home, "Include one.conf\n")
    assert target("gpu").user == "deep"
    ssh_config(home, "Include config\n")
    with pytest.raises(ConfigError) as info:
        target("gpu")
    assert str(MAX_INCLUDE_DEPTH) in info.value.message and "line 1" in info.value.message


def test_match_block_skipped(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    ssh_config(
        home,
        """\
        Match host gpu exec "true"
            User from-match
            Include match.conf
        Host gpu
            Port 2222
        Host *
            User fallback
        """,
    )
    write(home / ".ssh" / "match.conf", "User from-match-include\n")
    with caplog.at_level(logging.DEBUG, logger="colabtunnel"):
        result = target("gpu")
    assert (result.user, result.port) == ("fallback", 2222)
    assert "Match" in caplog.text


def test_profile_keys_override_config(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host gpu
            User alice
            Port 2222
            IdentityFile ~/.ssh/id_config
            ProxyJump bastion
        """,
    )
    result = target("gpu", user="bob", port=2200, identity_file="~/.ssh/id_profile", jump="hop")
    assert (result.user, result.port, result.proxy_jump) == ("bob", 2200, "hop")
    ssh = home / ".ssh"
    assert result.identity_files == (str(ssh / "id_profile"), str(ssh / "id_config"))


def test_jump_none_disables_inherited_proxyjump(home: Path) -> None:
    ssh_config(home, "Host *\n  ProxyJump bastion\n")
    assert target("gpu").proxy_jump == "bastion"
    assert target("gpu", jump="none").proxy_jump is None
    ssh_config(home, "Host gpu\n  ProxyJump none\nHost *\n  ProxyJump bastion\n")
    assert target("gpu").proxy_jump is None


def test_user_known_hosts_files(home: Path, tmp_path: Path) -> None:
    ssh_config(
        home,
        f"""\
        Host gpu
            UserKnownHostsFile ~/.ssh/known_hosts {tmp_path}/kh_%h "~/.ssh/with space"
        Host gpu
            UserKnownHostsFile ~/ignored
        Host none
            UserKnownHostsFile none
        """,
    )
    ssh = home / ".ssh"
    assert target("gpu").known_hosts_files == (
        str(ssh / "known_hosts"),
        str(tmp_path / "kh_gpu"),
        str(ssh / "with space"),
    )
    assert target("none").known_hosts_files == ()


def test_token_expansion(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host gpu
            HostName %h.example.org
            User alice
            Port 2222
            IdentityFile %d/keys/%u-%r@%h
            IdentityFile ~/keys/%n-%p-100%%
            IdentityFile ~/keys/%l
        """,
    )
    result = target("gpu")
    assert result.hostname == "gpu.example.org"
    assert result.identity_files == (
        str(home / "keys" / "tester-alice@gpu.example.org"),
        str(home / "keys" / "gpu-2222-100%"),
        str(home / "keys" / socket.gethostname()),
    )


def test_profile_identity_file_is_expanded_too(home: Path) -> None:
    result = target("gpu", user="bob", identity_file="~/.ssh/id_%r_%h")
    assert result.identity_files == (str(home / ".ssh" / "id_bob_gpu"),)


def test_relative_identity_file_becomes_absolute(home: Path) -> None:
    ssh_config(home, "IdentityFile keys/id\n")
    assert target("gpu").identity_files == (os.path.abspath("keys/id"),)


def test_unknown_token_is_config_error(home: Path) -> None:
    ssh_config(home, "Host gpu\n  IdentityFile ~/.ssh/%Z\n")
    with pytest.raises(ConfigError) as info:
        target("gpu")
    assert "line 2" in info.value.message and "%Z" in info.value.message


@pytest.mark.parametrize("value", ["ssh", "0", "65536", "-1", "22x"])
def test_bad_port_in_config(home: Path, value: str) -> None:
    config = ssh_config(home, f"Host gpu\n\n  Port {value}\n")
    with pytest.raises(ConfigError) as info:
        target("gpu")
    assert info.value.exit_code == 2
    assert str(config) in info.value.message and "line 3" in info.value.message
    assert value in info.value.message


def test_bad_port_ignored_when_profile_sets_port(home: Path) -> None:
    ssh_config(home, "Host gpu\n  Port ssh\n")
    assert target("gpu", port=22).port == 22


def test_unterminated_quote_is_config_error(home: Path) -> None:
    ssh_config(home, 'Host gpu\n  User "alice\n')
    with pytest.raises(ConfigError, match="line 2"):
        target("gpu")


def test_explicit_config_path_and_missing_file(home: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "custom_config", "Host gpu\n  User custom\n")
    profile = Profile(name="p", host="gpu")
    assert resolve(profile, config).user == "custom"
    assert resolve(profile, tmp_path / "nope").user == "tester"
    assert parse_config(tmp_path / "nope") == []
    assert lookup("gpu", config) == {"user": ["custom"]}


def test_local_profile_has_no_ssh_target(home: Path) -> None:
    with pytest.raises(ValueError):
        resolve(LOCAL)
