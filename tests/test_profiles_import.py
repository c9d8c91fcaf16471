"""Profiles from what the user already has: the concrete Host aliases of ~/.ssh/config, imported
as minimal profiles; `profiles add` without --host off a terminal names the flags to pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from colabtunnel import paths
from colabtunnel.commands.profiles import parse_choice
from colabtunnel.profiles import load_profiles
from colabtunnel.ssh import ssh_aliases
from tests.test_profiles_command import _cli

SSH_CONFIG = """\
# my hosts
Host gpu-box lab-ws
  HostName gpu.example.org
Host *.example.org !secret.example.org
  User alice
Host=cluster   # after an equals sign
  ProxyJump bastion
Match host lab-ws exec "true"
  User bob
Include config.d/*
Include ~/.ssh/more_config
Host "gpu-box"
"""
EXISTING = '# hand-written: keep me\n[profiles.lab-ws]  # mine\nhost = "lab.example.org"\n'


@pytest.fixture
def ssh_config(isolated_home: Path) -> Path:
    ssh_dir = isolated_home / ".ssh"
    (ssh_dir / "config.d").mkdir()
    (ssh_dir / "config.d" / "10-work").write_text("Host work-gpu\n  HostName w\n")
    (ssh_dir / "config.d" / "20-nested").write_text("Include nested\nHost a?c\n")
    (ssh_dir / "nested").write_text("Host deep-one\n")
    (ssh_dir / "more_config").write_text("host bastion\n")
    config = ssh_dir / "config"
    config.write_text(SSH_CONFIG)
    return config


def test_concrete_aliases_in_file_order_with_includes(ssh_config: Path) -> None:
    assert ssh_aliases.concrete_aliases() == [
        "gpu-box",
        "lab-ws",
        "cluster",
        "work-gpu",
        "deep-one",
        "bastion",
    ]


def test_a_missing_config_has_no_aliases(isolated_home: Path) -> None:
    assert ssh_aliases.concrete_aliases() == []
    done = _cli("profiles", "import", "--all")
    assert done.returncode == 2 and "no Host aliases to import" in done.stderr
    assert "hint: " in done.stderr and "Traceback" not in done.stderr


def test_import_all_keeps_comments_and_skips_existing_names(ssh_config: Path) -> None:
    profiles = paths.profiles_file()
    profiles.parent.mkdir(parents=True)
    profiles.write_text(EXISTING)
    done = _cli("profiles", "import", "--all")
    assert done.returncode == 0, done.stderr
    assert "skipped lab-ws: a profile of that name exists" in done.stderr
    text = profiles.read_text()
    assert "# hand-written: keep me" in text and "# mine" in text
    loaded = load_profiles(profiles)
    assert loaded["lab-ws"].host == "lab.example.org"  # never overwritten
    for alias in ("gpu-box", "cluster", "work-gpu", "deep-one", "bastion"):
        assert loaded[alias].host == alias
        assert loaded[alias].user is None  # minimal: ssh_config says the rest
    again = _cli("profiles", "import", "--all")
    assert again.returncode == 0 and "no profile was added" in again.stderr


def test_import_named_aliases_only(ssh_config: Path) -> None:
    done = _cli("profiles", "import", "cluster", "gpu-box")
    assert done.returncode == 0, done.stderr
    assert set(load_profiles(paths.profiles_file())) == {"cluster", "gpu-box", "local"}


def test_import_an_unknown_alias_names_the_known_ones(ssh_config: Path) -> None:
    done = _cli("profiles", "import", "gpu-bx")
    assert done.returncode == 2
    assert "error: not a Host alias in" in done.stderr and "gpu-bx" in done.stderr
    assert "gpu-box, lab-ws, cluster" in done.stderr
    assert not paths.profiles_file().exists()


def test_import_without_names_off_a_terminal_says_how(ssh_config: Path) -> None:
    done = _cli("profiles", "import")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: `profiles import` with no alias named asks which ones on a terminal, and this is none",
        "hint: name them: colabtunnel profiles import ALIAS..., or pass --all",
    ]


def test_add_without_host_off_a_terminal_names_the_flags(ssh_config: Path) -> None:
    done = _cli("profiles", "add", "box")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"]
    assert "colabtunnel profiles add NAME --host HOST [--activate LINE]" in lines[1]
    assert not paths.profiles_file().exists()


def test_parse_choice() -> None:
    aliases = ["a", "b", "c"]
    assert parse_choice("1 3", aliases) == ["a", "c"]
    assert parse_choice("3,1, 3", aliases) == ["c", "a"]
    assert parse_choice("b 1", aliases) == ["b", "a"]
    assert parse_choice("ALL", aliases) == aliases
    assert parse_choice("", aliases) == []
    with pytest.raises(ValueError, match="neither a number from 1 to 3 nor an alias"):
        parse_choice("4", aliases)
