"""`colabtunnel profiles add/remove/list/show/path` on a real file with comments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from colabtunnel.profiles import load_profiles

EXAMPLE = Path(__file__).resolve().parent.parent / "profiles.example.toml"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "colabtunnel", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_add_keeps_comments_validates_and_remove(tmp_path: Path) -> None:
    path = Path(_cli("profiles", "path").stdout.strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EXAMPLE.read_text())
    comments = [line for line in EXAMPLE.read_text().splitlines() if line.lstrip().startswith("#")]
    done = _cli(
        "profiles",
        "add",
        "box2",
        "--host",
        "gpu2.example.org",
        "--port",
        "2222",
        "--activate",
        "conda activate ml",
    )
    assert done.returncode == 0, done.stderr
    text = path.read_text()
    assert all(c in text for c in comments)  # nothing the user wrote is lost
    box = load_profiles(path)["box2"]
    assert (box.host, box.port, box.activate) == ("gpu2.example.org", 2222, "conda activate ml")
    before = path.read_text()
    bad = _cli("profiles", "add", "bad", "--host", "h", "--port", "99999")
    assert bad.returncode == 2 and "port" in bad.stderr and "Traceback" not in bad.stderr
    assert path.read_text() == before  # a bad value never lands
    again = _cli("profiles", "add", "box2", "--host", "other")
    assert again.returncode == 2 and "--replace" in again.stderr
    listed = json.loads(_cli("profiles", "list", "--json").stdout)
    assert "box2" in [p["name"] for p in listed["profiles"]]
    assert "gpu2.example.org" in _cli("profiles", "show", "box2").stdout
    assert _cli("profiles", "remove", "box2").returncode == 0
    assert "box2" not in load_profiles(path)
    assert all(c in path.read_text() for c in comments)
    assert _cli("profiles", "remove", "box2").returncode == 2


def test_add_to_a_missing_file_creates_it(tmp_path: Path) -> None:
    done = _cli("profiles", "add", "first", "--host", "h.example.org")
    assert done.returncode == 0, done.stderr
    path = Path(_cli("profiles", "path").stdout.strip())
    assert load_profiles(path)["first"].host == "h.example.org"
