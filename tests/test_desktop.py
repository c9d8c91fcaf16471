"""`--copy`, `--open` and `--quiet` on `url` and `up`: the URL reaches the clipboard tool exactly,
a missing tool is a note (exit 0), Colab opens through the user's browser setting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from colabtunnel.keeper import state
from tests import required_areas
from tests.conftest import Env

CAT = shutil.which("cat")  # the fakes may run with only their own directory on PATH
URL = "http://localhost:8890/?token=" + "T0KEN" + "x" * 40


@pytest.fixture
def live_record() -> Iterator[state.Record]:
    """A state record whose keeper (a sleeping process) is alive: `url` hands out its URL."""
    keeper = subprocess.Popen(["sleep", "120"])
    record = state.Record(
        profile="gpu",
        keeper_pid=keeper.pid,
        keeper_started=psutil.Process(keeper.pid).create_time(),
        host="alice@gpu.example.org:22",
        local_port=8890,
        remote_port=40123,
        token="T0KEN" + "x" * 40,
        flavour="notebook7",
    )
    state.write(record)
    yield record
    keeper.kill()
    keeper.wait()


def _fake_tools(bin_dir: Path, working: str = "xclip") -> Path:
    """Every clipboard tool colabtunnel knows, all failing as over SSH without a display, except
    `working`, which keeps its stdin in `clipboard` and its arguments in `args`."""
    bin_dir.mkdir(exist_ok=True)
    for tool in ("pbcopy", "wl-copy", "xclip", "xsel", "clip.exe"):
        fake = bin_dir / tool
        if tool == working:
            fake.write_text(
                f'#!/bin/sh\necho "$@" > "{bin_dir}/args"\n{CAT} > "{bin_dir}/clipboard"\n'
            )
        else:
            fake.write_text('#!/bin/sh\necho "Error: Can\'t open display" >&2\nexit 1\n')
        fake.chmod(0o755)
    return bin_dir


def _cli(*args: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run(
        [sys.executable, "-m", "colabtunnel", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**clean, "PATH": path, **env},
    )


def test_copy_gives_the_clipboard_tool_exactly_the_url(
    live_record: state.Record, tmp_path: Path
) -> None:
    bin_dir = _fake_tools(tmp_path / "bin")
    done = _cli("url", "gpu", "--copy", path=str(bin_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout == URL + "\n"
    assert (bin_dir / "clipboard").read_bytes() == URL.encode()  # no newline, nothing else
    assert (bin_dir / "args").read_text().split() == ["-selection", "clipboard"]
    assert "copied the URL to the clipboard (xclip)" in done.stderr


def test_copy_without_any_clipboard_tool_is_a_note_and_exit_0(
    live_record: state.Record, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for extra in ((), ("--quiet",)):  # a failure is said even with --quiet
        done = _cli("url", "gpu", "--copy", *extra, path=str(empty))
        assert done.returncode == 0, done.stderr
        assert done.stdout == URL + "\n"
        assert "no clipboard tool found (looked for pbcopy, wl-copy, xclip, xsel, clip.exe)" in (
            done.stderr
        )


def test_copy_says_why_when_every_tool_fails(live_record: state.Record, tmp_path: Path) -> None:
    bin_dir = _fake_tools(tmp_path / "bin", working="none")
    done = _cli("url", "gpu", "--copy", path=str(bin_dir))
    assert done.returncode == 0
    assert "could not copy the URL: pbcopy failed (Error: Can't open display)" in done.stderr


def test_open_uses_the_users_browser(live_record: state.Record, tmp_path: Path) -> None:
    browser = tmp_path / "my-browser"
    browser.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/opened"\n')
    browser.chmod(0o755)
    done = _cli("url", "gpu", "--open", path=os.environ["PATH"], BROWSER=str(browser))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "opened").read_text().strip() == "https://colab.research.google.com/"
    assert done.stdout == URL + "\n"


def test_open_without_a_display_says_where_to_go(live_record: state.Record) -> None:
    if not sys.platform.startswith("linux"):
        required_areas.skip("platform", "the display check is for Linux")
    env = {k: v for k, v in os.environ.items() if k != "BROWSER"}
    done = subprocess.run(
        [sys.executable, "-m", "colabtunnel", "url", "gpu", "--open"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")},
    )
    assert done.returncode == 0
    assert "open https://colab.research.google.com/ on your desktop" in done.stderr


def test_up_quiet_copy_prints_only_the_url(local_env: Env, tmp_path: Path) -> None:
    bin_dir = _fake_tools(tmp_path / "bin")
    done = _cli("up", "local", "--quiet", "--copy", path=f"{bin_dir}:{os.environ['PATH']}")
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert done.stdout == url + "\n" and url.startswith("http://localhost:")
    assert done.stderr == ""
    assert (bin_dir / "clipboard").read_text() == url
