"""Handing the URL to the desktop: the clipboard (with whatever tool the platform has) and Colab's
page in the default browser.

Neither is ever an error: the URL is on screen anyway, so a missing tool is a note that says what
to install or do instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

COLAB_URL = "https://colab.research.google.com/"
COPY_TIMEOUT_S = 5.0

# Tried in this order; the first one present that succeeds wins. A tool that cannot reach a display
# (xclip over SSH without X forwarding) fails and the next one is tried.
CLIPBOARD_TOOLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pbcopy", ("pbcopy",)),  # macOS
    ("wl-copy", ("wl-copy",)),  # Wayland
    ("xclip", ("xclip", "-selection", "clipboard")),  # X11
    ("xsel", ("xsel", "-b", "-i")),  # X11
    ("clip.exe", ("clip.exe",)),  # Windows, and WSL
)


@dataclass(frozen=True)
class Copied:
    """Which tool took the text (None: none could), and why the others did not."""

    tool: str | None
    failures: tuple[str, ...] = field(default=())

    def message(self) -> str:
        if self.tool is not None:
            return f"copied the URL to the clipboard ({self.tool})"
        if self.failures:
            return "could not copy the URL: " + "; ".join(self.failures) + "; copy it by hand"
        names = ", ".join(name for name, _ in CLIPBOARD_TOOLS)
        return f"no clipboard tool found (looked for {names}); copy the URL by hand"


def copy(text: str) -> Copied:
    failures = []
    for name, argv in CLIPBOARD_TOOLS:
        path = shutil.which(argv[0])
        if path is None:
            continue
        problem = _feed(path, argv[1:], text)
        if problem is None:
            return Copied(name)
        failures.append(f"{name} {problem}")
    return Copied(None, tuple(failures))


def _feed(path: str, args: tuple[str, ...], text: str) -> str | None:
    """Run one clipboard tool with `text` on stdin; None when it took it, else what went wrong.

    Its output goes to a file, not a pipe: xclip and wl-copy stay behind to serve the clipboard,
    and a pipe they inherited would never reach end-of-file.
    """
    with tempfile.TemporaryFile() as said:
        try:
            done = subprocess.run(
                [path, *args],
                input=text.encode(),
                stdout=subprocess.DEVNULL,
                stderr=said,
                timeout=COPY_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return f"did not finish within {COPY_TIMEOUT_S:g} s"
        except OSError as exc:
            return f"could not run ({exc.strerror or exc})"
        if done.returncode == 0:
            return None
        said.seek(0)
        lines = said.read(4096).decode(errors="replace").strip().splitlines()
        return f"failed ({lines[0] if lines else f'exit {done.returncode}'})"


def open_colab() -> str:
    """Open Colab's page in the default browser; what happened, for people."""
    graphical = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not graphical and not os.environ.get("BROWSER"):
        # Python's webbrowser would fall back to a text browser in this terminal.
        return f"no graphical browser here (no DISPLAY): open {COLAB_URL} on your desktop"
    import webbrowser

    try:
        opened = webbrowser.open(COLAB_URL)
    except webbrowser.Error:
        opened = False
    if opened:
        return f"opened {COLAB_URL} in the browser"
    return f"could not open a browser: open {COLAB_URL} yourself"
