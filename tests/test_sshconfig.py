"""ssh_config resolution, through OpenSSH (`ssh -G`) and through the built-in reader.

Every test that both can answer runs twice (`resolver`), and both must give the same target:
OpenSSH is the reference, the built-in reader the fallback for machines without an ssh client.
tests/test_sshconfig_oracle.py compares the two on generated configs.
"""

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
from colabtunnel.ssh import local_account, openssh, sshconfig
from colabtunnel.ssh.sshtarget import (
    DEFAULT_IDENTITY_FILES,
    SSHTarget,
    as_json,
    describe,
    resolve,
    route,
)

ME = local_account.local_user()


@pytest.fixture(params=["ssh -G", "built-in"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "built-in":
        monkeypatch.setattr(openssh, "client", lambda: None)
    return str(request.param)


@pytest.fixture
def home(isolated_home: Path, resolver: str) -> Path:
    return isolated_home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def ssh_config(home: Path, text: str) -> Path:
    return write(home / ".ssh" / "config", text)


def target(host: str, **profile: Any) -> SSHTarget:
    return resolve(Profile(name="p", host=host, **profile))


def defaults(home: Path) -> tuple[str, ...]:
    return tuple(str(home / f.removeprefix("~/")) for f in DEFAULT_IDENTITY_FILES)


def test_defaults_without_a_config(home: Path, resolver: str) -> None:
    result = target("gpu.example.org")
    assert result.resolver == resolver
    assert result.alias == result.hostname == "gpu.example.org"
    assert (result.port, result.user) == (22, ME)
    assert result.identity_files == defaults(home)  # ssh's own list when none is configured
    assert result.identity_files_required == ()
    assert result.identities_only is False
    assert result.proxy_jump is None and result.proxy_command is None
    assert result.known_hosts_files == (
        str(home / ".ssh" / "known_hosts"),
        str(home / ".ssh" / "known_hosts2"),
    )
    assert result.global_known_hosts_files == (
        "/etc/ssh/ssh_known_hosts",
        "/etc/ssh/ssh_known_hosts2",
    )
    assert result.host_key_alias is None and result.connect_timeout is None


def test_matching_block(home: Path) -> None:
    ssh_config(
        home,
        """\
        # my machines
        Host other
            HostName wrong.example.org
        Host gpu
            HostName GPU.example.org
            User alice
            Port 2222
            IdentityFile ~/.ssh/id_gpu
            CertificateFile ~/.ssh/id_gpu-extra-cert.pub
            IdentitiesOnly yes
            StrictHostKeyChecking Accept-New
            HostKeyAlias gpu-key
            ConnectTimeout 7
        """,
    )
    result = target("gpu")
    assert (result.alias, result.hostname, result.user, result.port) == (
        "gpu",
        "gpu.example.org",  # ssh lowercases it
        "alice",
        2222,
    )
    assert result.identity_files == (str(home / ".ssh" / "id_gpu"),)
    assert result.certificate_files == (str(home / ".ssh" / "id_gpu-extra-cert.pub"),)
    assert result.identities_only is True
    assert result.strict_host_key_checking == "accept-new"
    assert result.host_key_alias == "gpu-key"
    assert result.connect_timeout == 7


def test_keywords_case_insensitive_equals_quotes_comments(home: Path) -> None:
    ssh_config(
        home,
        """\
        HOST gpu
          hostname=gpu.example.org
          USER = "alice smith"   # trailing comment
          identityfile "~/keys/my key"
        """,
    )
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
    assert target("GPU.LAB").user == "fallback"  # Host compares the name as typed
    assert target("GPU.LAB").hostname == "gpu.lab"  # then ssh lowercases it


def test_negation_excludes_block(home: Path) -> None:
    ssh_config(home, "Host *.lab !bastion.lab\n    ProxyJump bastion.lab\n")
    assert target("gpu.lab").proxy_jump == "bastion.lab"
    assert target("bastion.lab").proxy_jump is None
    assert sshconfig.host_matches("a", ("!b",)) is False  # only negated patterns never match


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
    ssh = home / ".ssh"
    assert target("gpu").user == "first"
    assert target("gpu").identity_files == (str(ssh / "id_one"), str(ssh / "id_two"))


def test_proxyjump_and_proxycommand_share_first_wins(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host gpu
            ProxyCommand ssh -W "%h:%p" bastion   # kept as written, for the shell
        Host *
            ProxyJump bastion
        Host later
            ProxyCommand nc %h %p
        """,
    )
    gpu = target("gpu")
    assert gpu.proxy_jump is None
    assert gpu.proxy_command == 'ssh -W "gpu:22" bastion   # kept as written, for the shell'
    assert target("later").proxy_jump == "bastion" and target("later").proxy_command is None


def test_proxyjump_none_leaves_proxycommand_but_proxycommand_none_stops_both(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host a
            ProxyJump none
        Host b
            ProxyCommand none
        Host *
            ProxyCommand nc %h %p
            ProxyJump j
        """,
    )
    assert target("a").proxy_command == "nc a 22" and target("a").proxy_jump is None
    assert (target("b").proxy_command, target("b").proxy_jump) == (None, None)


def test_proxy_command_tokens(home: Path) -> None:
    ssh_config(
        home,
        "Host gpu\n  HostName real.example\n  User al\n  Port 2022\n"
        "  ProxyCommand connect %h %p %r %n 100%%\n",
    )
    assert target("gpu").proxy_command == "connect real.example 2022 al gpu 100%"


def test_proxy_command_unknown_token_is_an_error(home: Path) -> None:
    ssh_config(home, "Host gpu\n  ProxyCommand connect %d\n")
    with pytest.raises(ConfigError, match="%d"):
        target("gpu")


def test_include_relative_and_glob_sorted(home: Path) -> None:
    ssh = home / ".ssh"
    ssh_config(home, "Include conf.d/*.conf\nHost *\n    User fallback\n")
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
    assert gpu.user == "gpu-user"
    assert gpu.identity_files == (str(home / ".ssh" / "id_gpu"),)
    other = target("other")
    assert (other.user, other.port, other.identity_files) == ("fallback", 22, defaults(home))


def test_include_recursive_and_loop_is_depth_limited(home: Path) -> None:
    write(home / ".ssh" / "one.conf", "Include two.conf\n")
    write(home / ".ssh" / "two.conf", "Host gpu\n  User deep\n")
    ssh_config(home, "Include one.conf\n")
    assert target("gpu").user == "deep"
    ssh_config(home, "Include config\n")
    with pytest.raises(ConfigError, match=r"(?i)include") as info:
        target("gpu")
    assert info.value.exit_code == 2


def test_match_originalhost_host_user_and_negation(home: Path) -> None:
    ssh_config(
        home,
        """\
        Match originalhost gpu
            HostName gpu.example.org
        Match host GPU.example.org user alice,!bob
            Port 2200
        Match host !*.example.org
            Port 2400
        Match !host *.example.org
            Port 2300
        Host *
            User alice
        Match all
            IdentityFile ~/.ssh/id_all
        """,
    )
    gpu = target("gpu")
    assert (gpu.hostname, gpu.port) == ("gpu.example.org", 22)  # User not set yet at line 3
    assert target("gpu", user="alice").port == 2200
    assert target("gpu", user="bob").port == 22
    assert target("other").port == 2300  # a list of only negations never matches (2400)
    assert target("GPU").hostname == "gpu.example.org"  # originalhost folds case
    assert target("other").identity_files == (str(home / ".ssh" / "id_all"),)


def test_match_localuser(home: Path) -> None:
    ssh_config(home, f"Match localuser {ME}\n  User via-localuser\n")
    assert target("gpu").user == "via-localuser"


def test_match_exec_is_honoured_by_openssh(isolated_home: Path, tmp_path: Path) -> None:
    flag = tmp_path / "on-vpn"
    ssh_config(isolated_home, f'Match host gpu exec "test -e {flag}"\n  Port 2222\n')
    assert target("gpu").port == 22
    flag.touch()
    assert target("gpu").port == 2222


def test_match_exec_is_skipped_with_a_warning_by_the_builtin(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(openssh, "client", lambda: None)
    config = ssh_config(
        isolated_home,
        'Host gpu\n  User u\nMatch host gpu exec "true"\n  Port 2222\n  Include m.conf\n',
    )
    write(isolated_home / ".ssh" / "m.conf", "HostName from-match-include\n")
    with caplog.at_level(logging.WARNING, logger="colabtunnel"):
        result = target("gpu")
    assert (result.port, result.hostname) == (22, "gpu")
    assert f"{config}, line 3: `Match exec`" in caplog.text


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
    assert result.identity_files_required == (str(ssh / "id_profile"),)
    assert result.origin("user") == "profile" and result.origin("port") == "profile"


def test_jump_none_disables_inherited_proxyjump_and_proxycommand(home: Path) -> None:
    ssh_config(home, "Host *\n  ProxyJump bastion\n")
    assert target("gpu").proxy_jump == "bastion"
    assert target("gpu", jump="none").proxy_jump is None
    ssh_config(home, "Host gpu\n  ProxyJump none\nHost *\n  ProxyJump bastion\n")
    assert target("gpu").proxy_jump is None
    ssh_config(home, "Host *\n  ProxyCommand nc %h %p\n")
    assert target("gpu", jump="none").proxy_command is None


def test_user_known_hosts_files(home: Path, tmp_path: Path) -> None:
    ssh_config(
        home,
        f"""\
        Host gpu
            UserKnownHostsFile ~/.ssh/known_hosts {tmp_path}/kh_%h
        Host gpu
            UserKnownHostsFile ~/ignored
        Host none
            UserKnownHostsFile none
        """,
    )
    ssh = home / ".ssh"
    assert target("gpu").known_hosts_files == (str(ssh / "known_hosts"), str(tmp_path / "kh_gpu"))
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
            CertificateFile ~/certs/%r-%L
        """,
    )
    result = target("gpu")
    assert result.hostname == "gpu.example.org"
    assert result.identity_files == (
        str(home / "keys" / f"{ME}-alice@gpu.example.org"),
        str(home / "keys" / "gpu-2222-100%"),
        str(home / "keys" / socket.gethostname()),
    )
    short = socket.gethostname().split(".")[0]
    assert result.certificate_files == (str(home / "certs" / f"alice-{short}"),)


def test_identity_agent(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent.sock")
    monkeypatch.setenv("MY_AGENT", "/run/mine.sock")
    ssh_config(
        home,
        """\
        Host none
            IdentityAgent none
        Host env
            IdentityAgent $MY_AGENT
        Host path
            IdentityAgent ~/agent.%r
        Host *
            User u
        """,
    )
    assert target("default").identity_agent == "/run/agent.sock"
    assert target("none").identity_agent is None
    assert target("env").identity_agent == "/run/mine.sock"
    assert target("path").identity_agent == str(home / "agent.u")


def test_profile_identity_file_is_expanded_too(home: Path) -> None:
    result = target("gpu", user="bob", identity_file="~/.ssh/id_%r_%h")
    assert result.identity_files == (str(home / ".ssh" / "id_bob_gpu"),)


def test_relative_identity_file_becomes_absolute(home: Path) -> None:
    ssh_config(home, "IdentityFile keys/id\n")
    assert target("gpu").identity_files == (os.path.abspath("keys/id"),)


def test_unknown_token_is_config_error(home: Path) -> None:
    ssh_config(home, "Host gpu\n  IdentityFile ~/.ssh/%Z\n")
    with pytest.raises(ConfigError, match="%Z"):
        target("gpu")


@pytest.mark.parametrize("value", ["0", "65536", "-1", "22x"])
def test_bad_port_in_config(home: Path, value: str) -> None:
    config = ssh_config(home, f"Host gpu\n\n  Port {value}\n")
    with pytest.raises(ConfigError) as info:
        target("gpu")
    assert info.value.exit_code == 2
    assert str(config) in info.value.message and "3" in info.value.message
    assert value in info.value.message


def test_port_as_a_service_name(home: Path) -> None:
    ssh_config(home, "Host gpu\n  Port ssh\n")
    assert target("gpu").port == 22


def test_unterminated_quote_is_config_error(home: Path) -> None:
    ssh_config(home, 'Host gpu\n  User "alice\n')
    with pytest.raises(ConfigError, match="line 2"):
        target("gpu")


def test_explicit_config_file(home: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "custom_config", "Host gpu\n  User custom\n")
    profile = Profile(name="p", host="gpu")
    assert resolve(profile, config).user == "custom"


def test_local_profile_has_no_ssh_target(home: Path) -> None:
    with pytest.raises(ValueError):
        resolve(LOCAL)


# --- routes -------------------------------------------------------------------------------------


def test_route_follows_the_outermost_hops_own_proxyjump(home: Path) -> None:
    ssh_config(
        home,
        """\
        Host outer
            HostName outer.example
            User o
        Host inner
            HostName inner.example
            ProxyJump outer
        Host gpu
            HostName gpu.example
            ProxyJump inner
        """,
    )
    hops = route(target("gpu"))
    assert [h.hostname for h in hops] == ["outer.example", "inner.example", "gpu.example"]
    assert hops[0].user == "o"
    assert describe(hops) == "laptop → outer → inner → gpu (gpu.example)"


def test_route_of_a_list_overrides_the_later_hops_own_proxy(home: Path) -> None:
    """`ProxyJump a,b`: b is reached through a (b's own ProxyJump is overridden, as `ssh -J`
    does), a by its own settings, a user and port in the list win over the hop's config."""
    ssh_config(
        home,
        """\
        Host a
            ProxyCommand connect-a %h
        Host b
            ProxyJump elsewhere
            User config-user
        Host gpu
            ProxyJump a,me@b:2200
        """,
    )
    hops = route(target("gpu"))
    assert [(h.alias, h.user, h.port) for h in hops][1:] == [("b", "me", 2200), ("gpu", ME, 22)]
    assert hops[0].alias == "a" and hops[0].proxy_command == "connect-a a"
    assert describe(hops) == "laptop → a (ProxyCommand: connect-a a) → b → gpu"


def test_route_loop_is_a_clear_error(home: Path) -> None:
    ssh_config(home, "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(ConfigError, match="loop") as info:
        route(target("a"))
    assert info.value.exit_code == 2


def test_route_json_reports_sources(home: Path, resolver: str) -> None:
    config = ssh_config(home, "Host b\n  User bu\nHost gpu\n  HostName g.example\n  ProxyJump b\n")
    data = as_json(target("gpu", port=2022))
    assert (data["hostname"], data["port"], data["proxy_jump"]) == ("g.example", 2022, "b")
    assert data["sources"]["port"] == "profile"
    expected = f"ssh_config {config}:4" if resolver == "built-in" else "ssh -G"
    assert data["sources"]["hostname"] == expected
    assert [hop["user"] for hop in data["hops"]] == ["bu"]


# What Windows' own OpenSSH client prints for `ssh -G` (the shape its users' logs show): the
# user's files under `~`, the system's under its __PROGRAMDATA__ token.
WINDOWS_SSH_G = r"""host gpu
user alice
hostname gpu.example.org
port 22
identityfile ~/.ssh/id_ed25519
userknownhostsfile ~/.ssh/known_hosts ~/.ssh/known_hosts2
globalknownhostsfile __PROGRAMDATA__\ssh/ssh_known_hosts __PROGRAMDATA__\ssh/ssh_known_hosts2
stricthostkeychecking ask
"""


def test_windows_openssh_paths_are_opened_where_windows_keeps_them(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows' OpenSSH cannot run here: a stand-in prints what it prints. Its known-hosts files
    must be the user's and %PROGRAMDATA%'s, and a host key there must be found."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "said").write_text(WINDOWS_SSH_G)
    fake = bin_dir / "ssh"
    fake.write_text(f"#!/bin/sh\ncat {bin_dir / 'said'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    programdata = tmp_path / "ProgramData"
    monkeypatch.setenv("PROGRAMDATA", str(programdata))
    result = target("gpu")
    assert result.resolver == "ssh -G"
    assert result.global_known_hosts_files == (
        f"{programdata}\\ssh/ssh_known_hosts",
        f"{programdata}\\ssh/ssh_known_hosts2",
    )
    assert result.known_hosts_files == (
        str(isolated_home / ".ssh/known_hosts"),
        str(isolated_home / ".ssh/known_hosts2"),
    )
    assert result.identity_files == (str(isolated_home / ".ssh/id_ed25519"),)
    # On Windows `\` separates; here it is part of a name: the same file either way
    import paramiko

    from colabtunnel.ssh import hostkeys

    key = paramiko.Ed25519Key.from_private_key_file(str(_any_ed25519_key(tmp_path)))
    system_file = Path(result.global_known_hosts_files[0])
    system_file.parent.mkdir(parents=True)
    system_file.write_text(f"gpu.example.org {key.get_name()} {key.get_base64()}\n")
    known = hostkeys.load((*result.known_hosts_files, *result.global_known_hosts_files))
    assert [entry[0] for entry in known.entries] == ["gpu.example.org"]


def _any_ed25519_key(where: Path) -> Path:
    import subprocess

    path = where / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path
