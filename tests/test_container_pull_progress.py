"""The pull's progress line counts layers from either engine's output without a terminal:
Docker's "ID: state" lines and Podman's "Copying blob ID" lines."""

from __future__ import annotations

from colabtunnel.launchers.container import PullProgress

DOCKER = """\
latest: Pulling from team/image
1a2b3c4d5e6f: Pulling fs layer
2b3c4d5e6f70: Pulling fs layer
3c4d5e6f7081: Already exists
2b3c4d5e6f70: Waiting
1a2b3c4d5e6f: Downloading  1.2MB/40MB
1a2b3c4d5e6f: Pull complete
"""

PODMAN = """\
Trying to pull 127.0.0.1:5000/ct-pulled:test...
Getting image source signatures
Copying blob sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
Copying blob 60303ae22b99 skipped: already exists
Copying blob fd61a03af4f7 done
Copying blob a4e624d686e0
"""


def _fed(text: str) -> tuple[PullProgress, list[str]]:
    shown: list[str] = []
    progress = PullProgress("img", shown.append)
    for line in text.splitlines():
        progress.line(line)
    return progress, shown


def test_dockers_layers_are_counted_once_each() -> None:
    progress, _ = _fed(DOCKER)
    assert progress.summary("x").startswith("pulling img: 2 of 3 layers in")


def test_podmans_layers_are_counted_and_copying_the_config_means_all_are_in() -> None:
    progress, _ = _fed(PODMAN)
    assert progress.summary("x").startswith("pulling img: 2 of 4 layers in")
    progress.line("Copying config sha256:0123456789abcdef")
    assert progress.summary("x").startswith("pulling img: 4 of 4 layers in")


def test_before_any_layer_it_says_starting() -> None:
    _, shown = _fed("Trying to pull 127.0.0.1:5000/ct-pulled:test...\n")
    assert shown == ["pulling img: starting (Trying to pull 127.0.0.1:5000/ct-pulled:test...)"]
