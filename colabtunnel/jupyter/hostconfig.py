"""Jupyter config files on the host: which settings colabtunnel overrides (and says so), which it
refuses.

The host's scan (remote/inspect.py) reports every assignment of a watched setting in the
config files of every directory the host's own `jupyter --paths` lists. This module decides, for
the flavour that will run, which of them Jupyter honours, which ones colabtunnel's flags override
(a note names file and line), and which one it refuses to start with (a token set to empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from colabtunnel.errors import ColabtunnelError
from colabtunnel.jupyter.flavours import OVERRIDES, Flavour, Override, shown_flag

# What the host's scan looks for: every class any flavour takes these settings from.
WATCHED_SECTIONS = ("ServerApp", "NotebookApp", "IdentityProvider")
WATCHED_TRAITS = ("token", *(o.trait for o in OVERRIDES))


@dataclass(frozen=True)
class Setting:
    """One assignment in a host config file, e.g. `c.ServerApp.base_url = '/jupyter/'`."""

    file: str
    line: int | None  # None when the line could not be told (a JSON file written oddly)
    section: str
    trait: str
    text: str  # the value as written in the file
    literal: bool  # the value is a constant the scan could read
    value: Any = None  # that constant

    @property
    def place(self) -> str:
        return self.file + (f", line {self.line}" if self.line else "")

    @property
    def shown(self) -> str:
        value = repr(self.value) if self.literal else self.text
        return f"{self.section}.{self.trait} = {value}"


def parse(found: list[dict[str, Any]]) -> list[Setting]:
    return [Setting(**item) for item in found]


def honoured(settings: list[Setting], flavour: Flavour | None) -> list[Setting]:
    """The settings this flavour reads (Notebook 6 ignores ServerApp, bare jupyter_server ignores
    NotebookApp); all of them when the flavour is not known."""
    if flavour is None:
        return list(settings)
    return [s for s in settings if s.section in flavour.config_sections]


def _override(setting: Setting) -> Override | None:
    return next((o for o in OVERRIDES if o.trait == setting.trait), None)


def _flag_prefix(setting: Setting, flavour: Flavour | None) -> str:
    if flavour is None or setting.section == flavour.shim:
        return setting.section
    return flavour.prefix


def overridden(settings: list[Setting], flavour: Flavour | None) -> list[Setting]:
    """Settings colabtunnel's flags override: honoured, and not already the value Colab needs."""
    found = []
    for setting in honoured(settings, flavour):
        override = _override(setting)
        if override is None or (setting.literal and str(setting.value) == override.value):
            continue
        found.append(setting)
    return found


def shimmed(settings: list[Setting], flavour: Flavour) -> set[str]:
    """The overridden traits set under the flavour's shim class (they need a flag of that class)."""
    return {s.trait for s in overridden(settings, flavour) if s.section == flavour.shim}


def override_note(setting: Setting, flavour: Flavour | None) -> str:
    """What `up` prints and `doctor` shows for one overridden setting: file, line, what, why."""
    override = _override(setting)
    assert override is not None
    flag = shown_flag(_flag_prefix(setting, flavour), setting.trait)
    return f"{setting.place}: {setting.shown} is overridden by {flag}: {override.why}"


def token_disabled(settings: list[Setting], flavour: Flavour | None) -> list[Setting]:
    # The scan reports token settings only when they are the empty string: no token value
    # ever leaves the host.
    return [s for s in honoured(settings, flavour) if s.trait == "token"]


def token_error(
    settings: list[Setting], flavour: Flavour | None, where: str
) -> ColabtunnelError | None:
    """A host config that empties the token would beat JUPYTER_TOKEN: refuse, naming file and line.

    Not overridden like the others on purpose: `--ServerApp.token=` style flags would have to carry
    the token on the command line, which other users of the host can read in `ps`.
    """
    found = token_disabled(settings, flavour)
    if not found:
        return None
    places = "; ".join(f"{s.place}: {s.shown}" for s in found)
    return ColabtunnelError(
        f"a Jupyter config {where} disables authentication ({places}); "
        "started like that, anyone who reaches the port could run code as you",
        hint="delete that line on the host (it overrides the token colabtunnel sets), "
        "then run `up` again",
    )
