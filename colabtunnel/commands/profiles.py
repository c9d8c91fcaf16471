"""`colabtunnel profiles list / show / path / add / remove / import`: the saved profiles without an
editor. Writes keep the file's comments and layout, and are validated before they land.

`add` without --host asks on the terminal (offering the ~/.ssh/config aliases); `import` makes one
minimal profile (`host = ALIAS`) per alias chosen. The questions are asked through callables, so
this module never touches a terminal itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from colabtunnel import paths
from colabtunnel.errors import ConfigError
from colabtunnel.profiles import LOCAL, Profile, get_profile, load_profiles, valid_name
from colabtunnel.ssh import ssh_aliases

Ask = Callable[[str], str | None]  # a question → the answer, or None when nobody can answer


def profiles_path() -> Path:
    return paths.profiles_file()


def list_profiles() -> list[Profile]:
    return list(load_profiles().values())


def show(name: str) -> Profile:
    return get_profile(name)


@dataclass(frozen=True)
class Route:
    """How `ssh` (and so colabtunnel) reaches a profile's host, or why that cannot be told."""

    ssh: dict[str, Any] | None
    error: str | None = None
    hint: str | None = None


def route(profile: Profile) -> Route | None:
    """The resolved SSH route of `profile` (None for one that runs on this machine)."""
    from colabtunnel.ssh import sshtarget

    if profile.is_local:
        return None
    try:
        return Route(sshtarget.as_json(sshtarget.resolve(profile)))
    except ConfigError as exc:
        return Route(None, exc.message, exc.hint)


def as_dict(profile: Profile) -> dict[str, Any]:
    data = asdict(profile)
    data["env"] = dict(profile.env)
    data["jupyter_args"] = list(profile.jupyter_args)
    data["source"] = str(profile.source) if profile.source else None
    return data


def add(name: str, values: dict[str, Any], *, replace: bool = False) -> Path:
    """Add (or with `replace`, overwrite) a profile, keeping the file's comments and layout.

    The result is validated by loading it before it replaces the file, so a bad value never lands.
    """
    return _add_tables({name: values}, replace=replace)


def _add_tables(entries: dict[str, dict[str, Any]], *, replace: bool) -> Path:
    import tomlkit

    paths.check_profiles_home()
    path = paths.profiles_file()
    document = _document(path)
    if "profiles" not in document:
        document["profiles"] = tomlkit.table(is_super_table=True)
    table = document["profiles"]
    for name, values in entries.items():
        if name in table and not replace:
            raise ConfigError(
                f"profile {name!r} already exists in {path}",
                hint=f"pass --replace, or `colabtunnel profiles remove {name}` first",
            )
        entry = tomlkit.table()
        for key, value in values.items():
            if value is not None:
                entry[key] = value
        table[name] = entry
    _write_validated(path, tomlkit.dumps(document))
    return path


def _document(path: Path) -> Any:
    import tomlkit

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return tomlkit.parse(text) if text else tomlkit.document()


# -- profiles import -------------------------------------------------------------------------------


@dataclass
class Imported:
    path: Path | None  # None: nothing was written
    added: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (alias, why)


def ssh_aliases_or_fail() -> list[str]:
    aliases = ssh_aliases.concrete_aliases()
    if not aliases:
        raise ConfigError(
            f"no Host aliases to import in {ssh_aliases.config_path()}",
            hint="add a `Host NAME` block there (with HostName, User ...), "
            "or run `colabtunnel profiles add NAME --host HOST`",
        )
    return aliases


def chosen_aliases(requested: list[str], aliases: list[str]) -> list[str]:
    """The aliases named on the command line, each checked against ~/.ssh/config."""
    unknown = [name for name in requested if name not in aliases]
    if unknown:
        raise ConfigError(
            f"not a Host alias in {ssh_aliases.config_path()}: {', '.join(unknown)}",
            hint=f"aliases there: {', '.join(aliases)} (or pass --all)",
        )
    return list(dict.fromkeys(requested))


def parse_choice(answer: str, aliases: list[str]) -> list[str]:
    """A person's pick: numbers from the list and/or alias names, separated by spaces or commas,
    or `all`. ValueError says what was not understood."""
    words = answer.replace(",", " ").split()
    if [w.lower() for w in words] == ["all"]:
        return list(aliases)
    picked = []
    for word in words:
        if word.isdigit() and 1 <= int(word) <= len(aliases):
            picked.append(aliases[int(word) - 1])
        elif word in aliases:
            picked.append(word)
        else:
            raise ValueError(f"{word!r} is neither a number from 1 to {len(aliases)} nor an alias")
    return list(dict.fromkeys(picked))


def pick_aliases(
    aliases: list[str], ask: Ask, say: Callable[[str], None], on_terminal: bool
) -> list[str]:
    """Ask which aliases to import, until the answer is understood."""
    if not on_terminal:
        raise _no_terminal_to_pick()
    _menu(aliases, say)
    while True:
        answer = ask("import which? (numbers or names, separated by spaces; all): ")
        if answer is None:
            raise _no_terminal_to_pick()
        try:
            return parse_choice(answer, aliases)
        except ValueError as exc:
            say(f"  {exc}")


def _no_terminal_to_pick() -> ConfigError:
    return ConfigError(
        "`profiles import` with no alias named asks which ones on a terminal, and this is none",
        hint="name them: colabtunnel profiles import ALIAS..., or pass --all",
    )


def _menu(aliases: list[str], say: Callable[[str], None]) -> None:
    say(f"Host aliases in {ssh_aliases.config_path()}:")
    for number, alias in enumerate(aliases, 1):
        say(f"  {number}) {alias}")


def import_aliases(chosen: list[str]) -> Imported:
    """One minimal profile (`host = ALIAS`) per alias; one that cannot be a new profile is skipped
    with the reason, never overwritten."""
    paths.check_profiles_home()
    existing = _document(paths.profiles_file()).get("profiles", {})
    result = Imported(None)
    entries: dict[str, dict[str, Any]] = {}
    for alias in chosen:
        if alias in existing:
            result.skipped.append((alias, "a profile of that name exists"))
        elif alias == LOCAL.name:
            result.skipped.append((alias, "`local` is the built-in profile for this machine"))
        elif not valid_name(alias):
            result.skipped.append((alias, "not usable as a profile name"))
        else:
            entries[alias] = {"host": alias}
    if entries:
        result.path = _add_tables(entries, replace=False)
        result.added = list(entries)
    return result


# -- profiles add NAME, asked on a terminal --------------------------------------------------------


def ask_profile(ask: Ask, say: Callable[[str], None], on_terminal: bool) -> dict[str, Any]:
    """The values `profiles add` needs, asked: the host (offering ~/.ssh/config's aliases), then
    the activation line. Off a terminal, or nobody answering, is a ConfigError naming the flags."""
    if not on_terminal:
        raise needs_flags()
    aliases = ssh_aliases.concrete_aliases()
    if aliases:
        _menu(aliases, say)
    question = (
        "host (a number above, an alias, a host name or IP): " if aliases else "host name or IP: "
    )
    host = ""
    while not host:
        answer = _answer(ask, question)
        host = answer
        if answer.isdigit() and 1 <= int(answer) <= len(aliases):
            host = aliases[int(answer) - 1]
    activate = _answer(
        ask,
        "activate: the shell line that puts jupyter on PATH on the host "
        "(e.g. source ~/venvs/ml/bin/activate; empty for none): ",
    )
    return {"host": host, "activate": activate or None}


def _answer(ask: Ask, question: str) -> str:
    answer = ask(question)
    if answer is None:
        raise needs_flags()
    return answer.strip()


def needs_flags() -> ConfigError:
    return ConfigError(
        "`profiles add NAME` without --host asks its questions on a terminal, and this is none",
        hint="pass the values as flags: colabtunnel profiles add NAME --host HOST "
        "[--activate LINE] [--user USER] [--workdir DIR] (see --help)",
    )


def remove(name: str) -> Path:
    import tomlkit

    path = paths.profiles_file()
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else None
    if document is None or name not in document.get("profiles", {}):
        raise ConfigError(
            f"no profile {name!r} in {path}", hint="`colabtunnel profiles list` shows them"
        )
    del document["profiles"][name]
    _write_validated(path, tomlkit.dumps(document))
    return path


def _write_validated(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f".{path.name}.new")
    candidate.write_text(text, encoding="utf-8")
    try:
        load_profiles(candidate)
    except ConfigError as exc:
        candidate.unlink()
        raise ConfigError(exc.message.replace(str(candidate), str(path)), exc.hint) from None
    os.replace(candidate, path)
