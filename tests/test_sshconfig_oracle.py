"""The built-in ssh_config reader against OpenSSH itself, on generated configs.

OpenSSH (`ssh -G`) is the oracle: for every generated config (Host and Match blocks with
negation, Include inside and outside blocks, %-tokens, the keywords colabtunnel uses, a profile's
own settings passed as `-o`), the built-in reader must print the same values for every key
colabtunnel reads. `Match exec/canonical/final` are left out: the built-in reader says it cannot
evaluate them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colabtunnel.ssh import local_account, openssh
from colabtunnel.ssh.sshtarget import USED_KEYS, builtin_settings
from tests.conftest import Env

SSH = openssh.client()
pytestmark = pytest.mark.skipif(
    SSH is None, reason="openssh: needs OpenSSH's ssh client as the oracle"
)

HOSTS = ["gpu", "GPU", "node1", "node12", "a.lab", "bastion"]
HOST_PATTERNS = ["gpu", "GPU", "*", "*.lab", "node?", "node*", "!bastion", "!gpu", "g*", "a.*"]
USERS = ["alice", "bob", local_account.local_user()]


def _keyword(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper()])


def _line(name: str, values: list[str]) -> st.SearchStrategy[str]:
    return st.tuples(
        _keyword(name), st.sampled_from([" ", " = ", "="]), st.sampled_from(values)
    ).map(lambda parts: f"  {parts[0]}{parts[1]}{parts[2]}")


OPTIONS = st.one_of(
    _line("HostName", ["%h.example.org", "real-%h", "10.1.2.3", "Upper.Example", "100%%.x"]),
    _line("User", USERS),
    _line("Port", ["22", "2200", "2201", "ssh"]),
    _line("IdentityFile", ["~/.ssh/id_%r", "%d/keys/%h-%p", "~/k_%n_%l", "none", '"~/with space"']),
    _line("CertificateFile", ["~/.ssh/id_%r-cert.pub", "%d/c_%u"]),
    _line("ProxyJump", ["j1", "u@j2:2201", "none", "j1,u@j2", "10.0.0.1:2200", "ssh://x@y:33"]),
    _line("ProxyCommand", ["nc %h %p", "none", 'ssh -W "%h:%p" j1  # note']),
    _line(
        "UserKnownHostsFile", ["~/kh_%h %d/x_%r_%p", "none", "%d/.ssh/kh_%C", "~/kh_%n_%k_%i_%L"]
    ),
    _line("GlobalKnownHostsFile", ["/etc/kh_a /etc/kh_b", "/x/%h"]),
    _line("IdentitiesOnly", ["yes", "no", "true"]),
    _line("HostKeyAlias", ["alias-1", "Alias-Two"]),
    _line("StrictHostKeyChecking", ["yes", "no", "ask", "accept-new", "off"]),
    _line("ConnectTimeout", ["5", "30"]),
    _line("IdentityAgent", ["none", "SSH_AUTH_SOCK", "~/agent.%r", "%d/a_%h"]),
    _line("HashKnownHosts", ["yes", "no"]),
)


def _pattern_list() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(HOST_PATTERNS), min_size=1, max_size=3).map(",".join)


CRITERION = st.one_of(
    st.tuples(st.sampled_from(["host", "originalhost"]), _pattern_list()),
    st.tuples(
        st.just("user"),
        st.lists(st.sampled_from([*USERS, "!bob", "a*"]), min_size=1, max_size=2).map(",".join),
    ),
    st.tuples(st.just("localuser"), st.sampled_from([local_account.local_user(), "nobody", "*"])),
)


def _match_line() -> st.SearchStrategy[str]:
    negated = st.tuples(st.booleans(), CRITERION).map(
        lambda item: f"{'!' if item[0] else ''}{item[1][0]} {item[1][1]}"
    )
    return st.one_of(
        st.just("Match all"),
        st.lists(negated, min_size=1, max_size=3).map(lambda c: "Match " + " ".join(c)),
    )


def _header() -> st.SearchStrategy[str]:
    host = st.lists(st.sampled_from(HOST_PATTERNS), min_size=1, max_size=3).map(
        lambda p: "Host " + " ".join(p)
    )
    return st.one_of(host, _match_line())


def _block(include: bool) -> st.SearchStrategy[list[str]]:
    body = st.lists(OPTIONS, max_size=4)
    if include:
        body = st.tuples(body, st.booleans()).map(
            lambda item: item[0] + (["  Include included.conf"] if item[1] else [])
        )
    return st.tuples(_header(), body).map(lambda item: [item[0], *item[1]])


def _config(include: bool) -> st.SearchStrategy[str]:
    top = st.lists(OPTIONS, max_size=2)
    blocks = st.lists(_block(include), max_size=5)
    return st.tuples(top, blocks).map(
        lambda item: "\n".join(item[0] + [line for block in item[1] for line in block]) + "\n"
    )


PRESET = st.lists(
    st.one_of(
        st.tuples(st.just("User"), st.sampled_from(USERS)),
        st.tuples(st.just("Port"), st.sampled_from(["2022", "22"])),
        st.tuples(st.just("ProxyJump"), st.sampled_from(["hop", "u@hop:2", "a,b"])),
        st.tuples(st.just("ProxyCommand"), st.just("none")),
        st.tuples(st.just("IdentityFile"), st.just("~/.ssh/id_profile")),
    ),
    max_size=3,
    unique_by=lambda item: item[0],
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    main=_config(include=True),
    included=_config(include=False),
    host=st.sampled_from(HOSTS),
    preset=PRESET,
)
def test_builtin_reader_agrees_with_ssh_G(
    isolated_home: Path, main: str, included: str, host: str, preset: list[tuple[str, str]]
) -> None:
    ssh_dir = isolated_home / ".ssh"
    config = ssh_dir / "generated_config"
    config.write_text(main)
    (ssh_dir / "included.conf").write_text(included)
    assert SSH is not None
    oracle = openssh.resolve(SSH, host, preset, config)
    ours, _ = builtin_settings(host, [(k, v) for k, v in preset], config)
    differences = {
        key: (ours.get(key), oracle.get(key))
        for key in USED_KEYS
        if ours.get(key) != oracle.get(key)
    }
    assert not differences, (
        f"host {host!r}, preset {preset}\n--- config\n{main}--- included.conf\n{included}"
        f"--- (built-in, ssh -G)\n{json.dumps(differences, indent=1)}"
    )


# --- `profiles show --json` against ssh -G, through the command line -------------------------

CONFIGS = {
    "match-route": (
        "Host bastion\n  HostName 10.9.9.9\n  User jump\n"
        "Match originalhost gpu-box\n  HostName gpu.internal\n  User alice\n  Port 2222\n"
        "  ProxyJump bastion\n  IdentityFile ~/.ssh/id_%r_%h\n",
        "gpu-box",
    ),
    "proxycommand": (
        "Host gpu-box\n  HostName gpu.internal\n  ProxyCommand ssh -W %h:%p bastion\n"
        "  UserKnownHostsFile ~/.ssh/kh_%h\n",
        "gpu-box",
    ),
    "include": (
        "Include conf.d/*\nHost *\n  User fallback\n",
        "node7",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_profiles_show_json_reports_what_ssh_G_says(env: Env, case: str) -> None:
    text, alias = CONFIGS[case]
    ssh_dir = env.home / ".ssh"
    (ssh_dir / "config").write_text(text)
    (ssh_dir / "conf.d").mkdir()
    (ssh_dir / "conf.d" / "nodes.conf").write_text(
        "Host node*\n  HostName %h.cluster\n  Port 2200\n"
    )
    env.write_profile("case", host=alias)
    shown = json.loads(env.run("profiles", "show", "case", "--json", check=True).stdout)["profile"][
        "ssh"
    ]
    assert SSH is not None
    printed = subprocess.run(
        [SSH, "-G", alias], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    oracle: dict[str, list[str]] = {}
    for line in printed:
        key, _, value = line.partition(" ")
        oracle.setdefault(key, []).append(value)
    assert shown["hostname"] == oracle["hostname"][0]
    assert shown["user"] == oracle["user"][0]
    assert str(shown["port"]) == oracle["port"][0]
    assert shown["proxy_jump"] == (oracle.get("proxyjump") or [None])[0]
    user_files = oracle["userknownhostsfile"][0].split()
    assert shown["known_hosts_files"][: len(user_files)] == user_files
    expected_ids = [v.replace("~", str(env.home), 1) for v in oracle["identityfile"]]
    if case == "match-route":
        expected_ids = [str(env.home / ".ssh" / "id_alice_gpu.internal")]
    assert shown["identity_files"] == expected_ids
    if "proxycommand" in oracle:
        assert shown["proxy_command"] == oracle["proxycommand"][0].replace(
            "%h", "gpu.internal"
        ).replace("%p", "22")
    assert shown["resolver"] == "ssh -G"
    assert [hop["hostname"] for hop in shown["hops"]] == (
        ["10.9.9.9"] if case == "match-route" else []
    )
    assert sys.executable  # the CLI ran with this interpreter
