"""Shell completion of profile names, through typer's completion protocol and through real bash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from colabtunnel import paths

VENV_BIN = Path(sys.executable).parent
# The installed command: completion is keyed on the program's name (`python -m` is another one).
COLABTUNNEL = str(VENV_BIN / "colabtunnel")
PROFILES = (
    "# my machines\n"
    '[profiles.gpu-box]\nhost = "gpu.example.org"\n\n'
    '[profiles.lab-ws]\nhost = "lab-ws"\n\n'
    '[profiles."gpu.lab"]\nhost = "gpu.lab.example.org"\n'
)
# Every command that takes a profile name, as typed before the name.
PROFILE_COMMANDS = [
    ("up",),
    ("down",),
    ("down", "lab-ws"),  # the second of several
    ("url",),
    ("status",),
    ("trust",),
    ("doctor",),
    ("logs",),
    ("secret", "set"),
    ("secret", "delete"),
    ("profiles", "show"),
    ("profiles", "remove"),
]


def _write_profiles(text: str = PROFILES) -> None:
    path = paths.profiles_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def complete(*words: str, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """What bash asks when Tab is pressed after `colabtunnel WORDS` (the last word incomplete)."""
    env = {
        **os.environ,
        "_COLABTUNNEL_COMPLETE": "complete_bash",
        "COMP_WORDS": " ".join(("colabtunnel", *words)),
        "COMP_CWORD": str(len(words)),
    }
    return subprocess.run(
        [sys.executable, *python_flags, COLABTUNNEL],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("command", PROFILE_COMMANDS, ids=" ".join)
def test_every_command_that_takes_a_profile_completes_the_names(command: tuple[str, ...]) -> None:
    _write_profiles()
    done = complete(*command, "")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["gpu-box", "lab-ws", "gpu.lab", "local"]


def test_completion_filters_by_what_was_typed() -> None:
    _write_profiles()
    assert complete("up", "gpu").stdout.split() == ["gpu-box", "gpu.lab"]
    assert complete("down", "l").stdout.split() == ["lab-ws", "local"]


def test_a_broken_profiles_file_still_completes_quietly() -> None:
    _write_profiles('[profiles.gpu-box\nhost = "x"\n')
    done = complete("up", "")
    assert (done.returncode, done.stdout.split(), done.stderr) == (0, ["local"], "")


def test_completion_loads_no_heavy_module() -> None:
    _write_profiles()
    done = complete("up", "", python_flags=("-X", "importtime"))
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "tomllib" in names  # the profiles file was read
    assert not names & {"paramiko", "keyring", "requests", "websocket", "psutil", "tomlkit"}


def test_completion_in_real_bash() -> None:
    """The script a user installs (`_COLABTUNNEL_COMPLETE=source_bash colabtunnel`), sourced in
    bash and asked like bash does on Tab."""
    _write_profiles()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    script = subprocess.run(
        ["colabtunnel"],
        env={**env, "_COLABTUNNEL_COMPLETE": "source_bash"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "complete -o default -F _colabtunnel_completion colabtunnel" in script
    probe = (
        f"{script}\n"
        "COMP_WORDS=(colabtunnel down gpu); COMP_CWORD=2\n"
        "_colabtunnel_completion colabtunnel\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["gpu-box", "gpu.lab"], done.stderr


def test_completion_the_way_powershell_asks() -> None:
    """PowerShell cannot run here (no pwsh package in Debian): its script block's request, made
    as that block makes it (the whole command line, the word being completed), and the reply in
    the `name:::help` lines the block splits."""
    _write_profiles()
    script = subprocess.run(
        [COLABTUNNEL],
        env={**os.environ, "_COLABTUNNEL_COMPLETE": "source_powershell"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "Register-ArgumentCompleter -Native -CommandName colabtunnel" in script
    assert '$Env:_COLABTUNNEL_COMPLETE = "complete_powershell"' in script
    for line, word, names in [
        ("colabtunnel up gpu", "gpu", ["gpu-box", "gpu.lab"]),
        ("colabtunnel down lab-ws ", "", ["gpu-box", "lab-ws", "gpu.lab", "local"]),
    ]:
        done = subprocess.run(
            [COLABTUNNEL],
            env={
                **os.environ,
                "_COLABTUNNEL_COMPLETE": "complete_powershell",
                "_TYPER_COMPLETE_ARGS": line,
                "_TYPER_COMPLETE_WORD_TO_COMPLETE": word,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert [out.split(":::")[0] for out in done.stdout.splitlines()] == names, done.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "powershell"])
def test_the_documented_install_lines_produce_a_script(shell: str) -> None:
    """The lines docs/commands.md gives under "Shell completion" make a script for that shell."""
    done = subprocess.run(
        [COLABTUNNEL],
        env={**os.environ, "_COLABTUNNEL_COMPLETE": f"source_{shell}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"complete_{shell}" in done.stdout
    page = (Path(__file__).resolve().parent.parent / "docs" / "commands.md").read_text()
    if shell == "powershell":
        assert '$env:_COLABTUNNEL_COMPLETE = "source_powershell"; colabtunnel' in page
    else:
        assert f"_COLABTUNNEL_COMPLETE=source_{shell} colabtunnel" in page
