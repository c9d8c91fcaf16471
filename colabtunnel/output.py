"""Everything a person or a script reads: progress lines, results, JSON envelopes, errors."""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol

JSON_SCHEMA_VERSION = 1

BROWSER_STEPS = (
    "In Colab: Connect ▸ Connect to a local runtime, paste the URL above, press Connect.",
    "Chrome 142+ asks whether colab.research.google.com may reach apps on this device "
    "(local network access): click Allow. Clicked Block once? Open colab.research.google.com's "
    "padlock ▸ Site settings and allow it again (newer Chrome: chrome://settings/content/loopbackNetwork, "
    '"Apps on device"; earlier builds: "Local network access").',
)


class Progress:
    """One line per step on stderr, so stdout stays clean for the URL or JSON."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def step(self, message: str) -> None:
        if not self.quiet:
            print(f"· {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"! {message}", file=sys.stderr, flush=True)


def envelope(command: str, **body: Any) -> str:
    return json.dumps({"schema_version": JSON_SCHEMA_VERSION, "command": command, **body}, indent=2)


def emit_json(command: str, **body: Any) -> None:
    print(envelope(command, **body))


def error(message: str, hint: str | None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def where(host_label: str) -> str:
    """A tunnel's host as a sentence names it: "alice@gpu.example.org:22", or "this machine"."""
    return "this machine" if host_label == "local" else host_label


def duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Prompter(Protocol):
    """Whoever can answer a question (a password, a yes/no): the terminal, or nobody."""

    def ask(self, prompt: str, echo: bool) -> str | None:
        """The answer, or None when nobody can answer (no terminal)."""
        ...


class TerminalPrompter:
    """Asks on the terminal; says None (nobody to ask) when stdin is not one."""

    def ask(self, prompt: str, echo: bool) -> str | None:
        if not sys.stdin.isatty():
            return None
        import getpass

        try:
            return input(prompt) if echo else getpass.getpass(prompt)
        except EOFError:
            return None


def confirm(prompter: Prompter | None, question: str) -> bool:
    answer = prompter.ask(f"{question} [y/N] ", True) if prompter else None
    return (answer or "").strip().lower() in ("y", "yes")
